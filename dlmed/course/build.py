"""Course build steps: regenerate release/ and solutions/, autograde submissions, score tables.

These wrap nbgrader's command line (run as ``python -m nbgrader`` from the course root) so
the main job, the tests and the benchmarks all grade the same way. Each step says which
nbgrader command failed and where its log is.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

#: {student: {grade_id: (score, max_score)}}; score is None for cells graded by hand.
Scores = Dict[str, Dict[str, Tuple[Optional[float], float]]]


class CourseError(RuntimeError):
    """An nbgrader step failed or the course folder is not as expected."""


def find_course_root(start: Optional[Path] = None) -> Path:
    """Return the course root: the nearest folder at or above ``start`` with nbgrader_config.py and source/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file() and (folder / "source").is_dir():
            return folder
    raise CourseError(
        f"no course root found at or above {here}: expected a folder with nbgrader_config.py "
        "and source/. Run this from the workshop's folder."
    )


def list_labs(root: Path) -> List[str]:
    """Return the assignment ids (``lab1``, ``lab2``, ...) that have a folder in source/."""
    return sorted(p.name for p in (Path(root) / "source").iterdir() if p.is_dir() and p.name.startswith("lab"))


def lab_notebook_name(root: Path, lab: str) -> str:
    """Return the file name of a lab's single notebook in source/<lab>/."""
    notebooks = sorted((Path(root) / "source" / lab).glob("*.ipynb"))
    if len(notebooks) != 1:
        raise CourseError(f"source/{lab} must hold exactly one notebook, found {[p.name for p in notebooks]}")
    return notebooks[0].name


def run_nbgrader(args: Iterable[str], course_root: Path, log_name: str = "nbgrader.log") -> None:
    """Run ``python -m nbgrader ARGS`` in ``course_root``; raise CourseError with the log's tail on failure.

    The full output is written to ``course_root/log_name`` (appended).
    """
    args = [str(a) for a in args]
    course_root = Path(course_root)
    # nbgrader runs `alembic` (gradebook migrations) by name: it must find the one installed
    # beside this Python even when the virtual environment is not activated.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    completed = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log_path = course_root / log_name
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ nbgrader {' '.join(args)}\n{completed.stdout}\n")
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.splitlines()[-30:])
        raise CourseError(f"`nbgrader {' '.join(args)}` failed (exit {completed.returncode}); log: {log_path}\n{tail}")


def generate(course_root: Path, labs: Optional[List[str]] = None) -> None:
    """Regenerate release/<lab>/ and solutions/<lab>/ from source/<lab>/ for each lab.

    Needs neither the network nor training: solutions are not executed.
    """
    course_root = Path(course_root)
    for lab in labs or list_labs(course_root):
        run_nbgrader(["generate_assignment", lab, "--force"], course_root)
        run_nbgrader(["generate_solution", lab, "--force"], course_root)


def make_workspace(project_root: Path, workdir: Path) -> Path:
    """Create a scratch course in ``workdir`` (config and source/ copied from the project) and return it.

    Grading reference or test submissions there leaves the instructor's gradebook and
    submitted/ untouched.
    """
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copy2(Path(project_root) / "nbgrader_config.py", workdir / "nbgrader_config.py")
    shutil.copytree(Path(project_root) / "source", workdir / "source")
    return workdir


def add_submission(course_root: Path, lab: str, student: str, notebook: Path, notebook_name: str) -> Path:
    """Copy ``notebook`` into submitted/<student>/<lab>/<notebook_name> and return the new path."""
    folder = Path(course_root) / "submitted" / student / lab
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / notebook_name
    shutil.copy2(notebook, target)
    return target


