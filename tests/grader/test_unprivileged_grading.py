"""``dlmed grade`` run by an ordinary user on Linux: the ``bubblewrap`` isolation against the hostile corpus.

Most instructors grade as themselves. This test creates a throw-away user, gives it a
scratch course in its home folder (as on a university server or a JupyterHub), and grades
an honest submission and the attacks of tests/submissions/hostile.py as that user: reading
``source/``, another student's submission and the gradebook, connecting to a server this
test starts on the grading machine's loopback, writing outside the submission, spying on the
grader's processes, and the runaway cases the limits must stop. Each must fail as with the
root mode (``namespaces``). It also checks the README's table of what is enforced where
against what is demonstrated here.

It needs root (to create the user) and a machine that allows unprivileged user namespaces
with ``bwrap`` installed; elsewhere it is skipped with the reason.
"""

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dlmed import course
from tests.conftest import PROJECT_ROOT
from tests.submissions import hostile, lab1
from tests.grader.test_class_grading import LAB, NAME, _CountingServer, _outputs, journal, points, submit

slow = pytest.mark.slow  # every test but the README check grades a class

USER = "dlmedtest"
ATTACKS = ("reads_secrets", "network", "writes_outside", "spies_on_grader", "exfiltrate_hidden")
RUNAWAY = ("infinite_loop", "memory_bomb", "memory_bomb_processes", "fork_bomb", "os_exit")


def _as_user(account) -> list:
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]


def _grant_traversal(paths) -> dict:
    """Let every user pass through the folders above ``paths`` (e.g. Python under /root); return the old modes.

    The interpreter of this test run may live in a folder only root may enter (pyenv in
    /root); the throw-away user must run it. Only the execute (traverse) bit is added: no
    folder becomes listable. The modes are put back by the fixture.
    """
    changed = {}
    for path in paths:
        for folder in [Path(path).resolve(), *Path(path).resolve().parents]:
            mode = folder.stat().st_mode
            if folder.is_dir() and not mode & stat.S_IXOTH and folder not in changed:
                changed[folder] = stat.S_IMODE(mode)
                os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)
    return changed


