"""The whole course flow on one machine, in a real browser: release, fetch, validate, submit, grade, feedback.

An instructor and a student on the same computer, with the course-local exchange that
``./course.sh exchange`` makes (README, "An exchange on one machine"). The instructor runs
JupyterLab on a scratch course (as root here, with its own Jupyter configuration folder);
the student is a throw-away Unix user with a home folder of its own, configured by
``./course.sh student --user --exchange ...`` (nbgrader's instructor extensions off, the
Assignment List pointed at the exchange) and running its own JupyterLab. Where users cannot
be created (not root, no ``useradd``), the student runs as this process's user with its own
HOME, Jupyter configuration, data and runtime folders, and the test says so in its output.

Chromium (Debian's ``chromium``, driven by Playwright) then does what the two people do:
the instructor generates and releases lab1 in the Formgrader; the student fetches it in the
Assignment List, fills two answers in the notebook, presses Validate and submits; the
instructor collects in the Formgrader, runs ``dlmed grade lab1`` and reads the scores in the
Formgrader's gradebook, generates and releases feedback; the student fetches the feedback,
which must hold no line of any hidden test. Every step leaves a screenshot in
build/test-artefacts/browser/flow/.
"""

import html
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from dlmed import course
from tests.browser import ARTEFACTS, CHROMIUM, browser_or_skip, jupyterlab
from tests.conftest import PROJECT_ROOT
from tests.submissions import lab1

pytestmark = pytest.mark.slow

LAB = "lab1"
NAME = "lab1_mednist_from_scratch.ipynb"
STUDENT = "dlmedstudent"
#: The two answers the student types: short ones, so the rest of the notebook stays blank.
ANSWERS = {grade_id: lab1.ALTERNATIVE[grade_id].strip("\n") for grade_id in ("ex6_accuracy", "ex8_conv_output_size")}
#: What the gradebook must say: the two exercises' tests pass, every other test fails.
EXPECTED = {cell: (float(points) if cell in ("test_ex6_accuracy_matches_sklearn_with_ties",
                                             "test_ex8_conv_output_size_matches_conv2d") else 0.0)
            for cell, points in lab1.FULL_MARKS.items()}
SHOTS = ARTEFACTS / "flow"
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)
WAIT_MS = 300_000  # generate, validate and feedback run nbgrader on a shared 2-core machine


def _shot(page, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


class Student:
    """The student's account (a throw-away Unix user where possible) and its folders."""

    def __init__(self, base: Path):
        self.home = base / "student"
        self.home.mkdir()
        self.uid, self.gid, self.created, self.name = os.getuid(), os.getgid(), False, STUDENT
        self.note = ""
        if os.geteuid() == 0 and shutil.which("useradd") and shutil.which("userdel"):
            try:
                pwd.getpwnam(STUDENT)
            except KeyError:
                subprocess.run(["useradd", "--no-create-home", "--home-dir", str(self.home), "--shell", "/bin/sh", STUDENT],
                               check=True, capture_output=True)
                self.created = True
            account = pwd.getpwnam(STUDENT)
            self.uid, self.gid = account.pw_uid, account.pw_gid
        else:
            self.note = (f"the student runs as {pwd.getpwuid(os.getuid()).pw_name} (no root or no useradd here), "
                         "with its own HOME and Jupyter folders")
        for folder in (".jupyter", ".local/share/jupyter/runtime", "dlmed-data"):
            (self.home / folder).mkdir(parents=True)
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(self.home)], check=True)
        self.env = {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "JUPYTER_CONFIG_DIR": str(self.home / ".jupyter"),
            "JUPYTER_DATA_DIR": str(self.home / ".local/share/jupyter"),
            "JUPYTER_RUNTIME_DIR": str(self.home / ".local/share/jupyter/runtime"),
            "DLMED_DATA": str(self.home / "dlmed-data"),
            "DLMED_VENV": sys.prefix,
        }

    def identity(self):
        """(uid, gid) for a process run as the student, or None when the student is this process's user."""
        return (self.uid, self.gid) if self.uid != os.getuid() else None

    def run(self, command, **kwargs):
        """Run ``command`` as the student, in its home, with its environment."""
        identity = {"user": self.uid, "group": self.gid, "extra_groups": []} if self.identity() else {}
        return subprocess.run(command, cwd=self.home, env=self.env, capture_output=True, text=True, **identity, **kwargs)

    def remove(self):
        if self.created:
            subprocess.run(["userdel", STUDENT], capture_output=True)


