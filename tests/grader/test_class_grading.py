"""The class grader, ``dlmed grade``: hostile and broken submissions graded in one batch with honest ones.

The batch is graded once per session (as an instructor would, with the command line) in a
scratch course; the tests then check every case's outcome (tests/submissions/hostile.py),
that honest students get the same scores as from stock ``nbgrader autograde``
(tests/submissions/lab1.py), that the attacks left no trace, the gradebook, feedback and
report, resuming an interrupted run, importing an LMS zip, and the ``basic`` isolation.
"""

import csv
import dataclasses
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Dict

import nbformat
import pytest

from dlmed import course
from dlmed.grader.sandbox import detect_isolation
from tests.conftest import PROJECT_ROOT
from tests.submissions import hostile, lab1

pytestmark = pytest.mark.slow

LAB = "lab1"
NAME = hostile.LAB_NOTEBOOK
HONEST = ("alternative_correct", "partial", "mistakes_b")


def run_grade(workspace: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    """``dlmed grade lab1 ARGS`` in ``workspace``, as an instructor runs it."""
    return subprocess.run([sys.executable, "-m", "dlmed", "grade", LAB, "--no-progress", *args],
                          cwd=workspace, capture_output=True, text=True, timeout=timeout)


def journal(workspace: Path) -> Dict[str, dict]:
    """The grader's per-student results, by student."""
    return {p.stem: json.loads(p.read_text()) for p in (workspace / "grading" / LAB / "results").glob("*.json")}


def points(result: dict) -> Dict[str, float]:
    """{test grade_id: score} of one journal entry (autograded cells only)."""
    return {cell: score for cell, (score, _) in result["scores"].items() if cell in lab1.FULL_MARKS}


def new_course(tmp_path_factory, label: str) -> Path:
    """A scratch course with Lab 1 generated (release/ and the gradebook)."""
    workspace = course.make_workspace(PROJECT_ROOT, tmp_path_factory.mktemp(label) / "course")
    course.run_nbgrader(["generate_assignment", LAB, "--force"], workspace)
    return workspace


def submit(workspace: Path, student: str, notebook, name: str = NAME):
    folder = workspace / "submitted" / student / LAB
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(folder / name))


