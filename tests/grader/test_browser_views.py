"""What a student submitted stays inert in the instructor's browser: the Formgrader, feedback, the report.

A scratch course grades the hostile corpus's browser attacks (``xss_*`` in
tests/submissions/hostile.py) with ``dlmed grade`` and one with stock ``nbgrader autograde``;
JupyterLab then serves the course, and Chromium (Debian's ``chromium``, driven by Playwright)
opens each submission in the Formgrader, each feedback page and the class report. Every
payload tries to retitle the page and to write a file through the server's contents API as
the instructor; neither may happen. One submission's autograded notebook is replaced by an
unsanitised copy to show that the Formgrader's own exporter (the second layer) holds alone,
and a positive control shows that the same payload does run in this browser when nothing
stops it.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlmed import course
from tests.browser import ARTEFACTS, CHROMIUM, browser_or_skip, jupyterlab
from tests.conftest import PROJECT_ROOT
from tests.submissions import hostile, lab1

pytestmark = pytest.mark.slow

LAB = "lab1"
NAME = hostile.LAB_NOTEBOOK
XSS_CASES = sorted(case for case in hostile.CASES if case.startswith("xss_"))
STOCK_STUDENT = "stock_autograde_xss"


def _stock_submission(release):
    """A submission graded by stock nbgrader: a script output and markup in a written answer."""
    notebook = lab1.build_notebook(release, lab1.Submission("", lab1.with_answers(
        lab1.ALTERNATIVE,
        ex6_accuracy=lab1.ALTERNATIVE["ex6_accuracy"] + hostile.XSS_CASES["xss_script_output"](STOCK_STUDENT),
        q1_steps_per_epoch=f'135 steps <img src=x onerror="{hostile.xss(STOCK_STUDENT)}">')))
    return notebook


def _unsanitised(notebook_path: Path, case: str):
    """Put raw, active markup back into an autograded notebook, as if the first layer were missing."""
    notebook = nbformat.read(str(notebook_path), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "ex6_accuracy":
            cell.outputs.append(nbformat.v4.new_output(
                "display_data", data={"text/html": f"<script>{hostile.xss(case)}</script><img src=x onerror=\"{hostile.xss(case)}\">",
                                      "text/plain": "raw"}))
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "q1_steps_per_epoch":
            cell.source = f'135 <img src=x onerror="{hostile.xss(case)}">'
    nbformat.write(notebook, str(notebook_path))


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory, grading_data_dir):
    """Lab 1 with the browser attacks graded by `dlmed grade` (and one by stock nbgrader), feedback made."""
    workspace = course.make_workspace(PROJECT_ROOT, tmp_path_factory.mktemp("browser") / "course")
    course.run_nbgrader(["generate_assignment", LAB, "--force"], workspace)
    release = workspace / "release" / LAB / NAME
    for case in XSS_CASES:
        hostile.write_case(hostile.CASES[case], release, workspace / "submitted" / case / LAB, {})
    completed = subprocess.run([sys.executable, "-m", "dlmed", "grade", LAB, "--no-progress", *hostile.LIMITS],
                               cwd=workspace, capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    stock = workspace / "submitted" / STOCK_STUDENT / LAB
    stock.mkdir(parents=True)
    nbformat.write(_stock_submission(release), str(stock / NAME))
    course.run_nbgrader(["autograde", LAB, "--student", STOCK_STUDENT, "--force"], workspace)
    course.run_nbgrader(["generate_feedback", LAB, "--student", STOCK_STUDENT, "--force"], workspace)
    _unsanitised(workspace / "autograded" / "xss_script_output" / LAB / NAME, "xss_script_output")
    return workspace


class Visit:
    """One browser page: what it requested, the dialogs it opened, its title."""

    def __init__(self, context, url: str, shot: str):
        self.requests, self.dialogs = [], []
        page = context.new_page()
        page.on("request", lambda request: self.requests.append((request.method, request.url)))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.response = page.goto(url, wait_until="load")
        page.wait_for_timeout(1500)  # onerror handlers and fetches run after load
        self.title = page.title()
        self.text = page.inner_text("body")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / f"{shot}.png"), full_page=False)
        page.close()

    def attacked(self) -> list:
        """What the page did that only injected code would do (empty: nothing)."""
        found = [f"title {self.title!r}"] if "PWNED" in self.title else []
        found += [f"{method} {url}" for method, url in self.requests if "xss-proof" in url or method in ("PUT", "POST")]
        return found + [f"dialog {message!r}" for message in self.dialogs]


def _submission_ids(workspace: Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{workspace / 'gradebook.db'}") as gradebook:
        return {student: gradebook.find_submission_notebook(Path(NAME).stem, LAB, student).id
                for student in [*XSS_CASES, STOCK_STUDENT]}


def test_autograded_notebooks_hold_nothing_active(graded_course):
    """First layer: `dlmed grade` and stock `nbgrader autograde` both write inert notebooks to autograded/."""
    from dlmed.grader.sanitize import ACTIVE_MARKUP

    for student in [*XSS_CASES, STOCK_STUDENT]:
        if student == "xss_script_output":
            continue  # its notebook was made unsanitised on purpose for the second-layer check
        notebook = nbformat.read(str(graded_course / "autograded" / student / LAB / NAME), as_version=4)
        for cell in notebook.cells:
            shown = [cell.source] if cell.cell_type != "code" else [
                str(value) for output in cell.get("outputs", []) for mime, value in output.get("data", {}).items()
                if mime != "text/plain"]
            for text in shown:
                assert not ACTIVE_MARKUP.search(text), f"{student}: active markup left in autograded/: {text[:300]!r}"


def test_honest_answers_keep_their_points_and_the_report_names_the_attacks(graded_course):
    """Each attack is graded as before (full marks) and listed in the class report with what was made inert."""
    scores = course.read_scores(graded_course, LAB, NAME, [*XSS_CASES, STOCK_STUDENT])
    for student, cells in scores.items():
        got = {cell: score for cell, (score, _) in cells.items() if cell in lab1.FULL_MARKS}
        assert got == {c: float(p) for c, p in lab1.FULL_MARKS.items()}, f"{student}: expected full marks, got {got}"
    page = (graded_course / "grading" / LAB / "report.html").read_text(encoding="utf-8")
    attention = page.split("Needs your attention")[1].split("All students")[0]
    for case in XSS_CASES:
        assert f"<td>{case}</td>" in attention, f"report.html: {case} missing under 'Needs your attention'"
    assert "made inert" in attention and "onerror=&quot;document.title=1&quot;" in attention, (
        "report.html: expected the notes, with the markup file name escaped")


def test_formgrader_feedback_and_report_stay_inert_in_a_real_browser(graded_course):
    """Chromium opens every attacked page as the logged-in instructor: no title change, no write, no request."""
    sync_api = browser_or_skip()
    before = sorted(str(p) for p in graded_course.rglob("xss-proof*"))
    ids = _submission_ids(graded_course)
    with jupyterlab(graded_course) as (base, token), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        login = Visit(context, f"{base}/lab?token={token}", "jupyterlab")
        assert login.response.ok, f"JupyterLab login page: HTTP {login.response.status}"
        # Positive control: the same payload runs in this browser when nothing stops it.
        page = context.new_page()
        page.set_content(f"<title>control</title><img src=x onerror=\"{hostile.xss('control')}\">")
        page.wait_for_timeout(1000)
        assert "PWNED" in page.title(), "positive control: the payload did not run in an unprotected page"
        page.close()
        visits = {}
        for student, submission_id in ids.items():
            visit = Visit(context, f"{base}/formgrader/submissions/{submission_id}/", f"formgrader-{student}")
            assert visit.response.ok, f"Formgrader page of {student}: HTTP {visit.response.status}"
            assert "Student's answer" in visit.text or "Autograder tests" in visit.text or "points" in visit.text, (
                f"Formgrader page of {student} did not render the submission: {visit.text[:300]!r}")
            visits[f"formgrader {student}"] = visit
            feedback = f"feedback/{student}/{LAB}/{Path(NAME).stem}.html"
            visits[f"feedback {student} (server)"] = Visit(context, f"{base}/files/{feedback}", f"feedback-{student}")
            visits[f"feedback {student} (file)"] = Visit(context, (graded_course / feedback).as_uri(), f"feedback-file-{student}")
        visits["class report"] = Visit(context, (graded_course / "grading" / LAB / "report.html").as_uri(), "report")
        browser.close()
    attacked = {where: visit.attacked() for where, visit in visits.items() if visit.attacked()}
    assert not attacked, f"injected code ran in the instructor's browser: {attacked}"
    written = sorted(str(p) for p in graded_course.rglob("xss-proof*"))
    assert written == before == [], f"files written through the server's API: {written}"
    assert "removed by the grader" in visits["formgrader xss_javascript_output"].text, (
        "the Formgrader should show where a JavaScript output was removed")
    assert "my results" in visits["formgrader xss_script_output"].text, "the harmless part of an HTML output should show"
