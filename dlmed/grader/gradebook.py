"""Recording into nbgrader's gradebook, with nbgrader's own code.

nbgrader's ``Autograde`` converter is split around the sandbox (:func:`_staged_autograde_class`):
before it, its sanitize steps (restore locked cells from the gradebook by checksum, kernel,
ids; this also creates the submission in the gradebook); after it, its scoring steps
(``SaveAutoGrades`` and the rest of the autograde preprocessors, without ``Execute``) into
the gradebook (SQLite or Postgres, whatever ``CourseDirectory.db_url`` says) and
``autograded/``. So ``nbgrader export``, the formgrader and ``generate_feedback`` work as
after ``nbgrader autograde``. Only the grader's main process writes the gradebook.
"""

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Dict, List

import nbformat

from dlmed import course
from dlmed.course.grading import cell_failure, graded_test_cells
from dlmed.grader.journal import Scores, StudentResult
from dlmed.grader.sanitize import sanitize_notebook


def _staged_autograde_class():
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import Autograde
    from nbgrader.converters.base import BaseConverter
    from nbgrader.preprocessors import Execute

    class StagedAutograde(Autograde):
        """nbgrader's Autograde in two steps, so the execution in between can happen elsewhere.

        :meth:`sanitize` does what ``nbgrader autograde`` does before executing (create the
        submission in the gradebook, copy files, run the sanitize preprocessors) and
        :meth:`score` what it does after (the autograde preprocessors except ``Execute``).
        """

        def _setup_writers(self):
            self.writer = FilesWriter(parent=self, config=self.config)
            self.exporter = self.exporter_class(parent=self, config=self.config)

        def sanitize(self, student: str) -> Path:
            """Sanitize ``student``'s staged submission into autograded/; return the notebook's path."""
            self.coursedir.student_id = student
            self._sanitizing = True
            self.init_notebooks()
            self._setup_writers()
            [(folder, notebooks)] = self.assignments.items()
            self.notebooks = sorted(notebooks)
            lab = self.coursedir.assignment_id
            self.init_destination(lab, student)
            self.run_pre_convert_hook()
            self.init_assignment(lab, student)
            self._init_preprocessors()
            for notebook in self.notebooks:
                BaseConverter.convert_single_notebook(self, notebook)
            return Path(self._format_dest(lab, student)) / Path(self.notebooks[0]).name

        def score(self, student: str, notebook: Path):
            """Score the executed notebook at ``notebook`` (in autograded/) into the gradebook."""
            from nbgrader.utils import setenv

            self.coursedir.student_id = student
            self._sanitizing = False
            self._setup_writers()
            self._init_preprocessors()
            with setenv(NBGRADER_EXECUTION="autograde"):
                BaseConverter.convert_single_notebook(self, str(notebook))
            self.set_permissions(self.coursedir.assignment_id, student)
            self.run_post_convert_hook()

        def _init_preprocessors(self):
            super()._init_preprocessors()
            self.exporter._preprocessors = [p for p in self.exporter._preprocessors if not isinstance(p, Execute)]

    return StagedAutograde