@pytest.fixture(scope="module")
def machine(grading_data_dir):
    """A scratch course with ``./course.sh exchange`` run, and a student configured with ``./course.sh student``."""
    browser_or_skip()  # before making users and servers
    stamp = Path(sys.prefix) / ".dlmed-installed"
    if not stamp.exists() or stamp.stat().st_mtime < (PROJECT_ROOT / "pyproject.toml").stat().st_mtime:
        pytest.skip(f"{sys.prefix} was not set up by ./course.sh (no up-to-date .dlmed-installed): "
                    "the student's ./course.sh student would reinstall it")
    from tests.grader.test_unprivileged_grading import _grant_traversal

    # Not under pytest's temporary folder: only root may enter that; the student must reach the exchange.
    base = Path(tempfile.mkdtemp(prefix="dlmed-flow-"))
    os.chmod(base, 0o755)
    modes = {}
    student = None
    try:
        workspace = course.make_workspace(PROJECT_ROOT, base / "course")
        shutil.copy2(PROJECT_ROOT / "course.sh", workspace / "course.sh")
        made = subprocess.run(["bash", str(workspace / "course.sh"), "exchange"], capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stdout + made.stderr
        exchange = workspace / "exchange"
        assert exchange.is_dir() and oct(exchange.stat().st_mode & 0o7777) == "0o1777", (
            f"./course.sh exchange: expected {exchange} with mode 1777, got {made.stdout}")
        student = Student(base)
        if student.identity():
            modes = _grant_traversal([sys.executable, sys.prefix, PROJECT_ROOT])
        configured = student.run(["bash", str(PROJECT_ROOT / "course.sh"), "student", "--user", "--exchange", str(exchange)],
                                 timeout=600)
        assert configured.returncode == 0, f"./course.sh student --user: {configured.stdout[-2000:]}{configured.stderr[-2000:]}"
        instructor_config = base / "instructor-jupyter"
        (instructor_config / "runtime").mkdir(parents=True)
        instructor_env = dict(os.environ, JUPYTER_CONFIG_DIR=str(instructor_config),
                              JUPYTER_RUNTIME_DIR=str(instructor_config / "runtime"))
        yield workspace, student, instructor_env
    finally:
        for folder, mode in modes.items():
            os.chmod(folder, mode)
        if student:
            student.remove()
        shutil.rmtree(base, ignore_errors=True)


def _assignment_row(page):
    """The Formgrader's row of lab1 on its Manage Assignments page."""
    return page.locator("tr", has=page.locator("td.name a", has_text=re.compile(f"^{LAB}$")))


def _formgrader_action(page, column: str, shot: str) -> str:
    """Click a Manage Assignments button of lab1 (``column``: assign, release, collect, ...); return the dialog's text."""
    page.goto(page.url.split("#")[0], wait_until="networkidle")
    button = _assignment_row(page).locator(f"td.{column} a")
    button.wait_for(timeout=60_000)
    button.click()
    dialog = page.locator("#success-modal, #error-modal").first
    dialog.wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_timeout(700)  # the modal's fade-in
    _shot(page, shot)
    text = dialog.inner_text()
    succeeded = page.locator("#success-modal").count() == 1
    dialog.locator(".modal-footer button").click()
    dialog.wait_for(state="detached", timeout=10_000)
    assert succeeded, f"Formgrader, {column} of {LAB}: {text[-2000:]}"
    return text


def _nbgrader_menu(page, shot: str = "", click: str = "") -> list:
    """Open JupyterLab's Nbgrader menu; return the commands it shows, then click ``click`` or close it."""
    menu = page.locator("#jp-mainmenu-nbgrader")
    title = page.locator("#jp-menu-panel div.lm-MenuBar-itemLabel", has_text=re.compile("^Nbgrader$"))
    if not menu.is_visible():
        title.click()
    menu.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(300)
    items = menu.locator("li[data-command]")
    # The menu holds an item for every nbgrader command; those of disabled plugins are hidden.
    shown = [items.nth(i).get_attribute("data-command") for i in range(items.count()) if items.nth(i).is_visible()]
    if shot:
        _shot(page, shot)
    if click:
        menu.locator(f'li[data-command="{click}"]').click()
    else:
        title.click()  # closes it
    menu.wait_for(state="hidden", timeout=10_000)
    return shown


def _list_rows(page, name: str, count: int):
    """The Assignment List's rows of one section (released, fetched, submitted), once there are ``count``."""
    rows = page.locator(f"#{name}_assignments_list > .list_item")
    deadline = time.monotonic() + 120
    while rows.count() != count:
        assert time.monotonic() < deadline, f"Assignment List: expected {count} {name} row(s), got {rows.count()}: {page.inner_text('body')[:1500]!r}"
        page.wait_for_timeout(500)
    return rows


def _fill_answer(page, answer: str):
    """Replace the code of the blank answer cell that defines ``answer``'s function, as a student types it."""
    definition = next(line for line in answer.splitlines() if line.startswith("def "))
    cell = page.locator(".jp-Notebook .jp-CodeCell", has_text=definition.split("(")[0] + "(").filter(
        has_text="raise NotImplementedError()").first
    editor = cell.locator(".cm-content")
    editor.scroll_into_view_if_needed()
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(answer)
    page.keyboard.press("Escape")


def _student_notebook(student) -> nbformat.NotebookNode:
    return nbformat.read(str(student.home / LAB / NAME), as_version=4)


def _hidden_lines():
    """Lines of lab1's hidden tests (15+ characters) that appear nowhere outside a hidden-test region,
    and that visible text (squashed), in which a 40-character run of a hidden line is no leak."""
    from tests.course.test_release_and_leaks import _text_outside
    from tests.helpers import squash

    notebook = nbformat.read(str(PROJECT_ROOT / "source" / LAB / NAME), as_version=4)
    lines = {line.strip() for cell in notebook.cells for region in HIDDEN.findall(cell.source)
             for line in region.splitlines() if len(line.strip()) >= 15}
    public_code = "\n".join(path.read_text(encoding="utf-8") for path in sorted((PROJECT_ROOT / "dlmed").rglob("*.py")))
    visible = _text_outside(HIDDEN) + squash(public_code)
    return sorted(line for line in lines if squash(line) not in visible), visible


def test_release_fetch_validate_submit_grade_and_feedback_in_a_real_browser(machine):
    """Instructor and student do the whole lab1 flow in Chromium; the fetched feedback shows no hidden test."""
    sync_api = browser_or_skip()
    workspace, student, instructor_env = machine
    if student.note:
        print(f"Note: {student.note}.")
    shutil.rmtree(SHOTS, ignore_errors=True)  # no screenshot of an earlier run passes for this one's
    with jupyterlab(workspace, log=workspace.parent / "instructor-jupyterlab.log", env=instructor_env) as (teacher_url, teacher_token), \
            jupyterlab(student.home, log=workspace.parent / "student-jupyterlab.log", env=student.env,
                       user=student.identity()) as (student_url, student_token), \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        teacher = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        pupil = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        for page in (teacher, pupil):
            page.set_default_timeout(60_000)

        # 1. The instructor's JupyterLab offers the Formgrader; the student's does not.
        teacher.goto(f"{teacher_url}/lab?token={teacher_token}", wait_until="load")
        teacher_menu = _nbgrader_menu(teacher, "01-instructor-nbgrader-menu")
        assert "nbgrader:open-formgrader" in teacher_menu, f"instructor's Nbgrader menu: {teacher_menu}"
        pupil.goto(f"{student_url}/lab?token={student_token}", wait_until="load")
        pupil_menu = _nbgrader_menu(pupil, "02-student-nbgrader-menu")
        assert "nbgrader:open-assignment-list" in pupil_menu, f"student's Nbgrader menu: {pupil_menu}"
        offered = [c for c in pupil_menu if c in ("nbgrader:open-formgrader", "nbgrader:open-course-list",
                                                   "nbgrader:open-create-assignment")]
        assert offered == [], f"the student's JupyterLab offers instructor tools: {offered}"
        for path in ("formgrader", "formgrader/api/assignments"):  # the server extensions are off, not just hidden
            status = pupil.request.get(f"{student_url}/{path}?token={student_token}").status
            assert status == 404, f"the student's server answers /{path} with HTTP {status}, expected 404"

        # 2. The instructor generates and releases lab1 in the Formgrader.
        teacher.goto(f"{teacher_url}/formgrader", wait_until="networkidle")
        assert not teacher.locator("#warning-exchange").is_visible(), "the Formgrader warns that the exchange is missing"
        _formgrader_action(teacher, "assign", "03-formgrader-generate")
        _formgrader_action(teacher, "release", "04-formgrader-release")
        assert (workspace / "exchange" / "dlmed-workshop" / "outbound" / LAB / NAME).exists(), "release: nothing in the exchange"

        # 3. The student fetches lab1 in the Assignment List and opens the notebook from there.
        _nbgrader_menu(pupil, click="nbgrader:open-assignment-list")
        released = _list_rows(pupil, "released", 1)
        assert LAB in released.first.inner_text(), released.first.inner_text()
        _shot(pupil, "05-student-assignment-list-released")
        released.first.locator(".item_status button").click()
        fetched = _list_rows(pupil, "fetched", 1)
        assert (student.home / LAB / NAME).exists(), "fetch: the notebook is not in the student's home"
        pupil.locator("#fetched_assignments_list a.assignment-notebooks-link", has_text=LAB).click()
        notebook_link = pupil.locator("#fetched_assignments_list .list_item .item_name a", has_text=Path(NAME).stem)
        notebook_link.wait_for(state="visible")
        _shot(pupil, "06-student-fetched")
        notebook_link.click()

        # 4. Two answers typed into the notebook, saved, Validate pressed.
        pupil.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        for answer in ANSWERS.values():
            _fill_answer(pupil, answer)
        pupil.keyboard.press("Control+s")
        deadline = time.monotonic() + 60
        while True:
            saved = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell.source for cell in _student_notebook(student).cells}
            if all(saved.get(grade_id, "").strip() == answer.strip() for grade_id, answer in ANSWERS.items()):
                break
            assert time.monotonic() < deadline, f"the typed answers were not saved as typed: {[saved.get(g) for g in ANSWERS]}"
            pupil.wait_for_timeout(500)
        _shot(pupil, "07-student-answers-typed")
        pupil.locator(".jp-NotebookPanel:visible jp-button.validate-button").click()
        verdict = pupil.locator(".nbgrader-ErrorDialog, .nbgrader-SuccessDialog").first
        verdict.wait_for(timeout=WAIT_MS)
        _shot(pupil, "08-student-validate")
        verdict_text = verdict.inner_text()
        # Eight exercises are still blank: validation names the failing cells, not the typed ones.
        assert "NotImplementedError" in verdict_text, f"Validate: {verdict_text[:2000]!r}"
        pupil.keyboard.press("Escape")

        # 5. The student submits in the Assignment List.
        pupil.locator(".lm-TabBar-tab", has_text="Assignments").click()
        pupil.locator("#refresh_assignments_list").click()
        fetched = _list_rows(pupil, "fetched", 1)
        fetched.first.locator('.item_status button:text("Submit")').click()
        _list_rows(pupil, "submitted", 1)
        _shot(pupil, "09-student-submitted")
        inbound = list((workspace / "exchange" / "dlmed-workshop" / "inbound").iterdir())
        assert [p.name.split("+")[:2] for p in inbound] == [[STUDENT, LAB]], f"exchange inbound: {inbound}"

        # 6. The instructor collects in the Formgrader and grades with dlmed grade.
        _formgrader_action(teacher, "collect", "10-formgrader-collect")
        assert (workspace / "submitted" / STUDENT / LAB / NAME).exists(), "collect: no submitted/ notebook"
        graded = subprocess.run([sys.executable, "-m", "dlmed", "grade", LAB, "--no-progress", "--jobs", "1"],
                                cwd=workspace, env=instructor_env, capture_output=True, text=True, timeout=1200)
        assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
        scores = course.read_scores(workspace, LAB, NAME, [STUDENT])[STUDENT]
        got = {cell: score for cell, (score, _) in scores.items() if cell in EXPECTED}
        assert got == EXPECTED, f"dlmed grade: expected {EXPECTED}, got {got}"

        # 7. The scores in the Formgrader's gradebook.
        teacher.goto(f"{teacher_url}/formgrader/gradebook/{LAB}/{Path(NAME).stem}", wait_until="networkidle")
        teacher.locator("button", has_text="Show All Names").click()  # the gradebook hides names by default
        row = teacher.locator("tr", has_text=STUDENT)
        row.wait_for()
        code_score = row.locator(".code-score").inner_text().strip()
        _shot(teacher, "11-formgrader-gradebook")
        assert code_score == f"2 / {sum(lab1.FULL_MARKS.values())}", f"gradebook's code score for {STUDENT}: {code_score!r}"

        # 8. Feedback generated and released in the Formgrader.
        teacher.goto(f"{teacher_url}/formgrader", wait_until="networkidle")
        _formgrader_action(teacher, "generate-feedback", "12-formgrader-generate-feedback")
        _formgrader_action(teacher, "release-feedback", "13-formgrader-release-feedback")

        # 9. The student fetches the feedback and opens it.
        pupil.locator("#refresh_assignments_list").click()
        submitted = _list_rows(pupil, "submitted", 1)
        submitted.first.locator('button:text("Fetch Feedback")').click()
        deadline = time.monotonic() + 120
        while not list((student.home / LAB / "feedback").glob(f"*/{Path(NAME).stem}.html")):
            assert time.monotonic() < deadline, f"no feedback fetched: {pupil.inner_text('#submitted_assignments_list')[:1000]!r}"
            pupil.wait_for_timeout(500)
        pupil.locator("#refresh_assignments_list").click()
        view = pupil.locator("#submitted_assignments_list a", has_text="view feedback")
        view.wait_for()
        _shot(pupil, "14-student-feedback-fetched")
        view.click()  # the file browser goes to the feedback folder; the student opens the page there
        page_path = next((student.home / LAB / "feedback").glob(f"*/{Path(NAME).stem}.html"))
        pupil.locator(".jp-DirListing-item", has_text=page_path.name).dblclick()
        pupil.locator(".jp-HTMLViewer iframe, .jp-RenderedHTML, iframe").first.wait_for(timeout=60_000)
        pupil.wait_for_timeout(2000)
        _shot(pupil, "15-student-feedback-in-jupyterlab")
        # The same page on its own, as the server hands it out (JupyterLab's viewer shows it sandboxed).
        relative = page_path.relative_to(student.home).as_posix()
        alone = pupil.context.new_page()
        alone.goto(f"{student_url}/files/{relative}?token={student_token}", wait_until="load")
        shown = alone.inner_text("body")
        _shot(alone, "16-student-feedback-page")
        browser.close()

    from bs4 import BeautifulSoup

    from tests.helpers import hidden_test_leaks, squash

    raw = page_path.read_text(encoding="utf-8")
    text = html.unescape(BeautifulSoup(raw, "html.parser").get_text())
    # The page is the real feedback: the student's answers, a visible test and the score are there.
    assert "torch.max(probabilities, 1)" in text and "Exercise 6" in text, f"not lab1's feedback: {text[:1500]!r}"
    assert squash("torch.max(probabilities, 1)") in squash(shown), "the browser did not show the feedback page"
    secret, visible = _hidden_lines()
    assert len(secret) > 5, f"expected hidden tests in source/{LAB}: {secret}"
    assert "HIDDEN TESTS" not in raw, "the fetched feedback holds a hidden-test marker"
    own = squash("\n".join(ANSWERS.values()))
    leaked = hidden_test_leaks(text, secret, allowed=own + visible)
    assert not leaked, f"the fetched feedback shows hidden tests: {leaked[:3]}"
    assert not [line for line in secret if squash(line) in squash(raw)], "hidden-test lines in the feedback's HTML source"
