"""Grades back to the learning platform: ``dlmed export LAB`` (README, "Grades back to the learning platform").

Reads the gradebook (nbgrader's database: autograded scores plus the written answers graded
by hand in the Formgrader; a manual score replaces the automatic one, as in nbgrader) and
writes, into ``grading/<lab>/export/``:

- ``canvas.csv``: Canvas's gradebook import (Grades, Import): the columns ``Student``, ``ID``,
  ``SIS User ID``, ``SIS Login ID``, ``Section``, then one column for the assignment
  (``<name>`` creates a new assignment, ``<name> (<Canvas assignment id>)`` fills an
  existing one), a ``Points Possible`` row first. ``ID`` is the Canvas user id that the
  submission's file name in Canvas's zip carried (``<login>_<user id>_<submission id>_<file>``);
  students who did not come from a Canvas zip get their nbgrader id as ``SIS Login ID``.
- ``moodle.csv``: Moodle's assignment grading worksheet (Assignment, View all submissions,
  Grading action: Upload grading worksheet), the file Moodle itself offers for offline
  grading: ``Identifier`` (``Participant <n>``, the number in the folder names of Moodle's
  zip ``<Full Name>_<n>_assignsubmission_file_``), ``Full name``, ``Email address``,
  ``Status``, ``Grade``, ``Maximum Grade``, ``Grade can be changed``, ``Last modified
  (submission)``, ``Last modified (grade)``, ``Feedback comments``. Only students from a
  Moodle zip have an identifier Moodle can match.
- ``moodle_gradebook.csv``: Moodle's course gradebook import (Grades, Import, CSV file):
  ``Email address``, ``Full name`` and the grade column; map ``Email address`` to the user
  field ``Email address`` and the grade column to the grade item. Rows only for students
  whose e-mail the nbgrader gradebook knows (``nbgrader db student import``): Moodle's zip
  holds names, not e-mails.
- ``grades.csv``: nbgrader's own ``nbgrader export`` layout, for this lab.

The platform's ids are read back from the zips ``dlmed grade --zip`` (or ``nbgrader
zip_collect``) imported, kept in ``downloaded/<lab>/archive/`` and ``extracted/``; an
``lms_user_id`` set in nbgrader's gradebook is used where no zip says otherwise. Every text
cell goes through :func:`dlmed.grader.sanitize.spreadsheet_safe`: names come from the
platform and ids from file names, and a spreadsheet must not run them as formulas.
"""

import csv
import dataclasses
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

from dlmed import course
from dlmed.course.grading import lms_identity
from dlmed.grader.sanitize import spreadsheet_safe

CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_WORKSHEET_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                            "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                            "Feedback comments"]
NBGRADER_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                    "raw_score", "late_submission_penalty", "score", "max_score"]


@dataclasses.dataclass
class StudentGrade:
    """One student's grade for the lab, with who they are on the platform."""

    student: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    platform: str = ""  # canvas, moodle, folder or "" (not from a zip)
    platform_id: str = ""
    platform_name: str = ""
    submitted: bool = False
    timestamp: str = ""
    raw_score: float = 0.0
    penalty: float = 0.0
    needs_manual_grade: bool = False
    max_score: float = 0.0
    duedate: str = ""

    @property
    def score(self) -> float:
        return max(0.0, self.raw_score - self.penalty)

    @property
    def full_name(self) -> str:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or self.platform_name or self.student


def platform_identities(root: Path, lab: str) -> Dict[str, dict]:
    """{nbgrader student id: lms_identity(...)} from the zips imported for ``lab`` and what they extracted to."""
    found: Dict[str, dict] = {}
    downloaded = Path(root) / "downloaded" / lab
    paths: List[str] = []
    extracted = downloaded / "extracted"
    if extracted.is_dir():
        paths += [str(p.relative_to(downloaded)) for p in sorted(extracted.rglob("*")) if p.is_file()]
    archive = downloaded / "archive"
    for item in sorted(archive.iterdir()) if archive.is_dir() else ():
        if zipfile.is_zipfile(item):
            with zipfile.ZipFile(item) as members:
                paths += [f"extracted/{item.stem}/{name}" for name in members.namelist() if not name.endswith("/")]
        elif item.is_file():
            paths.append(f"archive/{item.name}")
    for path in paths:
        if not path.endswith(".ipynb"):
            continue
        identity = lms_identity(path)
        if identity is not None:
            found[identity["student_id"]] = identity
    return found


