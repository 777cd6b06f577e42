"""Time the class grader's copied-work step (dlmed.grader.similarity) alone, on 60 Lab 1 notebooks.

The 60 notebooks are the fixture submissions of tests/submissions/lab1.py (the alternative,
partial and mistake submissions, the instructor's solution and the blank notebook) in turn,
each with its variables renamed (a suffix per student), so most pairs share code: the step's
worst case (every pair compared in full, many side-by-side views). Timed: fingerprinting,
comparing every pair and each with solutions/, writing similarity.csv and the report's
section; the median of ``--repeats`` runs (default 3). The notebooks are built in memory
(nothing is graded); in ``dlmed grade`` the step also reads each graded notebook from disk.

    .venv/bin/python benchmarks/bench_similarity.py
"""

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import nbformat  # noqa: E402

from dlmed.grader import similarity  # noqa: E402
from tests.submissions import lab1  # noqa: E402


def class_of(count: int):
    release_path = next((PROJECT_ROOT / "release" / "lab1").glob("*.ipynb"))
    release = nbformat.read(str(release_path), as_version=4)
    solution = nbformat.read(str(PROJECT_ROOT / "solutions" / "lab1" / release_path.name), as_version=4)
    source = nbformat.read(str(PROJECT_ROOT / "source" / "lab1" / release_path.name), as_version=4)
    answer_ids = [c.metadata["nbgrader"]["grade_id"] for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")]
    kinds = list(lab1.SUBMISSIONS.items())
    notebooks = {}
    for number in range(count):
        index = number % (len(kinds) + 2)
        if index == len(kinds):
            notebook = nbformat.from_dict(source)
        elif index == len(kinds) + 1:
            notebook = nbformat.from_dict(release)
        else:
            name, submission = kinds[index]
            renamed = {cell: re.sub(r"\b(total|count|order|flat|history|matrix)\b", rf"\1_{number}", code)
                       for cell, code in submission.answers.items()}
            notebook = lab1.build_notebook(release_path, lab1.Submission(name, renamed))
        notebooks[f"student{number:02d}"] = notebook
    return notebooks, release, solution, answer_ids


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    notebooks, release, solution, answer_ids = class_of(args.students)
    times, report = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            started = time.perf_counter()
            report = similarity.compare_class(notebooks, release, solution, answer_ids)
            similarity.write_csv(report, Path(scratch) / "similarity.csv")
            section = similarity.html_section(report)
            times.append(time.perf_counter() - started)
    print(f"{args.students} Lab 1 notebooks: similarity step {statistics.median(times):.2f} s "
          f"(median of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)}); "
          f"{len(report.pairs)} pairs with code in common, {len(report.flagged)} flagged; "
          f"report section {len(section) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
