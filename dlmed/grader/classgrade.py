"""Grade a whole class: ``dlmed grade LAB`` (README, "Grading a class").

:class:`ClassGrader` runs the steps; each lives in its own module:

1. **find the submissions** (:mod:`dlmed.grader.submissions`): import LMS zip exports with
   nbgrader's ``zip_collect``, list the students, fingerprint each submission;
2. **stage and repair** each (:mod:`dlmed.grader.repair`): what nbgrader cannot read is
   repaired against the lab as the gradebook knows it (:mod:`dlmed.grader.lab`), each repair
   a note; nbgrader's own ``Autograde`` converter then sanitizes it (:mod:`dlmed.grader.gradebook`);
3. **run it in a sandbox** (:mod:`dlmed.grader.runner`, :mod:`dlmed.grader.sandbox`), in
   parallel over the machine's cores, after checking the instructor's solution there (the
   first submissions are staged meanwhile);
4. **record it into the gradebook** with the same converter (:mod:`dlmed.grader.gradebook`);
5. **keep the journal** (:mod:`dlmed.grader.journal`): each finished student is noted at once
   in ``grading/<lab>/results/<student>.json``, so a rerun skips what is up to date
   (``--force`` grades everything again) and an interrupted run continues where it stopped.

Then feedback (``nbgrader generate_feedback``), the comparison of what students wrote, pair by
pair and with the published solution (:mod:`dlmed.grader.similarity`), and the class report
(:mod:`dlmed.grader.report`).
"""

import concurrent.futures
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat

from dlmed import course
from dlmed.grader import repair, sandbox, submissions
from dlmed.grader.gradebook import GradebookRecorder
from dlmed.grader.journal import Journal, StudentResult
from dlmed.grader.lab import load_lab
from dlmed.grader.runner import SandboxRunner, choose_isolation, start_zygote

#: Instructor-only working folder of the grader, in the course root (never in git).
GRADING_FOLDER = "grading"


@dataclasses.dataclass
class GradeSettings:
    """How ``dlmed grade`` runs (the command's options)."""

    lab: str
    jobs: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    limits: sandbox.Limits = dataclasses.field(default_factory=sandbox.Limits)
    isolation: str = "auto"
    force: bool = False
    zips: Sequence[Path] = ()
    feedback: bool = True
    check_reference: bool = True
    data_dir: Optional[Path] = None
    students: Optional[Sequence[str]] = None
    progress: bool = True
    hide: Sequence[Path] = ()
    warm_start: bool = True


