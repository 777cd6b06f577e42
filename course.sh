#!/usr/bin/env bash
# The workshop's two commands (see README.md):
#   ./course.sh all    set up, regenerate release/ and solutions/, autograde the reference
#                      solutions and the blank notebooks, print the score table
#   ./course.sh test   set up, run the test suite (extra arguments go to pytest)
#   ./course.sh grade LAB [options]   set up, grade every submission of LAB (dlmed grade)
#   DLMED_VENV=.venv-student ./course.sh student   a student's environment: nbgrader without its
#                      instructor extensions (Formgrader, Create Assignment, Course List)
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
    student)
        # A student's environment: nbgrader stays (the Assignment List, Validate, pytest release/labN),
        # its instructor parts are switched off in this environment only (--sys-prefix): the Create
        # Assignment sidebar, the Formgrader and the Course List. Use a separate DLMED_VENV for it,
        # not the instructor's.
        setup
        for plugin in formgrader create-assignment course-list; do
            "$VENV/bin/jupyter" labextension disable --level=sys_prefix "@jupyter/nbgrader:$plugin" >/dev/null 2>&1
            # Locked: JupyterLab 4.1+ would otherwise let a user switch a disabled plugin back on.
            "$VENV/bin/jupyter" labextension lock --level=sys_prefix "@jupyter/nbgrader:$plugin" >/dev/null 2>&1
        done
        for extension in formgrader course_list; do
            "$VENV/bin/jupyter" server extension disable --sys-prefix "nbgrader.server_extensions.$extension" >/dev/null 2>&1
        done
        echo "Student environment ready in $VENV (nbgrader's instructor extensions disabled):" \
             "start JupyterLab with $VENV/bin/jupyter lab"
        ;;
    *)
        echo "usage: ./course.sh all | ./course.sh test [pytest arguments] | ./course.sh grade LAB [options]" \
             "| DLMED_VENV=.venv-student ./course.sh student" >&2
        exit 2
        ;;
esac