@pytest.fixture(scope="module")
def ordinary_user():
    """A throw-away ordinary user who can run this test's Python; removed afterwards."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("creating a throw-away user needs Linux and root")
    if not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("setpriv")):
        pytest.skip("needs useradd, userdel and setpriv (util-linux) to create and use a throw-away user")
    created = False
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True, capture_output=True)
        account, created = pwd.getpwnam(USER), True
    modes = _grant_traversal([sys.executable, sys.prefix, PROJECT_ROOT])
    try:
        probe = subprocess.run(_as_user(account) + [sys.executable, "-c", "import dlmed.grader.sandbox as s; print(s.choose_isolation())"],
                               capture_output=True, text=True, cwd="/", env=_user_env(account), timeout=120)
        if probe.returncode != 0:
            pytest.skip(f"the user {USER} cannot run this test's Python: {probe.stderr[-500:]}")
        if "'bubblewrap'" not in probe.stdout:
            pytest.skip(f"bubblewrap isolation is not available to an ordinary user here: {probe.stdout[-1500:]}")
        yield account
    finally:
        for folder, mode in modes.items():
            os.chmod(folder, mode)
        if created:
            subprocess.run(["userdel", "--remove", USER], capture_output=True)


def _user_env(account) -> dict:
    return {"HOME": account.pw_dir, "USER": account.pw_name, "LANG": "C.UTF-8",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])}


@pytest.fixture(scope="module")
def unprivileged_run(ordinary_user):
    """An honest submission and the attacks graded by ``dlmed grade`` run as the ordinary user, in its home."""
    base = Path(ordinary_user.pw_dir) / f"dlmed-test-{uuid.uuid4().hex[:8]}"
    workspace = course.make_workspace(PROJECT_ROOT, base / "course")
    course.run_nbgrader(["generate_assignment", LAB, "--force"], workspace)
    release = workspace / "release" / LAB / NAME
    submit(workspace, "alternative_correct", lab1.build_notebook(release, lab1.SUBMISSIONS["alternative_correct"]))
    server = _CountingServer()
    context = {"course_root": str(workspace), "port": server.port, "token": uuid.uuid4().hex}
    for case in ATTACKS + RUNAWAY:
        hostile.write_case(hostile.CASES[case], release, workspace / "submitted" / case / LAB, context)
    (base / "data").mkdir()
    subprocess.run(["chown", "-R", f"{ordinary_user.pw_uid}:{ordinary_user.pw_gid}", str(base)], check=True)
    env = dict(_user_env(ordinary_user), DLMED_DATA=str(base / "data"))
    try:
        completed = subprocess.run(_as_user(ordinary_user) + [sys.executable, "-m", "dlmed", "grade", LAB,
                                                              "--no-progress", "--no-feedback", "--jobs", "2", *hostile.LIMITS],
                                   cwd=workspace, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        server.close()
    yield workspace, completed, journal(workspace), context, server.connections
    shutil.rmtree(base, ignore_errors=True)
    for path in hostile.token_paths(context):
        Path(path).unlink(missing_ok=True)  # only if the test failed: leave the machine clean


@slow
def test_an_ordinary_user_grades_with_bubblewrap_and_is_told_so(unprivileged_run):
    """The run uses the bubblewrap isolation and says so, with the reason, on screen, in grade.log and in the report."""
    workspace, completed, results, _, _ = unprivileged_run
    assert completed.returncode == 0, f"dlmed grade as {USER}: exit {completed.returncode}\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    assert "Isolation 'bubblewrap': " in completed.stdout and "unprivileged user namespaces" in completed.stdout, completed.stdout[:2000]
    assert "isolation: bubblewrap: " in (workspace / "grading" / LAB / "grade.log").read_text()
    assert "Isolation 'bubblewrap': " in (workspace / "grading" / LAB / "report.html").read_text()
    expected = {"alternative_correct", *ATTACKS, *RUNAWAY}
    assert set(results) == expected, f"students with results: expected {sorted(expected)}, got {sorted(results)}"
    assert points(results["alternative_correct"]) == {c: float(p) for c, p in lab1.FULL_MARKS.items()}, results["alternative_correct"]


@slow
@pytest.mark.parametrize("case", ATTACKS + RUNAWAY)
def test_each_case_gets_its_outcome(unprivileged_run, case):
    """Every attack and runaway case scores as in the root mode (hostile.py), with the expected events."""
    _, _, results, _, _ = unprivileged_run
    spec, result = hostile.CASES[case], results[case]
    assert result["status"] == spec.status, f"{case}: status {result['status']!r}, reason {result['reason']!r}"
    assert points(result) == spec.expected_scores(), f"{case}: expected {spec.expected_scores()}, got {points(result)}"
    kinds = {event["kind"] for event in result["events"]}
    assert set(spec.events) <= kinds, f"{case}: expected events {spec.events}, got {result['events']}"
    if spec.reason:
        assert spec.reason in result["reason"], f"{case}: expected the reason to mention {spec.reason!r}, got {result['reason']!r}"


@slow
def test_course_files_other_students_and_gradebook_are_hidden(unprivileged_run):
    """reads_secrets finds none of source/ (hidden tests), submitted/ (other students) and the gradebook."""
    workspace, *_ = unprivileged_run
    reads = _outputs(workspace, "reads_secrets")
    assert "FOUND 0 course files" in reads and "READ" not in reads, f"reads_secrets output: {reads[-2000:]}"


@slow
def test_no_network_not_even_the_grading_machines_loopback(unprivileged_run):
    """Connections to a server on the grading machine's 127.0.0.1 and to the internet all fail."""
    workspace, _, _, _, connections = unprivileged_run
    network = _outputs(workspace, "network")
    assert "CONNECTED?" not in network and network.count("BLOCKED") == 3, f"network output: {network[-2000:]}"
    assert connections == 0, f"{connections} connections reached the server on the grading machine's loopback"


