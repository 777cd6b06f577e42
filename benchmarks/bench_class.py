"""Grade a class of Lab 1 submissions with stock ``nbgrader autograde`` and with ``dlmed grade``, side by side.

A scratch course gets ``--students`` submissions (default 60) in a realistic mix, built from
the test fixtures (tests/submissions/):

- correct: the solution itself and a correct one written differently (``alternative_correct``);
- partial: the fixtures with typical mistakes (``partial``, ``mistakes_a`` ... ``mistakes_d``);
- blank: the release notebook as handed out;
- broken: half a notebook file (corrupt JSON), a notebook saved under another name, an
  answer that calls ``sys.exit()``, one that calls ``os._exit()`` (kills the kernel).

None of them loops or sleeps: both tools would spend the same time limit on it. Duplicated
test cells are left out too: they stop a stock nbgrader batch (the students after it stay
ungraded), which would make stock look faster.

Then, alternating, ``--repeats`` times each (default 3):

- stock: ``nbgrader autograde lab1 --force`` (one notebook after another, as nbgrader does);
- dlmed: ``dlmed grade lab1 --force --no-feedback`` (the default: as many at a time as
  cores, in sandboxes, with the reference check first; run as root, its kernels are forked
  from a zygote that has the libraries imported, see dlmed/grader/zygote.py); feedback is not
  timed because stock autograde writes none;
- cold (only with ``--tools``): the same with ``--cold-start``, every kernel started from scratch.

``--jobs`` sets dlmed's submissions at a time (default: the number of cores). For each dlmed
run the per-submission breakdown comes from the grader's journal (``timings``: preparing,
the sandbox's start, the kernel's start, the cells, the hidden tests among them, recording):
medians over the submissions the sandbox ran.

Reported: median, min and max wall time of each, and the ratio of the medians. Each dlmed
run's per-cell scores are compared with the stock run's in the gradebook: they must agree
for every correct, partial and blank submission and for ``sys.exit()``. The other broken
ones differ by design (stock nbgrader scores a renamed notebook 0 and leaves a killed kernel's
submission without scores; dlmed grades the first and keeps the second's earlier tests);
what each tool gave them is recorded. Raw results go to benchmarks/results/ (git-ignored).

    .venv/bin/python benchmarks/bench_class.py                 # 60 students, 3 repeats each
    .venv/bin/python benchmarks/bench_class.py --students 12 --repeats 1
    .venv/bin/python benchmarks/bench_class.py --students 30 --repeats 1 --tools dlmed --jobs 1
"""

import argparse
import itertools
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbformat  # noqa: E402

from bench_lab import RESULTS_DIR, cpu_model, format_table, load_average, package_version, save, summarize  # noqa: E402
from dlmed import course  # noqa: E402
from tests.submissions import hostile, lab1  # noqa: E402

LAB = "lab1"
NAME = hostile.LAB_NOTEBOOK
MIX = {"correct": 0.35, "partial": 0.35, "blank": 0.15, "broken": 0.15}


def build_class(workspace: Path, students: int) -> dict:
    """Write ``students`` submissions into ``workspace``; return {student: kind}."""
    release = workspace / "release" / LAB / NAME
    source = nbformat.read(str(workspace / "source" / LAB / NAME), as_version=4)
    correct = [lambda: source, lambda: lab1.build_notebook(release, lab1.SUBMISSIONS["alternative_correct"])]
    partial = [lambda name=name: lab1.build_notebook(release, lab1.SUBMISSIONS[name])
               for name in ("partial", "mistakes_a", "mistakes_b", "mistakes_c", "mistakes_d")]
    broken = ["corrupt_json", "wrong_name", "sys_exit", "os_exit"]
    counts = {kind: round(share * students) for kind, share in MIX.items()}
    counts["correct"] += students - sum(counts.values())
    kinds = {}
    makers = {"correct": itertools.cycle(correct), "partial": itertools.cycle(partial),
              "broken": itertools.cycle(broken), "blank": itertools.repeat(lambda: nbformat.read(str(release), as_version=4))}
    number = 0
    for kind, count in counts.items():
        for _ in range(count):
            student = f"student{number:03d}"
            number += 1
            folder = workspace / "submitted" / student / LAB
            made = next(makers[kind])
            if kind == "broken":
                hostile.write_case(hostile.CASES[made], release, folder, {})
                kinds[student] = f"broken: {made}"
            else:
                folder.mkdir(parents=True)
                nbformat.write(made(), str(folder / NAME))
                kinds[student] = kind
    return kinds


def timed(command, cwd) -> dict:
    """Run ``command``; return its wall time, exit status and the tail of its output."""
    started = time.monotonic()
    load_before = load_average()
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return {"seconds": time.monotonic() - started, "returncode": completed.returncode,
            "load_before": load_before, "load_after": load_average(),
            "output_tail": (completed.stdout + completed.stderr)[-2000:]}