def read_grades(root: Path, lab: str, db_url: str, course_id: str = "default_course") -> List[StudentGrade]:
    """Every student the gradebook knows, with their grade for ``lab`` (0 without a submission, as nbgrader)."""
    from nbgrader.api import Gradebook, MissingEntry

    identities = platform_identities(root, lab)
    grades = []
    with Gradebook(db_url, course_id) as gradebook:
        try:
            assignment = gradebook.find_assignment(lab)
        except MissingEntry:
            raise course.CourseError(f"the gradebook has no assignment {lab}: grade it first (dlmed grade {lab})") from None
        max_score, duedate = float(assignment.max_score or 0.0), str(assignment.duedate or "")
        for student in gradebook.students:
            identity = identities.get(student.id)
            grade = StudentGrade(student.id, student.first_name or "", student.last_name or "", student.email or "",
                                 max_score=max_score, duedate=duedate)
            if identity:
                grade.platform, grade.platform_id, grade.platform_name = (
                    identity["platform"], identity["platform_id"], identity["name"])
            elif student.lms_user_id:
                grade.platform, grade.platform_id = "gradebook", student.lms_user_id
            try:
                submission = gradebook.find_submission(lab, student.id)
            except MissingEntry:
                grades.append(grade)
                continue
            grade.submitted = True
            grade.timestamp = str(submission.timestamp or "")
            grade.raw_score = float(submission.score or 0.0)
            grade.penalty = float(submission.late_submission_penalty or 0.0)
            grade.needs_manual_grade = bool(submission.needs_manual_grade)
            grades.append(grade)
    return grades


def _number(value: float) -> str:
    """A score as platforms read it: plain decimal, no exponent, no trailing zeros."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _write(path: Path, header: List[str], rows: List[list]):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([spreadsheet_safe(cell) for cell in header])
        for row in rows:
            writer.writerow([spreadsheet_safe(cell) for cell in row])


def write_exports(grades: List[StudentGrade], lab: str, folder: Path, canvas_assignment: Optional[str] = None,
                  max_score: Optional[float] = None) -> Dict[str, Path]:
    """Write canvas.csv, moodle.csv, moodle_gradebook.csv and grades.csv into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if max_score is None:
        max_score = grades[0].max_score if grades else 0.0
    title = canvas_assignment or lab
    paths = {name: folder / f"{name}.csv" for name in ("canvas", "moodle", "moodle_gradebook", "grades")}

    canvas_rows = [["Points Possible", "", "", "", "", _number(max_score)]]
    for g in grades:
        canvas_id = g.platform_id if g.platform in ("canvas", "gradebook") else ""
        login = "" if canvas_id else g.student
        student = f"{g.last_name}, {g.first_name}" if g.last_name and g.first_name else (g.platform_name or g.student)
        canvas_rows.append([student, canvas_id, "", login, "", _number(g.score)])
    _write(paths["canvas"], CANVAS_COLUMNS + [title], canvas_rows)

    moodle_rows = []
    for g in grades:
        if g.platform != "moodle":
            continue
        moodle_rows.append([f"Participant {g.platform_id}", g.full_name, g.email,
                            "Submitted for grading" if g.submitted else "No submission", _number(g.score),
                            _number(max_score), "Yes", g.timestamp, "", ""])
    _write(paths["moodle"], MOODLE_WORKSHEET_COLUMNS, moodle_rows)

    _write(paths["moodle_gradebook"], ["Email address", "Full name", title],
           [[g.email, g.full_name, _number(g.score)] for g in grades if g.email])

    _write(paths["grades"], NBGRADER_COLUMNS,
           [[lab, g.duedate, g.timestamp, g.student, g.last_name, g.first_name, g.email,
             float(g.raw_score), float(g.penalty), float(g.score), float(max_score)] for g in grades])
    return paths


def export_lab(root: Path, lab: str, canvas_assignment: Optional[str] = None) -> Dict[str, Path]:
    """``dlmed export LAB``: read the gradebook of the course at ``root`` and write the CSV files."""
    import os

    from nbgrader.apps import NbGraderApp

    root = Path(root).resolve()
    previous = Path.cwd()
    os.chdir(root)  # nbgrader reads nbgrader_config.py from the working folder
    try:
        app = NbGraderApp()
        app.initialize([])
        grades = read_grades(root, lab, app.coursedir.db_url, app.coursedir.course_id)
    finally:
        os.chdir(previous)
    paths = write_exports(grades, lab, root / "grading" / lab / "export", canvas_assignment)
    pending = [g.student for g in grades if g.needs_manual_grade]
    print(f"{lab}: {len(grades)} students, {sum(g.submitted for g in grades)} with a submission; "
          f"{sum(g.platform == 'canvas' for g in grades)} with a Canvas id, "
          f"{sum(g.platform == 'moodle' for g in grades)} with a Moodle participant number.")
    if pending:
        print(f"  {len(pending)} submissions still have written answers to grade in the Formgrader "
              f"(exported with what is graded so far): {', '.join(pending[:10])}{' ...' if len(pending) > 10 else ''}")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return paths