class ClassGrader:
    """Grades every submission of one lab; see the module's docstring. Use :func:`grade_class`."""

    def __init__(self, root: Path, settings: GradeSettings):
        self.root = Path(root).resolve()
        self.settings = settings
        self.lab = settings.lab
        self.folder = self.root / GRADING_FOLDER / self.lab
        self.journal = Journal(self.folder)
        self.staged_folder = self.folder / "staged"

    def run(self) -> List[StudentResult]:
        """Grade every submission; return the outcomes in student order."""
        settings = self.settings
        for folder in (self.folder, self.journal.results_folder, self.staged_folder):
            folder.mkdir(parents=True, exist_ok=True)
        isolation = choose_isolation(settings.isolation)
        zygote = start_zygote(settings, isolation[0])  # its imports overlap the gradebook's set-up below
        try:
            return self._run(isolation, zygote)
        finally:
            if zygote is not None:
                zygote.close()

    def _run(self, isolation, zygote) -> List[StudentResult]:
        settings = self.settings
        self.gradebook = GradebookRecorder(self.root, self.lab, self.folder, self.staged_folder)
        if settings.zips:
            submissions.import_zips(self.root, self.lab, settings.zips, self.folder)
        self.lab_info = load_lab(self.gradebook.db_url, self.root, self.lab)
        students = submissions.list_students(self.gradebook.submitted_folder, self.lab, settings.students)
        self.in_gradebook = self.gradebook.students_with_submission()
        self.runner = SandboxRunner(self.root, settings, self.gradebook.db_url, self.gradebook.exchange_root, isolation, zygote)
        self.journal.log(f"isolation: {self.runner.isolation}: {self.runner.isolation_reason}")
        self.journal.log(f"grading {len(students)} submissions of {self.lab} with {settings.jobs} parallel kernels; "
                         f"limits: {settings.limits.describe()}")
        _say(f"Isolation '{self.runner.isolation}': {self.runner.isolation_reason}")
        if self.runner.isolation == "basic":
            print("WARNING: student code is not isolated from your files and the network ('basic' isolation).",
                  file=sys.stderr, flush=True)
        _say(f"Grading {len(students)} submissions of {self.lab}: {settings.jobs} at a time, "
             f"isolation '{self.runner.isolation}', {settings.limits.describe()}.")
        try:
            early = self._prepare_while_getting_ready(students)
            outcomes = self._grade_all(students, early)
        finally:
            self.runner.close()
        return [outcomes[s] for s in students]

    def _get_ready(self, students: List[str]):
        """Wait for the zygote, then check the grading environment with the instructor's solution."""
        if self.runner.zygote is not None and students:
            problem = self.runner.warm_start_problem()
            self.journal.log("warm starts: " + (f"off, {problem}" if problem else
                                                "kernels and supervisors are forked from a zygote"))
        if self.settings.check_reference and students:
            _say("Checking the grading environment with the instructor's solution ...")
            result = self.runner.check_reference(self.root / "source" / self.lab / self.lab_info.notebook_name, self.lab)
            self.journal.log(f"reference solution passes every test in {result.seconds:.1f} s")

    def _prepare_while_getting_ready(self, students: List[str]) -> Dict[str, tuple]:
        """Get ready (:meth:`_get_ready`, in a thread) and meanwhile prepare submissions; return them by student.

        The zygote's imports and the reference check keep one core busy, and the grader would
        wait: it stages and sanitizes submissions meanwhile, in grading order, until ready.
        Only students the gradebook has no submission of yet: should the check fail, those
        prepared are taken out of the gradebook again, and no earlier grade is touched.
        """
        early: Dict[str, tuple] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            ready = pool.submit(self._get_ready, students)
            try:
                for student in students:
                    if ready.done():
                        break
                    if student in self.in_gradebook:
                        continue
                    started = time.monotonic()
                    early[student] = (self.prepare(student), time.monotonic() - started)
                ready.result()
            except BaseException:
                sandbox.stop_all()  # an interrupt: the reference check's sandbox ends too, and with it the thread
                undone = [student for student, (prepared, _) in early.items() if not isinstance(prepared, StudentResult)]
                for student in undone:  # sanitized, never run: no submission the gradebook may keep
                    self.gradebook.forget_submission(student)
                self.journal.log(f"stopped before grading; submissions prepared meanwhile and taken out of the "
                                 f"gradebook again: {len(undone)}")
                raise
        if early:
            self.journal.log(f"{len(early)} submissions prepared while the grader got ready")
        return early

    # -- one student ----------------------------------------------------------------------

    def prepare(self, student: str):
        """Stage and sanitize one submission; return (job, notes, fingerprint, path) or a StudentResult when done already."""
        submission = self.gradebook.submitted_folder / student / self.lab
        fingerprint = submissions.fingerprint(submission, self.lab_info.fingerprint, self.settings.limits)
        if not self.settings.force:
            reused = self.journal.up_to_date(student, fingerprint, student in self.in_gradebook,
                                             self.gradebook.autograded_folder(student) / self.lab_info.notebook_name)
            if reused is not None:
                return reused
        notes = []
        try:
            notes = repair.stage(submission, self.staged_folder / student / self.lab, self.lab_info)
            sanitized_path = self.gradebook.sanitize(student)
        except repair.UngradableSubmission as problem:
            return self._finish(self.gradebook.record_ungradable(student, str(problem), notes, fingerprint,
                                                                 self.lab_info.notebook_name))
        except Exception as problem:  # nbgrader refused the notebook: zero, with the reason
            return self._finish(self.gradebook.record_ungradable(
                student, f"nbgrader could not prepare it: {type(problem).__name__}: {problem}", notes, fingerprint,
                self.lab_info.notebook_name))
        notebook = nbformat.read(str(sanitized_path), as_version=4)
        return self.runner.job(notebook, sanitized_path.parent), notes, fingerprint, sanitized_path

    def record(self, student: str, prepared, result: sandbox.SandboxResult, prepare_seconds: float = 0.0) -> StudentResult:
        """Score an executed notebook into the gradebook and the journal (with where the time went)."""
        _, notes, fingerprint, sanitized_path = prepared
        started = time.monotonic()
        outcome = self.gradebook.record(student, sanitized_path, result, notes, fingerprint, self.lab_info.notebook_name)
        outcome.timings = {
            "prepare": prepare_seconds,  # staging, repairs, nbgrader's sanitize step
            "supervisor_start": max(0.0, result.wall_seconds - result.seconds),  # the sandbox's process, until it runs
            "kernel_start": result.startup_seconds,  # namespaces, folders, the kernel until it answers
            "cells": max(0.0, result.seconds - result.startup_seconds),  # guard and hidden tests included
            "hidden_tests": sum(result.hidden_seconds),
            "record": time.monotonic() - started,  # made inert, nbgrader's scoring step, gradebook
        }
        return self._finish(outcome)

    def _finish(self, outcome: StudentResult) -> StudentResult:
        """Log the outcome and note it in the journal."""
        if outcome.status == "graded":
            self.journal.log(f"{outcome.student}: {outcome.points:g} points in {outcome.seconds:.1f} s"
                             + (f"; stopped: {outcome.reason}" if outcome.reason else ""))
        elif outcome.status == "not gradable":
            self.journal.log(f"{outcome.student}: NOT GRADABLE ({outcome.reason})")
        else:
            self.journal.log(f"{outcome.student}: GRADER ERROR {outcome.reason}")
        self.journal.write(outcome)
        return outcome

    # -- all students, in parallel ---------------------------------------------------------

    def _grade_all(self, students: List[str], early: Dict[str, tuple]) -> Dict[str, StudentResult]:
        """Grade ``students`` in parallel sandboxes; ``early``: {student: (prepared, seconds)} prepared already."""
        from tqdm.auto import tqdm

        outcomes: Dict[str, StudentResult] = {}
        pending = list(students)
        running: Dict[concurrent.futures.Future, Tuple[str, tuple, float]] = {}
        bar = tqdm(total=len(students), unit="student", desc=f"Grading {self.lab}",
                   disable=not self.settings.progress, dynamic_ncols=True)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.jobs)
        try:
            while pending or running:
                # One more job than slots, so a freed slot starts at once.
                while pending and len(running) <= self.settings.jobs:
                    student = pending.pop(0)
                    if student in early:
                        prepared, prepare_seconds = early.pop(student)
                    else:
                        prepare_started = time.monotonic()
                        prepared = self.prepare(student)
                        prepare_seconds = time.monotonic() - prepare_started
                    if isinstance(prepared, StudentResult):
                        outcomes[student] = prepared
                        bar.update()
                        continue
                    running[pool.submit(self.runner.run, prepared[0])] = (student, prepared, prepare_seconds)
                if not running:
                    continue
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    student, prepared, prepare_seconds = running.pop(future)
                    outcomes[student] = self.record(student, prepared, future.result(), prepare_seconds)
                    bar.update()
                    bar.set_postfix_str(f"last: {student} {outcomes[student].points:g} pts")
        except BaseException:
            for future in running:
                future.cancel()
            sandbox.stop_all()  # kill running sandboxes; what was recorded stays recorded
            raise
        finally:
            pool.shutdown(wait=True)
            bar.close()
        return outcomes