def forget_grades(workspace: Path, students):
    """Remove the submissions from the gradebook (untimed), so no run sees scores an earlier run left.

    Stock nbgrader leaves a submission it skips or fails on as it was; without this, such a
    student would show the other tool's scores from the run before.
    """
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{workspace / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                gradebook.remove_submission(LAB, student)
            except MissingEntry:
                pass


def journal_timings(workspace: Path) -> dict:
    """Median seconds per step (the journal's ``timings``) over the submissions a sandbox ran, and their count."""
    entries = [json.loads(path.read_text()) for path in (workspace / "grading" / LAB / "results").glob("*.json")]
    timed_entries = [entry["timings"] for entry in entries if entry.get("timings")]
    steps = sorted({step for timings in timed_entries for step in timings})
    medians = {step: statistics.median(t.get(step, 0.0) for t in timed_entries) for step in steps}
    return {"submissions": len(timed_entries), "median_seconds": medians}


def gradebook_scores(workspace: Path, students) -> dict:
    """{student: {test cell: auto score}} for the students the gradebook has scores for."""
    return {student: {cell: score for cell, (score, _) in cells.items() if cell in lab1.FULL_MARKS}
            for student, cells in course.read_scores(workspace, LAB, NAME, students).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=60, help="submissions in the class (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool (default 3)")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default benchmarks/results/class-<time>.json)")
    parser.add_argument("--tools", default="stock,dlmed", help="comma-separated, of stock, dlmed, cold (default stock,dlmed)")
    parser.add_argument("--jobs", type=int, default=None, help="dlmed's submissions at a time (default: the number of cores)")
    args = parser.parse_args(argv)
    tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]

    output = args.output or RESULTS_DIR / f"class-{time.strftime('%Y%m%d-%H%M%S')}.json"
    workdir = Path(tempfile.mkdtemp(prefix="dlmed-bench-class-"))
    os.environ["DLMED_DATA"] = str(workdir / "data")  # stand-ins made once, by the first run
    workspace = course.make_workspace(PROJECT_ROOT, workdir / "course")
    course.run_nbgrader(["generate_assignment", LAB, "--force"], workspace)
    kinds = build_class(workspace, args.students)
    students = sorted(kinds)
    results = {
        "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "python": sys.version.split()[0],
                    "torch": package_version("torch"), "nbgrader": package_version("nbgrader")},
        "students": args.students, "mix": {k: sum(1 for v in kinds.values() if v.startswith(k)) for k in MIX},
        "kinds": kinds, "runs": {tool: [] for tool in tools}, "score_mismatches": [], "jobs": args.jobs or os.cpu_count(),
    }
    dlmed = [sys.executable, "-m", "dlmed", "grade", LAB, "--force", "--no-feedback", "--no-progress"] + (
        ["--jobs", str(args.jobs)] if args.jobs else [])
    commands = {"stock": [sys.executable, "-m", "nbgrader", "autograde", LAB, "--force"],
                "dlmed": dlmed, "cold": dlmed + ["--cold-start"]}
    for repeat in range(args.repeats):
        for tool in tools:
            forget_grades(workspace, students)
            run = timed(commands[tool], workspace)
            run["scores"] = gradebook_scores(workspace, students)
            if tool != "stock":
                run["timings"] = journal_timings(workspace)
            results["runs"][tool].append(run)
            print(f"run {repeat + 1}/{args.repeats} {tool}: {run['seconds']:.1f} s (exit {run['returncode']}, "
                  f"{len(run['scores'])} graded)" + (f"; per submission, medians: {_steps(run['timings'])}" if tool != "stock" else ""),
                  flush=True)
            save(results, output)
        if "stock" not in tools or "dlmed" not in tools:
            continue
        stock, ours = results["runs"]["stock"][-1]["scores"], results["runs"]["dlmed"][-1]["scores"]
        for student in students:
            if kinds[student].startswith(("correct", "partial", "blank")) or kinds[student] == "broken: sys_exit":
                if stock.get(student) != ours.get(student):
                    results["score_mismatches"].append({"repeat": repeat, "student": student, "kind": kinds[student],
                                                        "stock": stock.get(student), "dlmed": ours.get(student)})
        results.setdefault("by_design", []).append({
            student: {"kind": kinds[student], "stock": stock.get(student), "dlmed": ours.get(student)}
            for student in students if kinds[student] in ("broken: corrupt_json", "broken: wrong_name", "broken: os_exit")})
    summaries = {tool: summarize([run["seconds"] for run in runs]) for tool, runs in results["runs"].items()}
    results["summary"] = summaries
    labels = {"stock": "stock nbgrader autograde", "dlmed": "dlmed grade", "cold": "dlmed grade --cold-start"}
    print(format_table({f"{labels[tool]}, {args.students} students": summaries[tool] for tool in tools}))
    for tool in tools:
        if tool != "stock" and "stock" in tools:
            results[f"speedup_of_medians_{tool}"] = summaries["stock"]["median"] / summaries[tool]["median"]
            print(f"speed-up of {tool} over stock (ratio of medians): {results[f'speedup_of_medians_{tool}']:.2f}x")
    if "dlmed" in tools and "stock" in tools:
        results["speedup_of_medians"] = results["speedup_of_medians_dlmed"]
    save(results, output)
    print("graded: " + ", ".join(f"{tool} {len(results['runs'][tool][-1]['scores'])}" for tool in tools) + f" of {args.students}")
    print(f"per-cell score mismatches where stock graded: {len(results['score_mismatches'])}")
    print(f"results: {output}")
    return 0 if not results["score_mismatches"] else 1


def _steps(timings: dict) -> str:
    return ", ".join(f"{step} {seconds:.2f} s" for step, seconds in timings["median_seconds"].items())


if __name__ == "__main__":
    sys.exit(main())
