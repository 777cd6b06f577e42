"""Students' self-check: `pytest` on a notebook reports one test per graded cell with its message."""

import re
import subprocess
import sys

import nbformat
import pytest

from tests.conftest import LABS, lab_fixtures
from tests.submissions import lab1 as fixtures

pytestmark = pytest.mark.slow


def _run_pytest_on(notebook_path, cwd):
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(notebook_path)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    return completed.returncode, completed.stdout


def test_pytest_reports_each_graded_cell(graded_labs, tmp_path):
    """A notebook with three visible-test mistakes: 7 cells pass, those 3 fail with expected-vs-got messages."""
    graded_lab1 = graded_labs["lab1"]
    release = graded_lab1.release_notebook()
    notebook = fixtures.build_notebook(release, fixtures.SUBMISSIONS["mistakes_b"])
    path = tmp_path / graded_lab1.notebook_name
    nbformat.write(notebook, str(path))
    returncode, output = _run_pytest_on(path, tmp_path)
    assert returncode == 1, f"pytest exit status: expected 1 (some tests failed), got {returncode}\n{output[-3000:]}"
    summary = output.strip().splitlines()[-1]
    assert re.search(r"\b3 failed, 7 passed\b", summary), f"summary line: expected '3 failed, 7 passed', got {summary!r}"
    for grade_id in ("test_ex6_accuracy_matches_sklearn_with_ties", "test_ex7_confusion_matrix_matches_sklearn",
                     "test_ex8_conv_output_size_matches_conv2d"):
        assert re.search(rf"FAILED .*::{grade_id}", output), f"expected {grade_id} reported as failed\n{output[-3000:]}"
    assert "accuracy of 2 right out of 4: expected 0.5, got 50" in output, "the failing assert message should be shown"
    assert "PASSED" in output and "test_ex1_split_sizes_disjoint_reproducible" in output


@pytest.mark.parametrize("lab", LABS)
def test_pytest_on_the_solution_passes(graded_labs, tmp_path, lab):
    """The solution notebook of every lab passes every graded cell of the self-check."""
    graded = graded_labs[lab]
    path = tmp_path / graded.notebook_name
    path.write_bytes((graded.workspace / "source" / lab / graded.notebook_name).read_bytes())
    returncode, output = _run_pytest_on(path, tmp_path)
    assert returncode == 0, f"pytest on the {lab} solution: expected exit 0, got {returncode}\n{output[-3000:]}"
    expected = len(lab_fixtures(lab).FULL_MARKS)
    assert re.search(rf"\b{expected} passed\b", output.strip().splitlines()[-1]), output[-2000:]
