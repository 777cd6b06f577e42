"""Every lab graded by nbgrader: reference, blank and fixture submissions get exactly the expected scores."""

import pytest

from dlmed.course.grading import graded_test_cells
from tests.conftest import LABS, lab_fixtures

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("lab", LABS)
def test_every_submission_was_graded(graded_labs, lab):
    """nbgrader graded every submission (none dropped as failed)."""
    graded = graded_labs[lab]
    assert sorted(graded.scores) == sorted(graded.expected), (
        f"{lab} graded students: expected {sorted(graded.expected)}, got {sorted(graded.scores)}"
    )


@pytest.mark.parametrize("lab", LABS)
def test_cell_scores(graded_labs, lab):
    """Each autograded test cell of each submission gets exactly the score its fixture expects."""
    graded = graded_labs[lab]
    problems = {}
    for student, expected in graded.expected.items():
        got = {cell: score for cell, (score, _) in graded.scores.get(student, {}).items() if score is not None}
        wrong = {cell: (expected.get(cell), got.get(cell)) for cell in set(expected) | set(got) if expected.get(cell) != got.get(cell)}
        if wrong:
            problems[student] = wrong
    assert not problems, f"{lab}: cells with unexpected scores {{student: {{cell: (expected, got)}}}}: {problems}"


@pytest.mark.parametrize("lab", LABS)
def test_manual_questions_left_for_the_instructor(graded_labs, lab):
    """The written answers are worth points and are not autograded."""
    manual = {cell: maximum for cell, (score, maximum) in graded_labs[lab].scores["reference"].items() if score is None}
    assert manual == lab_fixtures(lab).MANUAL, f"{lab} manually graded cells: got {manual}"


@pytest.mark.parametrize("lab", LABS)
def test_blank_notebook_runs_apart_from_unanswered_exercises(graded_labs, lab):
    """In the blank notebook, cells that do not use an answer run without error; test cells raise NotImplementedError."""
    notebook = graded_labs[lab].autograded_notebook("blank")
    tests = set(graded_test_cells(notebook))
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or index in tests:
            continue
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        uses_answers = "uses-answers" in cell.metadata.get("tags", [])
        is_answer = cell.metadata.get("nbgrader", {}).get("solution", False)
        if errors and not uses_answers and not is_answer:
            problems.append((index, errors[0]["ename"], errors[0]["evalue"]))
    assert not problems, f"{lab}: cells that should run in the blank notebook but failed: {problems}"
    for index in tests:
        errors = [o for o in notebook.cells[index].outputs if o.get("output_type") == "error"]
        assert errors and errors[0]["ename"] == "NotImplementedError", (
            f"{lab} test cell {index} of the blank notebook: expected NotImplementedError, got "
            f"{[(e['ename'], e['evalue']) for e in errors]}"
        )


@pytest.mark.parametrize("lab", LABS)
def test_reference_notebook_runs_without_errors(graded_labs, lab):
    """Every cell of the solution runs cleanly in grading mode (on the synthetic stand-ins here)."""
    notebook = graded_labs[lab].autograded_notebook("reference")
    errors = [
        (index, out["ename"], out["evalue"])
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{lab}: cells of the reference solution that failed: {errors}"