def test_failures(notebook) -> Dict[str, str]:
    """{test grade_id: why it scores 0} for the failing test cells of an executed notebook.

    The reason is the first error's name and the first line of its message (an assert's
    "what was checked: expected vs got"), or the first line written to stderr.
    """
    failures = {}
    for index in graded_test_cells(notebook):
        cell = notebook.cells[index]
        if not cell_failure(cell):
            continue
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            message = (errors[0].get("evalue") or "").strip().split("\n")[0]
            failures[cell.metadata["nbgrader"]["grade_id"]] = f"{errors[0].get('ename')}: {message}".rstrip(": ")
        else:
            stderr = next(o for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stderr")
            failures[cell.metadata["nbgrader"]["grade_id"]] = "wrote to stderr: " + stderr.get("text", "").strip().split("\n")[0]
    return failures


class GradebookRecorder:
    """nbgrader's side of grading one lab: sanitize before the sandbox, score after, zero what cannot run."""

    def __init__(self, root: Path, lab: str, folder: Path, staged_folder: Path):
        from nbgrader.apps import AutogradeApp
        from sqlalchemy.exc import SAWarning

        # nbgrader 0.9's gradebook code triggers these with SQLAlchemy 2 ("not in session,
        # add operation ... will not proceed"); harmless, and `nbgrader autograde` shows them
        # only in its log. Keep the instructor's terminal readable.
        warnings.filterwarnings("ignore", category=SAWarning)

        self.root = root
        self.lab = lab
        self.app = AutogradeApp()
        self.app.initialize([], root=str(root))
        self.coursedir = self.app.coursedir
        self.coursedir.assignment_id = lab
        self.db_url = self.coursedir.db_url
        handler = logging.FileHandler(folder / "nbgrader.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(name)s %(levelname)s] %(message)s"))
        self.app.log.handlers = [handler]
        self.app.log.propagate = False
        self.converter = _staged_autograde_class()(coursedir=self.coursedir, parent=self.app)
        self.converter.force = True
        self.submitted_folder = Path(self.coursedir.format_path(self.coursedir.submitted_directory, ".", ".")).resolve()
        # The converter reads the repaired copies, never the students' own files.
        self.coursedir.submitted_directory = str(staged_folder.relative_to(root))

    @property
    def exchange_root(self) -> str:
        """The nbgrader exchange folder (the sandboxes hide it)."""
        return self.app.config.get("Exchange", {}).get("root", "/srv/nbgrader/exchange")

    def autograded_folder(self, student: str) -> Path:
        """autograded/<student>/<lab>/."""
        return Path(self.coursedir.format_path(self.coursedir.autograded_directory, student, self.lab))

    def sanitize(self, student: str) -> Path:
        """Let nbgrader sanitize the staged submission into autograded/; return the notebook's path."""
        return self.converter.sanitize(student)

    def record(self, student: str, sanitized_path: Path, result, notes: List[str], fingerprint: str,
               notebook_name: str) -> StudentResult:
        """Score the notebook a sandbox executed (``result``) into the gradebook; return the outcome."""
        if result.error or result.notebook is None:
            return StudentResult(student, "grader error", reason=result.error or "no notebook came back",
                                 notes=notes, seconds=result.seconds, fingerprint=fingerprint)
        if sanitized_path.exists():
            os.chmod(sanitized_path, 0o644)
        executed = nbformat.from_dict(result.notebook)
        # Outputs and written answers reach the instructor's browser (Formgrader, feedback):
        # inert from here on. nbgrader's scoring runs the same step again (nbgrader_config.py).
        notes = notes + [f"made inert for the browser: {note}" for note in sanitize_notebook(executed)]
        nbformat.write(executed, str(sanitized_path))
        try:
            self.converter.score(student, sanitized_path)
        except Exception as problem:  # nbgrader refused the notebook: zero, with the reason
            return self.record_ungradable(student, f"nbgrader could not score it: {type(problem).__name__}: {problem}",
                                          notes, fingerprint, notebook_name)
        failures = test_failures(executed)
        return StudentResult(student, "graded", scores=self.read_scores(student, notebook_name),
                             reason=result.stop_reason or "", notes=notes, events=result.events, failures=failures,
                             seconds=result.seconds, hidden_seconds=result.hidden_seconds,
                             peak_memory=result.peak_memory, fingerprint=fingerprint)

    def record_ungradable(self, student: str, reason: str, notes: List[str], fingerprint: str,
                          notebook_name: str) -> StudentResult:
        """Give every cell of the submission 0 in the gradebook (as nbgrader does for a missing notebook)."""
        from nbgrader.api import Gradebook

        shutil.rmtree(self.autograded_folder(student), ignore_errors=True)  # no stale notebook from an earlier run
        timestamp = self.coursedir.get_existing_timestamp(str(self.submitted_folder / student / self.lab))
        with Gradebook(self.db_url, self.coursedir.course_id) as gradebook:
            gradebook.update_or_create_student(student)
            kwargs = {"timestamp": timestamp} if timestamp else {}
            submission = gradebook.update_or_create_submission(self.lab, student, **kwargs)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
            gradebook.db.commit()
        return StudentResult(student, "not gradable", scores=self.read_scores(student, notebook_name), reason=reason,
                             notes=notes, fingerprint=fingerprint)

    def forget_submission(self, student: str):
        """Take a submission that was sanitized but never run out of the gradebook and autograded/ again."""
        from nbgrader.api import Gradebook, MissingEntry

        shutil.rmtree(self.autograded_folder(student), ignore_errors=True)
        with Gradebook(self.db_url, self.coursedir.course_id) as gradebook:
            try:
                gradebook.remove_submission(self.lab, student)
            except MissingEntry:
                pass  # nbgrader refused it before it was created

    def students_with_submission(self) -> set:
        """Students the gradebook has a submission of this lab for (a journal entry alone is not enough)."""
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url, self.coursedir.course_id) as gradebook:
            return {submission.student.id for submission in gradebook.find_assignment(self.lab).submissions}

    def read_scores(self, student: str, notebook_name: str) -> Scores:
        """{grade_id: (autograded score or None for hand-graded cells, max score)} from the gradebook."""
        scores = course.read_scores(self.root, self.lab, notebook_name, [student], db_url=self.db_url)
        return scores[student]
