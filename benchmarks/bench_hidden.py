"""Time ``dlmed grade`` on a few honest Lab 1 submissions, and the sealed hidden-test runs inside it.

A scratch course gets the first ``--students`` honest fixtures of tests/submissions/lab1.py
(default 5); ``dlmed grade lab1 --force --no-feedback --jobs 2`` (the reference check included)
grades them ``--repeats`` times (default 3), with a fresh data folder. Reported: the median wall time of the whole command, the
median seconds per submission (from the grader's journal) and, where the grader records them,
the seconds each hidden-test part took in its sealed fork (fork, seal, run, verdict), median
over all hidden tests of all runs.

    .venv/bin/python benchmarks/bench_hidden.py
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import nbformat  # noqa: E402

from dlmed import course  # noqa: E402
from tests.submissions import hostile, lab1  # noqa: E402

LAB = "lab1"


def main() -> int:
    """Build the course, grade it ``--repeats`` times, print the medians as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlmed-bench-hidden-") as scratch:
        workspace = course.make_workspace(PROJECT_ROOT, Path(scratch) / "course")
        course.run_nbgrader(["generate_assignment", LAB, "--force"], workspace)
        release = workspace / "release" / LAB / hostile.LAB_NOTEBOOK
        students = list(lab1.SUBMISSIONS)[: args.students]
        for student in students:
            folder = workspace / "submitted" / student / LAB
            folder.mkdir(parents=True)
            nbformat.write(lab1.build_notebook(release, lab1.SUBMISSIONS[student]), str(folder / hostile.LAB_NOTEBOOK))
        walls, per_student, hidden = [], [], []
        for _ in range(args.repeats):
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "dlmed", "grade", LAB, "--no-progress", "--force", "--no-feedback",
                            "--jobs", str(args.jobs)], cwd=workspace, check=True, capture_output=True,
                           env=dict(os.environ, DLMED_DATA=str(Path(scratch) / "data")))
            walls.append(time.monotonic() - started)
            for path in (workspace / "grading" / LAB / "results").glob("*.json"):
                result = json.loads(path.read_text())
                per_student.append(result["seconds"])
                hidden += result.get("hidden_seconds", [])
        print(json.dumps({
            "students": len(students), "repeats": args.repeats, "jobs": args.jobs,
            "wall_seconds_median": round(statistics.median(walls), 1), "wall_seconds": [round(w, 1) for w in walls],
            "seconds_per_submission_median": round(statistics.median(per_student), 2),
            "hidden_tests_timed": len(hidden),
            "hidden_seconds_median": round(statistics.median(hidden), 3) if hidden else None,
            "hidden_seconds_max": round(max(hidden), 3) if hidden else None,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
