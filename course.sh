#!/usr/bin/env bash
# The workshop's two commands (see README.md):
#   ./course.sh all    set up, regenerate release/ and solutions/, autograde the reference
#                      solutions and the blank notebooks, print the score table
#   ./course.sh test   set up, run the test suite (extra arguments go to pytest)
#   ./course.sh grade LAB [options]   set up, grade every submission of LAB (dlmed grade)
#   ./course.sh exchange   a course-local nbgrader exchange in exchange/ for one machine without
#                      JupyterHub (instructor and students as users of the same computer)
#   DLMED_VENV=.venv-student ./course.sh student [--user] [--exchange DIR]   a student's environment:
#                      nbgrader without its instructor extensions (Formgrader, Create Assignment,
#                      Course List); --user configures only the calling user's Jupyter (the
#                      environment is shared); --exchange points the Assignment List at an exchange
# Set-up: a virtual environment in .venv (or $DLMED_VENV) with the dlmed package and all
# dependencies from pyproject.toml; it is (re)installed when pyproject.toml changes. On Linux,
# bubblewrap too where it can be installed (see ensure_bubblewrap).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV="${DLMED_VENV:-.venv}"

# `dlmed grade` run by an ordinary user isolates submissions with bubblewrap (README, "What is
# enforced where"): a system package, not a Python one. Installed when that is easy and
# harmless (root with apt-get); otherwise a hint. Failing to install it is not fatal.
ensure_bubblewrap() {
    if [ "$(uname -s)" != Linux ] || command -v bwrap >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing bubblewrap (the class grader's sandbox for graders without root) with apt-get ..."
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
                && ! { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; then
            echo "course.sh: apt-get could not install bubblewrap; dlmed grade run by an ordinary user" \
                 "will fall back to 'basic' isolation (no protection of your files and network)." >&2
        fi
    else
        echo "Note: bubblewrap (bwrap) is not installed: dlmed grade run without root cannot isolate" \
             "submissions. Install it: sudo apt install bubblewrap, or sudo dnf install bubblewrap." >&2
    fi
}

setup() {
    if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
        echo "course.sh: Python 3.10 or newer is needed; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
        echo "Install it, or point PYTHON at one: PYTHON=python3.11 ./course.sh $*" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "Creating the virtual environment $VENV ..."
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.dlmed-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "Installing the dlmed package and its dependencies into $VENV (a few minutes the first time) ..."
        # The instructor's environment: with the Postgres driver (a Postgres gradebook) and
        # Playwright (the real-browser tests; the browser itself is the system's chromium).
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[postgres,browser]"
        touch "$stamp"
    fi
    ensure_bubblewrap
    # nbgrader starts helper programs (alembic) by name; make the environment's own win.
    VENV="$(cd "$VENV" && pwd)"
    export PATH="$VENV/bin:$PATH"
}

command="${1:-}"
shift || true
case "$command" in
    all)
        setup
        "$VENV/bin/dlmed" all "$@"
        ;;
    test)
        setup
        "$VENV/bin/python" -m pytest "$@"
        ;;
    grade)
        setup
        "$VENV/bin/dlmed" grade "$@"
        ;;
    exchange)
        # A course-local exchange for one machine (README, "An exchange on one machine"): the folder
        # nbgrader's release, fetch, submit, collect and feedback go through. nbgrader_config.py uses
        # exchange/ when it exists, so instructors on a JupyterHub (no exchange/ here) keep the hub's.
        # Everyone writes into it (as /srv/nbgrader/exchange); the sticky bit keeps users from
        # removing each other's files. Student accounts must be able to enter the course folder.
        mkdir -p exchange
        chmod 1777 exchange
        echo "Course-local exchange ready: $(pwd)/exchange (course id dlmed-workshop)."
        echo "Students configure their Assignment List with:" \
             "./course.sh student --exchange $(pwd)/exchange  (add --user when they share this environment)"
        ;;
    student)
        # A student's environment: nbgrader stays (the Assignment List, Validate, pytest release/labN),
        # its instructor parts are switched off: the Create Assignment sidebar, the Formgrader and the
        # Course List. In this environment only (--sys-prefix), for a separate DLMED_VENV, not the
        # instructor's; or, with --user, in the calling user's Jupyter configuration
        # (JUPYTER_CONFIG_DIR, by default ~/.jupyter), for a student who runs the instructor's
        # environment on the same machine. --exchange DIR (or exchange/ here, if it exists) writes
        # the nbgrader configuration the Assignment List needs: the exchange and the course id.
        level=sys_prefix
        exchange_root=""
        [ -d exchange ] && exchange_root="$(pwd)/exchange"
        while [ $# -gt 0 ]; do
            case "$1" in
                --user) level=user ;;
                --exchange) exchange_root="$(cd "${2:?--exchange needs a folder}" && pwd)"; shift ;;
                *) echo "course.sh student: unknown option $1 (use --user, --exchange DIR)" >&2; exit 2 ;;
            esac
            shift
        done
        setup
        config_dir="$VENV/etc/jupyter"
        [ "$level" = user ] && config_dir="$("$VENV/bin/jupyter" --config-dir)"
        for plugin in formgrader create-assignment course-list; do
            "$VENV/bin/jupyter" labextension disable --level="$level" "@jupyter/nbgrader:$plugin" >/dev/null 2>&1
            # Locked: JupyterLab 4.1+ would otherwise let a user switch a disabled plugin back on.
            "$VENV/bin/jupyter" labextension lock --level="$level" "@jupyter/nbgrader:$plugin" >/dev/null 2>&1
        done
        if [ "$level" = user ]; then
            # `jupyter server extension disable --user` refuses extensions that the user's own
            # configuration does not list yet, so the setting is written directly; the user's
            # jupyter_server_config.json takes precedence over the environment's.
            "$VENV/bin/python" - "$config_dir/jupyter_server_config.json" <<'PYTHON'