def read_scores(course_root: Path, lab: str, notebook_name: str, students: Iterable[str],
                db_url: Optional[str] = None) -> Scores:
    """Read per-cell scores of ``students`` for ``lab`` from the gradebook.

    The gradebook is ``db_url`` (any nbgrader database URL), by default the SQLite file
    ``gradebook.db`` in ``course_root``. A student whose notebook nbgrader could not grade
    at all is missing from the result.
    """
    from nbgrader.api import Gradebook, MissingEntry

    notebook_id = Path(notebook_name).stem
    scores: Scores = {}
    with Gradebook(db_url or f"sqlite:///{Path(course_root) / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission_notebook(notebook_id, lab, student)
            except MissingEntry:
                continue
            scores[student] = {
                grade.name: (grade.auto_score if grade.cell.cell_type == "code" else None, grade.max_score)
                for grade in submission.grades
            }
    return scores


def autograde(course_root: Path, lab: str, students: Iterable[str]) -> Scores:
    """Run ``nbgrader autograde`` for ``lab`` on the submitted notebooks and return their scores."""
    students = list(students)
    run_nbgrader(["autograde", lab, "--force"], course_root)
    return read_scores(course_root, lab, lab_notebook_name(course_root, lab), students)


def autograde_total(cell_scores: Dict[str, Tuple[Optional[float], float]]) -> Tuple[float, float]:
    """Return (points, max_points) over the autograded cells of one student's scores."""
    graded = [(score, maximum) for score, maximum in cell_scores.values() if score is not None]
    return sum(s for s, _ in graded), sum(m for _, m in graded)


def format_score_table(lab: str, scores: Scores) -> str:
    """Return a plain-text table: one row per autograded cell, one column per student, totals last."""
    if not scores:
        return f"{lab}: no graded submissions"
    students = list(scores)
    first = next(iter(scores.values()))
    cells = [(name, maximum) for name, (score, maximum) in first.items() if score is not None]
    name_width = max(len(name) for name, _ in cells) + 2
    column_width = max(10, max(len(s) for s in students) + 2)
    header = f"{lab + ' (points)':<{name_width + 8}}" + "".join(f"{s:>{column_width}}" for s in students)
    lines = [header, "-" * len(header)]
    for name, maximum in cells:
        row = ""
        for student in students:
            score = scores[student].get(name, (None, maximum))[0]
            row += f"{'-' if score is None else format(score, 'g'):>{column_width}}"
        lines.append(f"{name:<{name_width}}{f'({maximum:g})':>8}{row}")
    lines.append("-" * len(header))
    totals = "".join(f"{'{:g}/{:g}'.format(*autograde_total(scores[s])):>{column_width}}" for s in students)
    lines.append(f"{'total (autograded)':<{name_width + 8}}{totals}")
    return "\n".join(lines)


def check_reference(project_root: Path, workdir: Path, labs: Optional[List[str]] = None) -> Tuple[bool, str]:
    """Autograde each lab's source notebook ("reference") and blank release ("blank") in a scratch course.

    Returns (ok, report): ok is True when every reference gets full marks and every blank 0.
    """
    project_root = Path(project_root)
    workspace = make_workspace(project_root, workdir)
    ok = True
    reports = []
    for lab in labs or list_labs(project_root):
        name = lab_notebook_name(project_root, lab)
        run_nbgrader(["generate_assignment", lab, "--force"], workspace)
        add_submission(workspace, lab, "reference", workspace / "source" / lab / name, name)
        add_submission(workspace, lab, "blank", workspace / "release" / lab / name, name)
        scores = autograde(workspace, lab, ["reference", "blank"])
        reports.append(format_score_table(lab, scores))
        reference = autograde_total(scores.get("reference", {}))
        blank = autograde_total(scores.get("blank", {}))
        if "reference" not in scores or reference[0] != reference[1] or reference[1] == 0:
            ok = False
            reports.append(f"PROBLEM: the reference solution of {lab} scored {reference[0]:g}/{reference[1]:g}")
        if "blank" not in scores or blank[0] != 0:
            ok = False
            reports.append(f"PROBLEM: the blank release notebook of {lab} scored {blank[0]:g}/{blank[1]:g}")
    return ok, "\n\n".join(reports)
