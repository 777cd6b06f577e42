"""release/ and solutions/ match regeneration; no hidden test or solution code reaches students."""

import html
import re

import nbformat
import pytest
from bs4 import BeautifulSoup

from dlmed import course
from tests.conftest import LABS, PROJECT_ROOT
from tests.helpers import hidden_test_leaks, squash as _squash

pytestmark = pytest.mark.slow

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def _comparable(path):
    """Cell types, sources and metadata of a notebook, without execution outputs."""
    notebook = nbformat.read(str(path), as_version=4)
    cells = [(cell.cell_type, cell.source, dict(cell.metadata)) for cell in notebook.cells]
    return cells, dict(notebook.metadata)


def _source_regions(pattern):
    """Lines (stripped, 15+ characters) inside the regions ``pattern`` matches in every source notebook."""
    lines = set()
    for path in (PROJECT_ROOT / "source").glob("*/*.ipynb"):
        for cell in nbformat.read(str(path), as_version=4).cells:
            for region in pattern.findall(cell.source):
                lines.update(line.strip() for line in region.splitlines() if len(line.strip()) >= 15)
    return lines


def _text_outside(*patterns):
    """All source-notebook text outside the regions of ``patterns``: a secret line found there too is no leak."""
    texts = []
    for path in (PROJECT_ROOT / "source").glob("*/*.ipynb"):
        for cell in nbformat.read(str(path), as_version=4).cells:
            text = cell.source
            for pattern in patterns:
                text = pattern.sub("", text)
            texts.append(text)
    return _squash("\n".join(texts))


@pytest.mark.parametrize("lab", LABS)
def test_release_and_solutions_match_regeneration(graded_labs, lab):
    """The committed release/ and solutions/ are exactly what nbgrader generates from source/ (outputs aside)."""
    workspace = graded_labs[lab].workspace
    for folder in ("release", "solutions"):
        committed = sorted(p.relative_to(PROJECT_ROOT / folder) for p in (PROJECT_ROOT / folder / lab).rglob("*") if p.is_file())
        regenerated = sorted(p.relative_to(workspace / folder) for p in (workspace / folder / lab).rglob("*") if p.is_file())
        assert committed == regenerated, f"{folder}/{lab}: files differ, committed {committed}, regenerated {regenerated}"
        for relative in committed:
            assert _comparable(PROJECT_ROOT / folder / relative) == _comparable(workspace / folder / relative), (
                f"{folder}/{relative} differs from what nbgrader generates from source/: run `./course.sh all`"
            )


def _readable_text(path):
    """A file's text as a person reads it: notebook sources and outputs, or the file itself."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    parts = []
    for cell in nbformat.read(str(path), as_version=4).cells:
        parts.append(cell.source)
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")) + "\n".join(output.get("traceback", [])) + str(output.get("data", "")))
    return "\n".join(parts)


def _student_files(graded_labs):
    """Every file a student receives, as {name: (text, text the student wrote themselves)}.

    release/ and solutions/, and the generated feedback HTML (text extracted). A student's
    own submission may repeat a generic line that a hidden test also has; that is no leak.
    """
    files = {}
    for folder in ("release", "solutions"):
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.is_file():
                files[str(path.relative_to(PROJECT_ROOT))] = (_readable_text(path), "")
    for graded in graded_labs.values():
        feedback = sorted((graded.workspace / "feedback").glob(f"*/{graded.lab}/*.html"))
        assert len(feedback) == len(graded.expected), f"{graded.lab} feedback pages: expected one per student, got {len(feedback)}"
        for path in feedback:
            student = path.relative_to(graded.workspace / "feedback").parts[0]
            submitted = graded.workspace / "submitted" / student / graded.lab / graded.notebook_name
            text = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser").get_text()
            files[str(path.relative_to(graded.workspace))] = (html.unescape(text), _readable_text(submitted))
    return files


def test_no_hidden_tests_reach_students(graded_labs):
    """No hidden-test line nor its markers in release/, solutions/ or feedback HTML.

    release/ and solutions/ hold no 40-character run of a hidden-test line either, in any
    decoding. The feedback here comes from stock ``nbgrader autograde``, which runs hidden
    tests in the kernel and shows a failing hidden assert's message (part of the hidden
    line): whole lines are checked. ``dlmed grade``'s feedback, which promises more, is
    checked run by run in tests/grader/test_class_grading.py.
    """
    hidden_lines = _source_regions(HIDDEN)
    assert len(hidden_lines) > 20, "expected hidden tests in the source notebooks"
    allowed = _text_outside(HIDDEN)  # solution code may legitimately be in solutions/
    secret = [line for line in hidden_lines if _squash(line) not in allowed]
    for name, (text, own_text) in _student_files(graded_labs).items():
        assert "HIDDEN TESTS" not in text, f"{name}: contains a hidden-test marker"
        squashed, own = _squash(text), _squash(own_text)
        leaked = [line for line in secret if _squash(line) in squashed and _squash(line) not in own]
        if name.startswith(("release", "solutions")):
            leaked += hidden_test_leaks(text, secret, allowed=own + allowed)
        assert not leaked, f"{name}: hidden test lines (or 40-character runs of them) leaked: {leaked[:3]}"


def test_no_solution_code_in_release():
    """No solution line (nor its markers) appears in release/."""
    solution_lines = _source_regions(SOLUTION)
    assert len(solution_lines) > 20, "expected solutions in the source notebooks"
    allowed = _text_outside(SOLUTION, HIDDEN)
    secret = [line for line in solution_lines if _squash(line) not in allowed]
    for path in (PROJECT_ROOT / "release").rglob("*"):
        if not path.is_file():
            continue
        text = _readable_text(path)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, f"{path}: contains a solution marker"
        leaked = [line for line in secret if _squash(line) in _squash(text)]
        assert not leaked, f"{path}: solution lines leaked: {leaked[:3]}"


def test_solutions_keep_the_code_without_markers():
    """solutions/ holds every solution line of source/ but no BEGIN/END SOLUTION marker."""
    solution_lines = _source_regions(SOLUTION)
    for path in (PROJECT_ROOT / "solutions").rglob("*.ipynb"):
        text = _readable_text(path)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, f"{path}: contains a solution marker"
    solutions_text = _squash("\n".join(_readable_text(p) for p in (PROJECT_ROOT / "solutions").rglob("*.ipynb")))
    missing = [line for line in solution_lines if _squash(line) not in solutions_text]
    assert not missing, f"solution lines missing from solutions/: {missing[:3]}"


def test_source_folders_hold_only_the_notebook():
    """nbgrader copies every other file of source/<lab>/ to students, so there must be none."""
    for lab in course.list_labs(PROJECT_ROOT):
        files = [p.name for p in (PROJECT_ROOT / "source" / lab).rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].endswith(".ipynb"), f"source/{lab}: expected one notebook, got {files}"
