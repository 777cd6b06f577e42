"""Lab 1 graded by nbgrader: reference, blank and fixture submissions get exactly the expected scores."""

import pytest

from dlmed.grading import graded_test_cells

pytestmark = pytest.mark.slow


def test_every_submission_was_graded(graded_lab1):
    """nbgrader graded every submission (none dropped as failed)."""
    assert sorted(graded_lab1.scores) == sorted(graded_lab1.expected), (
        f"graded students: expected {sorted(graded_lab1.expected)}, got {sorted(graded_lab1.scores)}"
    )


@pytest.mark.parametrize(
    "student",
    ["reference", "blank", "alternative_correct", "partial", "mistakes_a", "mistakes_b", "mistakes_c", "mistakes_d"],
)
def test_cell_scores(graded_lab1, student):
    """Each autograded test cell gets exactly the score the fixture expects."""
    got = {cell: score for cell, (score, _) in graded_lab1.scores[student].items() if score is not None}
    expected = graded_lab1.expected[student]
    wrong = {cell: (expected.get(cell), got.get(cell)) for cell in set(expected) | set(got) if expected.get(cell) != got.get(cell)}
    assert not wrong, f"{student}: cells with unexpected scores {{cell: (expected, got)}}: {wrong}"


def test_manual_questions_left_for_the_instructor(graded_lab1):
    """The two written answers are worth points and are not autograded."""
    manual = {cell: maximum for cell, (score, maximum) in graded_lab1.scores["reference"].items() if score is None}
    assert manual == {"q1_steps_per_epoch": 1.0, "q2_why_cnn_fewer_parameters": 2.0}, f"manually graded cells: got {manual}"


def test_blank_notebook_runs_apart_from_unanswered_exercises(graded_lab1):
    """In the blank notebook, cells that do not use an answer run without error; answers raise NotImplementedError."""
    notebook = graded_lab1.autograded_notebook("blank")
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
    assert not problems, f"cells that should run in the blank notebook but failed: {problems}"
    failing_tests = [i for i in tests if any(o.get("output_type") == "error" for o in notebook.cells[i].outputs)]
    assert sorted(failing_tests) == sorted(tests), "every test cell of the blank notebook should fail"
    for index in tests:
        error = next(o for o in notebook.cells[index].outputs if o.get("output_type") == "error")
        assert error["ename"] == "NotImplementedError", (
            f"test cell {index} of the blank notebook: expected NotImplementedError, got {error['ename']}: {error['evalue']}"
        )


def test_reference_notebook_runs_without_errors(graded_lab1):
    """Every cell of the solution runs cleanly in grading mode (on the synthetic stand-in here)."""
    notebook = graded_lab1.autograded_notebook("reference")
    errors = [
        (index, out["ename"], out["evalue"])
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"cells of the reference solution that failed: {errors}"
