"""Shared fixtures: a scratch nbgrader course in which Lab 1 is generated and graded once."""

import dataclasses
import os
from pathlib import Path
from typing import Dict

import nbformat
import pytest

from dlmed import course

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@dataclasses.dataclass
class GradedLab:
    """A lab generated, autograded and given feedback in a scratch course."""

    lab: str
    workspace: Path
    notebook_name: str
    scores: course.Scores
    expected: Dict[str, Dict[str, float]]

    def autograded_notebook(self, student):
        """Return the notebook nbgrader executed for ``student``."""
        return nbformat.read(str(self.workspace / "autograded" / student / self.lab / self.notebook_name), as_version=4)


@pytest.fixture(scope="session")
def grading_data_dir(tmp_path_factory):
    """A fresh data directory for notebooks executed by the tests (the stand-in is made there)."""
    folder = tmp_path_factory.mktemp("dlmed-data")
    previous = os.environ.get("DLMED_DATA")
    os.environ["DLMED_DATA"] = str(folder)  # inherited by nbgrader and its kernels
    yield folder
    if previous is None:
        os.environ.pop("DLMED_DATA", None)
    else:
        os.environ["DLMED_DATA"] = previous


@pytest.fixture(scope="session")
def graded_lab1(tmp_path_factory, grading_data_dir):
    """Lab 1 in a scratch course: generated, every fixture submission autograded, feedback made."""
    from tests.submissions import lab1 as fixtures

    lab = "lab1"
    workspace = course.make_workspace(PROJECT_ROOT, tmp_path_factory.mktemp("course") / "course")
    course.generate(workspace, [lab])
    name = course.lab_notebook_name(workspace, lab)
    release_notebook = workspace / "release" / lab / name
    course.add_submission(workspace, lab, "reference", workspace / "source" / lab / name, name)
    course.add_submission(workspace, lab, "blank", release_notebook, name)
    expected = {
        "reference": {cell: float(points) for cell, points in fixtures.FULL_MARKS.items()},
        "blank": {cell: 0.0 for cell in fixtures.FULL_MARKS},
    }
    for student, submission in fixtures.SUBMISSIONS.items():
        folder = workspace / "submitted" / student / lab
        folder.mkdir(parents=True)
        nbformat.write(fixtures.build_notebook(release_notebook, submission), str(folder / name))
        expected[student] = submission.expected_scores()
    scores = course.autograde(workspace, lab, expected)
    course.run_nbgrader(["generate_feedback", lab, "--force"], workspace)
    return GradedLab(lab, workspace, name, scores, expected)