import json
import sys
from pathlib import Path

path = Path(sys.argv[1])
config = json.loads(path.read_text()) if path.exists() else {}
extensions = config.setdefault("ServerApp", {}).setdefault("jpserver_extensions", {})
for name in ("formgrader", "course_list"):
    extensions[f"nbgrader.server_extensions.{name}"] = False
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=2) + "\n")
PYTHON
        else
            for extension in formgrader course_list; do
                "$VENV/bin/jupyter" server extension disable --sys-prefix "nbgrader.server_extensions.$extension" >/dev/null 2>&1
            done
        fi
        if [ -n "$exchange_root" ]; then
            mkdir -p "$config_dir"
            marker="# Written by course.sh student: the Assignment List's exchange and course (README, \"For students\")."
            if [ -f "$config_dir/nbgrader_config.py" ] && [ "$(head -n 1 "$config_dir/nbgrader_config.py")" != "$marker" ]; then
                echo "course.sh student: $config_dir/nbgrader_config.py exists and is not ours; add to it:" >&2
                echo "    c.CourseDirectory.course_id = \"dlmed-workshop\"; c.Exchange.root = \"$exchange_root\"" >&2
                exit 1
            fi
            cat > "$config_dir/nbgrader_config.py" <<CONFIG
$marker
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "dlmed-workshop"
c.Exchange.root = "$exchange_root"
CONFIG
            echo "Assignment List: exchange $exchange_root, course dlmed-workshop ($config_dir/nbgrader_config.py)."
        fi
        echo "Student environment ready in $VENV (nbgrader's instructor extensions disabled" \
             "$([ "$level" = user ] && echo "for $(id -un) in $config_dir" || echo "in the environment")):" \
             "start JupyterLab with $VENV/bin/jupyter lab"
        ;;
    *)
        echo "usage: ./course.sh all | ./course.sh test [pytest arguments] | ./course.sh grade LAB [options]" \
             "| ./course.sh exchange | DLMED_VENV=.venv-student ./course.sh student [--user] [--exchange DIR]" >&2
        exit 2
        ;;
esac
