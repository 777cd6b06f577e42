"""Shared fixtures: a scratch nbgrader course in which every lab is generated and graded once."""

import dataclasses
import importlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict

import nbformat
import pytest
import requests

from dlmed import course

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LABS = course.list_labs(PROJECT_ROOT)


def lab_fixtures(lab):
    """The fixture-submission module of a lab: tests/submissions/<lab>.py."""
    return importlib.import_module(f"tests.submissions.{lab}")


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

    def release_notebook(self):
        """Path of the lab's regenerated student notebook."""
        return self.workspace / "release" / self.lab / self.notebook_name


# --- unit-test fixtures: data directories and the network ---------------------------------


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty (not yet created) data directory, also set as DLMED_DATA."""
    folder = tmp_path / "dlmed-data"
    monkeypatch.setenv("DLMED_DATA", str(folder))
    return folder


def _refuse_requests(monkeypatch, refuse):
    """Route every HTTP request of the requests library (pooch downloads with it) to ``refuse``."""

    def send(self, request, **kwargs):
        return refuse(request.url)

    monkeypatch.setattr(requests.sessions.Session, "send", send)


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to use the network (urlopen, requests) fail the test; records the URLs."""
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise AssertionError(f"the network was used: {url!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    _refuse_requests(monkeypatch, refuse)
    return calls


@pytest.fixture
def offline(monkeypatch):
    """Make urlopen and requests fail the way they do without internet."""

    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def unreachable_requests(url):
        raise requests.exceptions.ConnectionError(f"{url}: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    _refuse_requests(monkeypatch, unreachable_requests)


# --- whole-lab grading ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def grading_data_dir(tmp_path_factory):
    """A fresh data directory for notebooks executed by the tests (stand-ins are made there)."""
    folder = tmp_path_factory.mktemp("dlmed-data")
    previous = os.environ.get("DLMED_DATA")
    os.environ["DLMED_DATA"] = str(folder)  # inherited by nbgrader and its kernels
    yield folder
    if previous is None:
        os.environ.pop("DLMED_DATA", None)
    else:
        os.environ["DLMED_DATA"] = previous


@pytest.fixture(scope="session")
def graded_labs(tmp_path_factory, grading_data_dir):
    """Every lab in a scratch course: generated, reference/blank/fixture submissions autograded, feedback made."""
    workspace = course.make_workspace(PROJECT_ROOT, tmp_path_factory.mktemp("course") / "course")
    course.generate(workspace, LABS)
    graded = {}
    for lab in LABS:
        fixtures = lab_fixtures(lab)
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
            expected[student] = submission.expected_scores(fixtures.FULL_MARKS)
        scores = course.autograde(workspace, lab, expected)
        course.run_nbgrader(["generate_feedback", lab, "--force"], workspace)
        graded[lab] = GradedLab(lab, workspace, name, scores, expected)
    return graded