@slow
def test_nothing_written_outside_the_submission(unprivileged_run):
    """Writes into source/, the gradebook, the course's parent, home and /etc fail; /tmp is the sandbox's own."""
    workspace, _, _, context, _ = unprivileged_run
    for path in hostile.token_paths(context):
        assert not os.path.exists(path), f"a submission wrote {path} on the grading machine"
    assert not (workspace / "source" / LAB / "pwned.txt").exists()
    assert b"written by a student" not in (workspace / "gradebook.db").read_bytes(), "a submission wrote into the gradebook"
    writes = _outputs(workspace, "writes_outside")
    wrote = [line.split()[1] for line in writes.splitlines() if line.startswith("WROTE")]
    assert writes.count("BLOCKED") == 5 and wrote == [f"/tmp/escaped-from-sandbox-{context['token']}.txt"], writes[-2000:]


@slow
def test_the_kernel_sees_no_other_process(unprivileged_run):
    """The kernel is alone in its PID namespace: the supervisor (same user, holding the hidden tests) is out of reach."""
    workspace, *_ = unprivileged_run
    spy = _outputs(workspace, "spies_on_grader")
    assert "OTHERS 0 processes" in spy and "OPENED" not in spy, f"spies_on_grader output: {spy[-2000:]}"


# --- the README's table of what is enforced where ------------------------------------------------

#: Row of the README's table -> the tests of this module that show it for the bubblewrap column.
DEMONSTRATED = {
    "time per cell and per notebook": ["test_each_case_gets_its_outcome[infinite_loop]"],
    "memory": ["test_each_case_gets_its_outcome[memory_bomb]", "test_each_case_gets_its_outcome[memory_bomb_processes]"],
    "number of processes": ["test_each_case_gets_its_outcome[fork_bomb]"],
    "no network": ["test_no_network_not_even_the_grading_machines_loopback"],
    "no other students' files, gradebook, `source/`, hidden tests": [
        "test_course_files_other_students_and_gradebook_are_hidden", "test_the_kernel_sees_no_other_process"],
    "no writes outside the submission": ["test_nothing_written_outside_the_submission"],
}
#: Rows no test here can show (file-size limits are shown for every mode in tests/grader/test_sandbox.py).
SHOWN_ELSEWHERE = {"file size": "tests/grader/test_sandbox.py::test_memory_and_file_size_limits"}


def readme_table() -> dict:
    """The README's table of what is enforced where: {row: {column: cell}}."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("**What is enforced where**")[1].split("\n\n")[1]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in block.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in body}


def test_readme_table_matches_what_the_tests_show():
    """Each row the README claims for Linux without root (bubblewrap) is shown by a test of this module."""
    table = readme_table()
    column = next((name for name in next(iter(table.values())) if "bubblewrap" in name), None)
    assert column, f"the README's table has no column for bubblewrap: {list(next(iter(table.values())))}"
    claimed = {row for row, cells in table.items() if cells[column].lower().startswith("yes")}
    unproven = claimed - set(DEMONSTRATED) - set(SHOWN_ELSEWHERE)
    assert not unproven, f"README rows claimed for bubblewrap without a test here: {sorted(unproven)}"
    assert set(table) == set(DEMONSTRATED) | set(SHOWN_ELSEWHERE), (
        f"README rows {sorted(table)} and the rows mapped to tests {sorted(set(DEMONSTRATED) | set(SHOWN_ELSEWHERE))} differ")
    not_claimed = set(DEMONSTRATED) - claimed
    assert not not_claimed, f"tests show {sorted(not_claimed)} for bubblewrap but the README does not say 'yes'"
    names = {name.split("[")[0] for tests in DEMONSTRATED.values() for name in tests}
    missing = [name for name in names if not callable(globals().get(name))]
    assert not missing, f"the mapping names tests that do not exist: {missing}"
    cases = {re.search(r"\[(\w+)\]", name).group(1) for tests in DEMONSTRATED.values() for name in tests if "[" in name}
    assert cases <= set(ATTACKS + RUNAWAY), f"the mapping names cases this module does not grade: {cases - set(ATTACKS + RUNAWAY)}"