class _CountingServer:
    """A TCP server on the grading machine's loopback that counts connections (none may come)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.sock.settimeout(0.5)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@dataclasses.dataclass
class ClassRun:
    workspace: Path
    completed: subprocess.CompletedProcess
    results: Dict[str, dict]
    context: dict
    connections: int
    source_digest_before: str


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def class_run(tmp_path_factory, grading_data_dir):
    """Lab 1 in a scratch course: honest and hostile submissions graded by one `dlmed grade` run."""
    workspace = new_course(tmp_path_factory, "class")
    release = workspace / "release" / LAB / NAME
    submit(workspace, "reference", nbformat.read(str(workspace / "source" / LAB / NAME), as_version=4))
    submit(workspace, "blank", nbformat.read(str(release), as_version=4))
    for student in HONEST:
        submit(workspace, student, lab1.build_notebook(release, lab1.SUBMISSIONS[student]))
    server = _CountingServer()
    context = {"course_root": str(workspace), "port": server.port, "token": uuid.uuid4().hex}
    for student, case in hostile.CASES.items():
        hostile.write_case(case, release, workspace / "submitted" / student / LAB, context)
    source_digest = _digest(workspace / "source" / LAB / NAME)
    try:
        completed = run_grade(workspace, *hostile.LIMITS)
    finally:
        server.close()
    return ClassRun(workspace, completed, journal(workspace), context, server.connections, source_digest)


def _expected_honest():
    expected = {"reference": {cell: float(p) for cell, p in lab1.FULL_MARKS.items()},
                "blank": {cell: 0.0 for cell in lab1.FULL_MARKS}}
    for student in HONEST:
        expected[student] = lab1.SUBMISSIONS[student].expected_scores(lab1.FULL_MARKS)
    return expected


def test_the_batch_completes_and_grades_everyone(class_run):
    """The command succeeds and every submission, hostile or not, has a result."""
    assert class_run.completed.returncode == 0, (
        f"dlmed grade: expected exit 0, got {class_run.completed.returncode}\n"
        f"{class_run.completed.stdout[-3000:]}\n{class_run.completed.stderr[-3000:]}")
    students = set(hostile.CASES) | set(_expected_honest())
    assert set(class_run.results) == students, (
        f"students with results: missing {sorted(students - set(class_run.results))}, "
        f"unexpected {sorted(set(class_run.results) - students)}")
    statuses = {s: r["status"] for s, r in class_run.results.items()}
    expected = {s: hostile.CASES[s].status if s in hostile.CASES else "graded" for s in students}
    assert statuses == expected, f"statuses: expected {expected}, got {statuses}"


def test_honest_students_get_their_scores(class_run):
    """Honest submissions graded beside hostile ones score exactly as with stock nbgrader autograde."""
    wrong = {}
    for student, expected in _expected_honest().items():
        got = points(class_run.results[student])
        if got != expected:
            wrong[student] = {c: (expected.get(c), got.get(c)) for c in expected if expected.get(c) != got.get(c)}
    assert not wrong, f"honest students with other scores {{student: {{cell: (expected, got)}}}}: {wrong}"
    noted = {s: (class_run.results[s]["notes"], class_run.results[s]["events"]) for s in _expected_honest()
             if class_run.results[s]["notes"] or class_run.results[s]["events"]}
    assert not noted, f"honest students should draw no notes or events: {noted}"


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_hostile_case_outcome(class_run, case):
    """Each hostile case scores zero or what its honest cells earn, and the instructor is told why."""
    spec, result = hostile.CASES[case], class_run.results[case]
    got = points(result)
    expected = spec.expected_scores()
    wrong = {c: (expected[c], got.get(c)) for c in expected if got.get(c) != expected[c]}
    assert not wrong, f"{case} ({spec.description}): cells with other scores {{cell: (expected, got)}}: {wrong}"
    for cell in spec.either:
        name = hostile.TEST[cell]
        assert got.get(name) in (0.0, float(lab1.FULL_MARKS[name])), f"{case}: {name} expected 0 or full, got {got.get(name)}"
    notes = " | ".join(result["notes"])
    for phrase in spec.notes:
        assert phrase in notes, f"{case}: expected a note containing {phrase!r}, got {result['notes']}"
    kinds = {event["kind"] for event in result["events"]}
    for kind in spec.events:
        assert kind in kinds, f"{case}: expected an event {kind!r}, got {result['events']}"
    if spec.reason:
        assert spec.reason in result["reason"], f"{case}: expected the reason to mention {spec.reason!r}, got {result['reason']!r}"
    elif spec.failures:  # a crash the grader recovers from
        assert not result["reason"], f"{case}: the run should have gone on after the crash, but: {result['reason']!r}"
    for number, phrase in spec.failures.items():
        failure = result["failures"].get(hostile.TEST[number], "")
        assert phrase in failure, f"{case}: expected {hostile.TEST[number]}'s failure to mention {phrase!r}, got {failure!r}"


def _outputs(workspace, student):
    notebook = nbformat.read(str(workspace / "autograded" / student / LAB / NAME), as_version=4)
    return "\n".join(str(o.get("text", "")) + str(o.get("evalue", "")) for c in notebook.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def test_attacks_on_the_grader_left_no_trace(class_run):
    """Writes outside the submission, reads of course files and network connections all failed."""
    workspace = class_run.workspace
    for path in hostile.token_paths(class_run.context):
        assert not os.path.exists(path), f"a submission wrote {path} on the grading machine"
    assert _digest(workspace / "source" / LAB / NAME) == class_run.source_digest_before, "source/ was changed"
    with sqlite3.connect(workspace / "gradebook.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), "the gradebook is damaged"
    assert b"written by a student" not in (workspace / "gradebook.db").read_bytes(), "a submission wrote into the gradebook"
    writes = _outputs(workspace, "writes_outside")
    # Only the sandbox's own, private /tmp was writable (and the file is not on the host: above).
    wrote = [line.split()[1] for line in writes.splitlines() if line.startswith("WROTE")]
    assert writes.count("BLOCKED") == 5 and wrote == [f"/tmp/escaped-from-sandbox-{class_run.context['token']}.txt"], (
        f"writes_outside output: {writes[-2000:]}")
    reads = _outputs(workspace, "reads_secrets")
    assert "FOUND 0 course files" in reads and "READ" not in reads, f"reads_secrets output: {reads[-2000:]}"
    network = _outputs(workspace, "network")
    assert "CONNECTED?" not in network and network.count("BLOCKED") == 3, f"network output: {network[-2000:]}"
    assert class_run.connections == 0, f"{class_run.connections} connections reached the grading machine's server"
    spy = _outputs(workspace, "spies_on_grader")
    assert "OTHERS 0 processes" in spy and "OPENED" not in spy, f"spies_on_grader output: {spy[-2000:]}"


def test_feedback_for_every_graded_student_without_hidden_tests(class_run):
    """Feedback HTML exists for every graded submission and holds no hidden-test content in any decoding.

    No hidden-test line, nor any 40-character run of one, in the page's text or in anything
    a student could decode from it with the standard library (base64/32/85, hex, zlib, gzip,
    bz2, lzma, reversed, rot13): the reader threads of the corpus print what they copied so.
    """
    from tests.helpers import hidden_test_leaks, squash
    from tests.course.test_release_and_leaks import HIDDEN, _readable_text, _source_regions, _text_outside

    from bs4 import BeautifulSoup

    workspace = class_run.workspace
    graded = sorted(s for s, r in class_run.results.items() if r["status"] == "graded")
    pages = {p.relative_to(workspace / "feedback").parts[0]: p for p in (workspace / "feedback").glob(f"*/{LAB}/*.html")}
    assert sorted(pages) == graded, f"feedback pages: expected {graded}, got {sorted(pages)}"
    # dlmed's own code is public (students install it) and the readers copy it too, since it is
    # not under sys.prefix in an editable install: a hidden-test line that is also in dlmed
    # (lab 5's `torch.manual_seed(seed)`) is no leak.
    public_code = "\n".join(path.read_text(encoding="utf-8") for path in sorted((PROJECT_ROOT / "dlmed").rglob("*.py")))
    visible = _text_outside(HIDDEN) + squash(public_code)
    secret = [line for line in _source_regions(HIDDEN) if squash(line) not in visible]
    for student, page in pages.items():
        text = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").get_text()
        own = squash(_readable_text(next((workspace / "submitted" / student / LAB).glob("*.ipynb"))))
        # A marker counts only where the student did not write it (hostile case hidden_marker_in_answer).
        marker = "HIDDENTESTS" in squash(text) and "HIDDENTESTS" not in own
        assert not marker, f"{student}'s feedback shows a hidden-test marker"
        leaked = hidden_test_leaks(text, secret, allowed=own + visible)
        assert not leaked, f"{student}'s feedback shows hidden tests: {leaked[:3]}"


def test_the_readers_really_printed_what_they_copied(class_run):
    """The reader cases ran to their last cell and printed their loot: the leak test above has something to check."""
    for case in [c for c in hostile.CASES if "reader" in c]:
        outputs = _outputs(class_run.workspace, case)
        assert "LOOT" in outputs, f"{case}: the last answer cell did not print its loot: {outputs[-1000:]}"


def test_feedback_for_honest_students_stays_useful(class_run):
    """Honest students' feedback keeps their outputs, the visible tests' messages and their scores."""
    from bs4 import BeautifulSoup

    workspace = class_run.workspace
    for student in HONEST:
        page = next((workspace / "feedback" / student / LAB).glob("*.html")).read_text(encoding="utf-8")
        text = BeautifulSoup(page, "html.parser").get_text()
        result = class_run.results[student]
        for cell, failure in result["failures"].items():
            if failure.startswith("HiddenTestFailed"):
                assert "the hidden tests failed" in text, f"{student}: {cell} failed its hidden tests; the feedback should say so"
            else:
                message = failure.split(": ", 1)[-1]
                assert message in text, f"{student}: the visible test message {message!r} of {cell} is missing from the feedback"
        notebook = nbformat.read(str(workspace / "autograded" / student / LAB / NAME), as_version=4)
        printed = [line.strip() for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream" for line in str(output.get("text", "")).splitlines() if line.strip()]
        assert printed, f"{student}: expected printed output in the autograded notebook"
        missing = [line for line in printed if line not in text]
        assert not missing, f"{student}: outputs missing from the feedback: {missing[:3]}"
        total = sum(points(result).values())
        assert f"{total:g}" in text, f"{student}: the score {total:g} is not in the feedback"
    partial_failures = class_run.results["partial"]["failures"]
    assert any(not f.startswith("HiddenTestFailed") for f in partial_failures.values()), (
        f"expected a visible test failing for 'partial': {partial_failures}")


def test_nbgrader_export_reads_the_gradebook(class_run):
    """`nbgrader export` works on what the grader recorded, with the same totals."""
    import pandas as pd

    course.run_nbgrader(["export"], class_run.workspace)
    grades = pd.read_csv(class_run.workspace / "grades.csv").set_index("student_id")
    for student, result in class_run.results.items():
        total = sum(points(result).values())
        assert grades.loc[student, "raw_score"] == pytest.approx(total), (
            f"{student}: grades.csv raw_score {grades.loc[student, 'raw_score']}, journal {total}")


def test_class_report(class_run):
    """scores.csv has a row per student; report.html embeds both plots and lists the hostile cases."""
    import pandas as pd

    folder = class_run.workspace / "grading" / LAB
    table = pd.read_csv(folder / "scores.csv")
    assert sorted(table["student"]) == sorted(class_run.results), "scores.csv: one row per student expected"
    assert set(lab1.FULL_MARKS) <= set(table.columns), f"scores.csv columns: {list(table.columns)}"
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2, "report.html: expected the histogram and the pass-rate plot"
    for student in ("edited_test", "os_exit", "corrupt_json", "patched_library"):
        assert f"<td>{student}</td>" in page.split("Needs your attention")[1].split("All students")[0], (
            f"report.html: {student} should be listed under 'Needs your attention'")
    for name in ("score_histogram", "pass_rate_per_exercise"):
        assert (folder / "figures" / f"{name}.png").stat().st_size > 1000, f"figures/{name}.png missing or empty"
    # Copied work: the solution and the independently written alternative are not a flagged pair;
    # the reference submission is the published solution.
    assert "Similar submissions" in page and "Compared with the published solution" in page, "similarity section missing"
    similar = pd.read_csv(folder / "similarity.csv", keep_default_na=False)
    pair = similar[((similar["first"] == "alternative_correct") & (similar["second"] == "reference"))
                   | ((similar["first"] == "reference") & (similar["second"] == "alternative_correct"))]
    assert pair.empty or (pair["flagged"] == "no").all(), f"reference and alternative_correct flagged: {pair}"
    solution = similar[similar["second"] == "published solution"].set_index("first")
    assert solution.loc["reference", "flagged"] == "yes", "the reference submission should match solutions/"
    assert solution.loc["alternative_correct", "flagged"] == "no", "alternative_correct flagged against solutions/"


def test_export_for_the_learning_platforms(class_run):
    """`dlmed export lab1` after grading: grades.csv in nbgrader's layout with the gradebook's totals, canvas.csv too."""
    import pandas as pd

    completed = subprocess.run([sys.executable, "-m", "dlmed", "export", LAB], cwd=class_run.workspace,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    folder = class_run.workspace / "grading" / LAB / "export"
    grades = pd.read_csv(folder / "grades.csv").set_index("student_id")
    for student, result in class_run.results.items():
        total = sum(points(result).values())
        assert grades.loc[student, "raw_score"] == pytest.approx(total), (
            f"{student}: exported raw_score {grades.loc[student, 'raw_score']}, journal {total}")
    canvas = pd.read_csv(folder / "canvas.csv", dtype=str, keep_default_na=False)
    assert list(canvas.columns) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", LAB]
    assert set(canvas["SIS Login ID"][1:]) >= set(class_run.results), "every graded student should be in canvas.csv"


def test_rerun_keeps_results_and_scores(class_run):
    """A second run finds everything up to date and changes no score."""
    again = run_grade(class_run.workspace, "--no-feedback", *hostile.LIMITS)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"({len(class_run.results)} up to date from an earlier run)" in again.stdout, again.stdout[-2000:]
    assert {s: r["scores"] for s, r in journal(class_run.workspace).items()} == {
        s: r["scores"] for s, r in class_run.results.items()}, "scores changed on a rerun"


def _sandbox_processes_after(seconds: float) -> list:
    """Processes of sandboxes (supervisors, launchers, kernels) still alive after ``seconds``."""
    import psutil

    from dlmed.grader.sandbox import SANDBOX_UID_BASE

    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for process in psutil.process_iter(["cmdline", "uids"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            uid = process.info["uids"].real if process.info["uids"] else -1
            if "dlmed.grader.sandbox" in cmdline or SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + 1000:
                alive.append((process.pid, uid, cmdline[:80]))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _canvas_zip(path: Path, notebooks: Dict[str, nbformat.NotebookNode]):
    with zipfile.ZipFile(path, "w") as archive:
        for number, (login, notebook) in enumerate(notebooks.items()):
            archive.writestr(f"{login}_{1000 + number}_{5000 + number}_{NAME}", nbformat.writes(notebook))


def test_zip_import_and_resume_after_interruption(tmp_path_factory, grading_data_dir):
    """An LMS zip is imported; a run killed midway continues where it stopped, with the same scores."""
    workspace = new_course(tmp_path_factory, "resume")
    release = workspace / "release" / LAB / NAME
    notebooks = {"ada": nbformat.read(str(workspace / "source" / LAB / NAME), as_version=4),
                 "bob": lab1.build_notebook(release, lab1.SUBMISSIONS["partial"]),
                 "cyd": lab1.build_notebook(release, lab1.SUBMISSIONS["mistakes_b"])}
    export = workspace.parent / "canvas-export.zip"
    _canvas_zip(export, notebooks)
    process = subprocess.Popen([sys.executable, "-m", "dlmed", "grade", LAB, "--no-progress", "--jobs", "1",
                                "--no-feedback", "--zip", str(export), *hostile.LIMITS],
                               cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = workspace / "grading" / LAB / "results"
    deadline = time.monotonic() + 600
    while not list(results.glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
    process.wait()
    assert not _sandbox_processes_after(10), "sandboxes outlived the killed grader"
    first = set(journal(workspace))
    assert 1 <= len(first) < 3, f"expected the kill to interrupt the run after 1 or 2 students, got {sorted(first)}"
    assert sorted(p.name for p in (workspace / "submitted").iterdir()) == ["ada", "bob", "cyd"], "zip not imported"
    again = run_grade(workspace, "--jobs", "2", *hostile.LIMITS)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"({len(first)} up to date from an earlier run)" in again.stdout, again.stdout[-2000:]
    expected = {"ada": {c: float(p) for c, p in lab1.FULL_MARKS.items()},
                "bob": lab1.SUBMISSIONS["partial"].expected_scores(lab1.FULL_MARKS),
                "cyd": lab1.SUBMISSIONS["mistakes_b"].expected_scores(lab1.FULL_MARKS)}
    got = {s: points(r) for s, r in journal(workspace).items()}
    assert got == expected, f"scores after resuming: expected {expected}, got {got}"
    assert len(list((workspace / "feedback").glob(f"*/{LAB}/*.html"))) == 3, "feedback for all three expected"
    # The Canvas user ids the zip's file names carried come back in the export (dlmed export).
    exported = subprocess.run([sys.executable, "-m", "dlmed", "export", LAB], cwd=workspace,
                              capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-2000:]
    with open(workspace / "grading" / LAB / "export" / "canvas.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    ids = {row[0]: row[1] for row in rows[2:]}
    assert ids == {"ada": "1000", "bob": "1001", "cyd": "1002"}, f"Canvas ids in canvas.csv: {ids}"
    totals = {row[1]: float(row[5]) for row in rows[2:]}
    assert totals == {"1000": sum(expected["ada"].values()), "1001": sum(expected["bob"].values()),
                      "1002": sum(expected["cyd"].values())}, f"canvas.csv scores: {totals}"


def test_a_failing_reference_check_leaves_no_half_graded_submission(tmp_path_factory, grading_data_dir):
    """The grader stages new submissions while it checks the instructor's solution; when that check fails it
    stops, takes those submissions out of the gradebook and autograded/ again, and leaves earlier grades alone."""
    from nbgrader.api import Gradebook, MissingEntry

    workspace = new_course(tmp_path_factory, "broken-reference")
    release = workspace / "release" / LAB / NAME
    source = workspace / "source" / LAB / NAME
    submit(workspace, "ada", nbformat.read(str(source), as_version=4))
    first = run_grade(workspace, "--no-feedback", *hostile.LIMITS)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = course.read_scores(workspace, LAB, NAME, ["ada"])["ada"]
    submit(workspace, "bob", lab1.build_notebook(release, lab1.SUBMISSIONS["partial"]))
    broken = nbformat.read(str(source), as_version=4)
    test = next(cell for cell in broken.cells if cell.metadata.get("nbgrader", {}).get("grade")
                and cell.cell_type == "code")
    test.source = "raise AssertionError('the environment broken on purpose')\n" + test.source
    nbformat.write(broken, str(source))
    again = run_grade(workspace, "--force", "--no-feedback", *hostile.LIMITS)
    assert again.returncode != 0 and "does not pass its own tests" in again.stdout + again.stderr, \
        again.stdout[-3000:] + again.stderr[-3000:]
    log = (workspace / "grading" / LAB / "grade.log").read_text()
    assert "prepared meanwhile and taken out of the gradebook again: 1" in log, log[-2000:]
    with Gradebook(f"sqlite:///{workspace / 'gradebook.db'}") as gradebook:
        with pytest.raises(MissingEntry):
            gradebook.find_submission(LAB, "bob")
        gradebook.find_submission(LAB, "ada")  # still there
    assert not (workspace / "autograded" / "bob" / LAB).exists(), "bob's sanitized, never run notebook was left"
    executed = nbformat.read(str(workspace / "autograded" / "ada" / LAB / NAME), as_version=4)
    assert any(cell.get("outputs") for cell in executed.cells), "ada's graded notebook lost its outputs"
    assert course.read_scores(workspace, LAB, NAME, ["ada"])["ada"] == before, "ada's grades changed"


def test_basic_isolation_still_enforces_limits(tmp_path_factory, grading_data_dir):
    """Without namespaces (macOS, no root) time and memory limits still hold and grades are the same."""
    workspace = new_course(tmp_path_factory, "basic")
    release = workspace / "release" / LAB / NAME
    submit(workspace, "alternative_correct", lab1.build_notebook(release, lab1.SUBMISSIONS["alternative_correct"]))
    for case in ("infinite_loop", "memory_bomb", "os_exit"):
        hostile.write_case(hostile.CASES[case], release, workspace / "submitted" / case / LAB, {})
    completed = run_grade(workspace, "--isolation", "basic", "--no-feedback", *hostile.LIMITS)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "isolation 'basic'" in completed.stdout, completed.stdout[-1000:]
    assert "WARNING: student code is not isolated" in completed.stderr, completed.stderr[-1000:]
    results = journal(workspace)
    assert points(results["alternative_correct"]) == {c: float(p) for c, p in lab1.FULL_MARKS.items()}
    for case in ("infinite_loop", "memory_bomb", "os_exit"):
        expected = hostile.CASES[case].expected_scores()
        assert points(results[case]) == expected, f"basic isolation, {case}: expected {expected}, got {points(results[case])}"


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on the loopback (run as the 'postgres' user); its SQLAlchemy URL."""
    import pwd
    import shutil
    import tempfile

    pytest.importorskip("psycopg", reason="the Postgres driver is not installed (pip install -e '.[postgres]')")
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' user to run the server as")
    if os.geteuid() != 0:
        pytest.skip("starting a server as the 'postgres' user needs root")
    folder = Path(tempfile.mkdtemp(prefix="dlmed-pg-"))
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    as_postgres = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(as_postgres + ["initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "grader"],
                   check=True, capture_output=True, cwd=folder)
    subprocess.run(as_postgres + ["pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "start",
                                  "-o", f"-p {port} -h 127.0.0.1 -k {folder}"], check=True, capture_output=True, cwd=folder)
    try:
        yield f"postgresql+psycopg://grader@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres + ["pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_gradebook(tmp_path_factory, grading_data_dir, postgres_url):
    """With a Postgres db_url the grader records into Postgres; export and feedback work from it."""
    import pandas as pd

    workspace = course.make_workspace(PROJECT_ROOT, tmp_path_factory.mktemp("postgres") / "course")
    with open(workspace / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(f"\nc.CourseDirectory.db_url = {postgres_url!r}\n")
    course.run_nbgrader(["generate_assignment", LAB, "--force"], workspace)
    release = workspace / "release" / LAB / NAME
    submit(workspace, "ada", nbformat.read(str(workspace / "source" / LAB / NAME), as_version=4))
    submit(workspace, "bob", lab1.build_notebook(release, lab1.SUBMISSIONS["partial"]))
    completed = run_grade(workspace, "--skip-reference-check", *hostile.LIMITS)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert not (workspace / "gradebook.db").exists(), "a SQLite gradebook was made although the config says Postgres"
    course.run_nbgrader(["export"], workspace)
    grades = pd.read_csv(workspace / "grades.csv").set_index("student_id")
    expected = {"ada": sum(lab1.FULL_MARKS.values()),
                "bob": sum(lab1.SUBMISSIONS["partial"].expected_scores(lab1.FULL_MARKS).values())}
    assert {s: grades.loc[s, "raw_score"] for s in expected} == expected, f"grades.csv: {grades.to_dict()}"
    assert len(list((workspace / "feedback").glob(f"*/{LAB}/*.html"))) == 2, "feedback for both students expected"


@pytest.mark.skipif(detect_isolation() != "namespaces", reason="needs Linux namespaces (run as root)")
def test_namespaces_are_used_where_available(class_run):
    """On a Linux machine graded as root, the strong isolation is the one in use."""
    assert "isolation 'namespaces'" in class_run.completed.stdout, class_run.completed.stdout[:1000]