def _say(message: str):
    print(message, flush=True)


def grade_class(root: Path, settings: GradeSettings) -> List[StudentResult]:
    """Grade all submissions of ``settings.lab`` in the course at ``root``; write feedback and the report.

    Returns the students' outcomes. Raises :class:`dlmed.course.CourseError` when the
    course is not ready (no generated assignment, the solution fails its tests, ...).
    """
    from dlmed.grader import report, similarity

    root = Path(root).resolve()
    previous = Path.cwd()
    os.chdir(root)  # nbgrader reads its configuration from the working folder too
    try:
        grader = ClassGrader(root, settings)
        started = time.monotonic()
        outcomes = grader.run()
        seconds = time.monotonic() - started
        if settings.feedback and outcomes:
            _say("Writing feedback (nbgrader generate_feedback) ...")
            course.run_nbgrader(["generate_feedback", settings.lab, "--force"], root,
                                log_name=str(grader.folder / "feedback.log"))
        similar = None
        if outcomes:
            try:
                similar = similarity.compare_submissions(root, grader.lab_info, [o.student for o in outcomes],
                                                         grader.gradebook.autograded_folder)
            except (OSError, ValueError) as problem:  # release/ unreadable: the grades and the report still count
                grader.journal.log(f"similarity not computed: {type(problem).__name__}: {problem}")
                _say(f"Similar submissions not compared: {problem} (is release/{settings.lab}/ there?)")
        if similar is not None:
            grader.journal.log(f"similarity: {len(similar.prints) - 1} submissions compared in {similar.seconds:.2f} s; "
                               f"{len(similar.flagged)} pairs flagged, "
                               f"{sum(p.flagged for p in similar.solution.values())} close to the solution")
        paths = report.write_report(grader.folder, grader.lab_info, outcomes, seconds=seconds,
                                    isolation=grader.runner.isolation, isolation_reason=grader.runner.isolation_reason,
                                    limits=settings.limits, jobs=settings.jobs, similarity=similar)
        _say(report.summary(grader.lab_info, outcomes, seconds))
        if similar is not None and (similar.flagged or any(p.flagged for p in similar.solution.values())):
            _say(f"  {len(similar.flagged)} pairs of similar submissions, "
                 f"{sum(p.flagged for p in similar.solution.values())} submissions close to the published solution: "
                 f"see 'Similar submissions' in the report.")
        _say(f"Report: {paths['html']} (scores: {paths['csv']})")
        return outcomes
    finally:
        os.chdir(previous)
