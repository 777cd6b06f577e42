"""Time Lab 1 (source/lab1/lab1_mednist_from_scratch.ipynb) three ways and report medians.

1. lab      The solution notebook executed top to bottom with nbclient, as a student runs
            it (NBGRADER_EXECUTION unset, so the full lab configuration), against a
            FULL-SIZE synthetic stand-in for MedNIST: ``--images-per-class`` images of each
            of the six classes (real MedNIST has 58,954 images, about 10,000 per class),
            64x64 grayscale JPEGs, laid out as ``<data dir>/MedNIST/<Class>/*.jpeg`` so that
            the notebook finds it as if MedNIST had been downloaded. Nothing is downloaded.
2. grading  The same execution with NBGRADER_EXECUTION=autograde: the tiny grading
            configuration, on the small stand-in the notebook makes for grading.
3. autograde  ``nbgrader autograde lab1 --force`` on one submission (the source notebook
            submitted as student "reference") in a scratch course. Generating the
            assignment is timed once, separately.

The test accuracies printed by the notebook in lab mode are accuracies ON SYNTHETIC DATA
(simple shapes, not medical images). The accuracy on the real MedNIST is NOT measured here.

Each measurement is repeated (``--repeats``, default 3; ``--lab-repeats`` for lab mode) and
reported as median, min and max. Raw timings, per-cell times and machine details go to a
JSON file in benchmarks/results/ (git-ignored). Generating the stand-in is not timed as
part of a run; the stand-in is cached in ``--data-root`` and reused.

Examples (from the course root, with the virtual environment's bin/ first on PATH)::

    .venv/bin/python benchmarks/bench_lab1.py --lab-repeats 1 --skip-grading --skip-autograde
    .venv/bin/python benchmarks/bench_lab1.py --repeats 3 --lab-repeats 2
    .venv/bin/python benchmarks/bench_lab1.py --skip-lab
"""

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # so that `dlmed` imports without installing it

from dlmed import course, data  # noqa: E402  (needs the sys.path entry above)
from dlmed.config import GRADING_LIMITS  # noqa: E402

LAB = "lab1"
NOTEBOOK = PROJECT_ROOT / "source" / LAB / "lab1_mednist_from_scratch.ipynb"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Lab mode should finish within this many seconds per run on a 2-core CPU.
LAB_BUDGET_SECONDS = 300
#: Real MedNIST: 58,954 images in six classes.
REAL_MEDNIST_IMAGES = 58954

ACCURACY_LINE = re.compile(r"test accuracy: fully connected ([\d.]+)%, CNN ([\d.]+)%")
MODE_LINE = re.compile(r"mode: (\w+) \| device: (\S+)")
CLASS_COUNT_LINE = re.compile(r"^(\w+)\s+(\d+) images$", re.MULTILINE)
SYNTHETIC_WARNING = (
    "The lab-mode accuracies are on SYNTHETIC data (simple shapes, not medical images); "
    "the accuracy on the real MedNIST is NOT measured here (MedNIST cannot be downloaded "
    "on this machine)."
)


# --- Machine and environment -----------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def total_ram_gib() -> float:
    """Total memory in GiB (from /proc/meminfo), or 0.0 where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_gib": round(total_ram_gib(), 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": package_version("torch"),
        "torchvision": package_version("torchvision"),
        "nbgrader": package_version("nbgrader"),
        "nbclient": package_version("nbclient"),
        "device": os.environ.get("DLMED_DEVICE") or "auto (dlmed.device(); see each run's 'device')",
        "notebook": str(NOTEBOOK.relative_to(PROJECT_ROOT)),
        "notebook_sha256": hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest(),
    }


def load_average() -> list:
    """1-, 5- and 15-minute load averages (other processes slow the runs down)."""
    return [round(x, 2) for x in os.getloadavg()]


# --- Data --------------------------------------------------------------------------------


def prepare_lab_data(data_root: Path, images_per_class: int) -> dict:
    """Make (or reuse) the full-size stand-in and a data dir whose MedNIST/ is that stand-in.

    Returns {"data_dir", "seconds" (generation or reuse check), "images"}.
    """
    data_dir = data_root / f"lab-{images_per_class}-per-class"
    started = time.perf_counter()
    standin = data.make_synthetic_mednist(data_dir, images_per_class=images_per_class, image_size=64)
    seconds = time.perf_counter() - started
    link = data_dir / data.MEDNIST_FOLDER
    if link.is_symlink() and os.readlink(link) != standin.name:
        link.unlink()
    if not link.exists():
        link.symlink_to(standin.name, target_is_directory=True)  # relative: MedNIST -> MedNIST-synthetic
    found = data.find_mednist(data_dir)
    if found is None or found.resolve() != standin.resolve():
        raise RuntimeError(f"dlmed.data.find_mednist({data_dir}) does not accept {link} -> {standin}")
    return {"data_dir": str(data_dir), "seconds": round(seconds, 2), "images": 6 * images_per_class}


def prepare_grading_data(data_root: Path) -> dict:
    """A data dir without MedNIST/, holding the small stand-in that grading mode makes.

    It is made here, before timing, with the settings ``data.mednist_folder`` uses in grading
    mode, so that every timed run reuses it (making it takes well under a second).
    """
    data_dir = data_root / "grading"
    per_class = max(GRADING_LIMITS["images_per_class"], data.SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS)
    started = time.perf_counter()
    data.make_synthetic_mednist(data_dir, images_per_class=per_class)
    seconds = time.perf_counter() - started
    if data.find_mednist(data_dir) is not None:
        raise RuntimeError(f"{data_dir} holds a MedNIST/ folder; grading mode would use it instead of the small stand-in")
    return {"data_dir": str(data_dir), "seconds": round(seconds, 2), "images": 6 * per_class}


# --- Executing the notebook -----------------------------------------------------------------


def parse_time(value) -> datetime.datetime:
    """nbclient's timestamps: ISO strings (or datetimes) with a time zone."""
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def cell_label(cell, index: int) -> str:
    """A short name for a cell: its grade_id, else its first line of code."""
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    if grade_id:
        return f"[{index}] {grade_id}"
    # Skip lines that many cells share (seeding, comments) so that the label tells cells apart.
    lines = [line.strip() for line in cell.source.splitlines()]
    telling = [line for line in lines if line and not line.startswith(("#", "dlmed.seed_everything"))]
    return f"[{index}] {(telling or [''])[0][:60]}"


def cell_output_text(cell) -> str:
    """The text a cell printed (stdout, stderr and plain-text results)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif output.get("output_type") in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def execute_notebook(mode: str, data_dir: str, cell_timeout: int) -> dict:
    """Execute the solution notebook once in a fresh kernel and a temporary cwd; return timings.

    ``mode`` is "lab" (NBGRADER_EXECUTION unset) or "grading" (NBGRADER_EXECUTION=autograde).
    Raises CellExecutionError if a cell fails.
    """
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ)
    env.pop("NBGRADER_EXECUTION", None)
    if mode == "grading":
        env["NBGRADER_EXECUTION"] = "autograde"
    env["DLMED_DATA"] = data_dir
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix=f"bench-lab1-{mode}-") as workdir:
        client = NotebookClient(
            notebook,
            timeout=cell_timeout,
            kernel_name="python3",
            allow_errors=False,
            record_timing=True,
            resources={"metadata": {"path": workdir}},
        )
        started = time.perf_counter()
        client.execute(env=env)
        total = time.perf_counter() - started

    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        timing = cell.metadata.get("execution", {})
        start = timing.get("iopub.execute_input") or timing.get("iopub.status.busy")
        end = timing.get("shell.execute_reply") or timing.get("iopub.status.idle")
        seconds = (parse_time(end) - parse_time(start)).total_seconds() if start and end else None
        cells.append({"index": index, "label": cell_label(cell, index), "seconds": seconds})

    cells_seconds = sum(c["seconds"] or 0.0 for c in cells)
    text = "\n".join(cell_output_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    result = {
        "mode": mode,
        "total_seconds": round(total, 3),
        "cells_seconds": round(cells_seconds, 3),
        # The rest of total_seconds: starting and stopping the kernel, nbclient's own work.
        "overhead_seconds": round(total - cells_seconds, 3),
        "cells": cells,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    mode_match = MODE_LINE.search(text)
    if mode_match:
        result["notebook_mode"], result["device"] = mode_match.group(1), mode_match.group(2)
    expected_mode = "lab" if mode == "lab" else "grading"
    if result.get("notebook_mode") != expected_mode:
        raise RuntimeError(f"the notebook ran in mode {result.get('notebook_mode')!r}, expected {expected_mode!r}")
    accuracy = ACCURACY_LINE.search(text)
    if accuracy:
        result["test_accuracy_percent"] = {
            "fully_connected": float(accuracy.group(1)),
            "cnn": float(accuracy.group(2)),
            "data": "synthetic stand-in (not medical images)",
        }
    counts = {name: int(n) for name, n in CLASS_COUNT_LINE.findall(text) if name in data.MEDNIST_CLASSES}
    if counts:
        result["images_per_class_seen"] = counts
    result["data_source_lines"] = [line for line in text.splitlines() if line.startswith("dlmed: using")]
    return result


# --- Autograding ---------------------------------------------------------------------------


def autograde_runs(repeats: int, grading_data_dir: str, workdir: Path, report) -> dict:
    """Generate lab1 once in a scratch course, then autograde one submission ``repeats`` times."""
    os.environ["DLMED_DATA"] = grading_data_dir  # inherited by nbgrader and its kernels
    os.environ.pop("NBGRADER_EXECUTION", None)
    workspace = course.make_workspace(PROJECT_ROOT, workdir / "course")
    started = time.perf_counter()
    course.generate(workspace, [LAB])
    generate_seconds = time.perf_counter() - started
    name = course.lab_notebook_name(workspace, LAB)
    course.add_submission(workspace, LAB, "reference", workspace / "source" / LAB / name, name)

    runs = []
    for repeat in range(repeats):
        load_before = load_average()
        started = time.perf_counter()
        course.run_nbgrader(["autograde", LAB, "--force"], workspace)
        seconds = time.perf_counter() - started
        scores = course.read_scores(workspace, LAB, name, ["reference"])
        points, max_points = course.autograde_total(scores.get("reference", {}))
        runs.append({
            "total_seconds": round(seconds, 3),
            "score": points,
            "max_score": max_points,
            "load_average_before": load_before,
            "load_average_after": load_average(),
        })
        report(f"  autograde {repeat + 1}/{repeats}: {seconds:.1f} s, reference scored {points:g}/{max_points:g}")
    return {"generate_seconds": round(generate_seconds, 3), "runs": runs}


# --- Summaries ------------------------------------------------------------------------------


def summarize(values: list) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def median_cell_times(runs: list) -> list:
    """Per code cell: the median time over ``runs``, slowest first."""
    by_index = {}
    for run in runs:
        for cell in run["cells"]:
            if cell["seconds"] is not None:
                by_index.setdefault(cell["index"], (cell["label"], []))[1].append(cell["seconds"])
    rows = [
        {"index": index, "label": label, "median_seconds": statistics.median(times)}
        for index, (label, times) in by_index.items()
    ]
    return sorted(rows, key=lambda row: row["median_seconds"], reverse=True)


def format_table(summaries: dict) -> str:
    header = f"{'measurement':<44}{'median s':>10}{'min s':>10}{'max s':>10}{'n':>4}"
    lines = [header, "-" * len(header)]
    for name, stats in summaries.items():
        lines.append(
            f"{name:<44}{stats['median']:>10.1f}{stats['min']:>10.1f}{stats['max']:>10.1f}{stats['n']:>4}"
        )
    return "\n".join(lines)


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


# --- Main ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--lab-repeats", type=int, default=None,
                        help="runs of lab mode (default: --repeats); lab mode is the slow one")
    parser.add_argument("--skip-lab", action="store_true", help="do not time lab mode")
    parser.add_argument("--skip-grading", action="store_true", help="do not time grading mode")
    parser.add_argument("--skip-autograde", action="store_true", help="do not time nbgrader autograde")
    parser.add_argument("--images-per-class", type=int, default=10000,
                        help="images per class of the lab-mode stand-in (default 10000, as real MedNIST)")
    parser.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "dlmed-bench-data",
                        help="where the stand-ins are made and cached (default: %(default)s)")
    parser.add_argument("--cell-timeout", type=int, default=3600,
                        help="seconds one cell may run before the run is abandoned (default 3600)")
    parser.add_argument("--top-cells", type=int, default=8, help="slowest lab-mode cells to print (default 8)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file for the raw timings (default: benchmarks/results/lab1-<time>.json)")
    args = parser.parse_args(argv)
    if args.lab_repeats is None:
        args.lab_repeats = args.repeats
    if args.repeats < 1 or args.lab_repeats < 1:
        parser.error("--repeats and --lab-repeats must be at least 1")
    if args.images_per_class < 1:
        parser.error("--images-per-class must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / f"lab1-{stamp}.json"

    def report(message: str) -> None:
        print(message, flush=True)

    results = {
        "machine": machine_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "repeats": args.repeats,
            "lab_repeats": args.lab_repeats,
            "images_per_class": args.images_per_class,
            "data_root": str(args.data_root),
            "lab_budget_seconds": LAB_BUDGET_SECONDS,
        },
        "caveat": SYNTHETIC_WARNING,
    }
    report(f"machine: {results['machine']['nproc']} CPUs ({results['machine']['cpu_model']}), "
           f"{results['machine']['ram_gib']} GiB, Python {results['machine']['python']}, "
           f"torch {results['machine']['torch']}; load average {load_average()}")
    summaries = {}

    try:
        if not args.skip_lab:
            report(f"preparing the lab-mode stand-in: {args.images_per_class} images per class "
                   f"({6 * args.images_per_class} images; real MedNIST has {REAL_MEDNIST_IMAGES}) ...")
            lab_data = prepare_lab_data(args.data_root, args.images_per_class)
            results["lab_data"] = lab_data
            report(f"  {lab_data['data_dir']} ready in {lab_data['seconds']:.1f} s (not part of the timings)")
            results["lab"] = []
            for repeat in range(args.lab_repeats):
                report(f"lab mode {repeat + 1}/{args.lab_repeats} ...")
                run = execute_notebook("lab", lab_data["data_dir"], args.cell_timeout)
                results["lab"].append(run)
                save(results, output)
                accuracy = run.get("test_accuracy_percent", {})
                over = "  OVER THE 5-MINUTE BUDGET" if run["total_seconds"] > LAB_BUDGET_SECONDS else ""
                report(f"  {run['total_seconds']:.1f} s{over}; test accuracy on SYNTHETIC data: "
                       f"fully connected {accuracy.get('fully_connected')}%, CNN {accuracy.get('cnn')}%; "
                       f"load average {run['load_average_after']}")
            summaries["lab mode (whole notebook)"] = summarize([r["total_seconds"] for r in results["lab"]])

        if not args.skip_grading or not args.skip_autograde:
            grading_data = prepare_grading_data(args.data_root)
            results["grading_data"] = grading_data

        if not args.skip_grading:
            results["grading"] = []
            for repeat in range(args.repeats):
                run = execute_notebook("grading", grading_data["data_dir"], args.cell_timeout)
                results["grading"].append(run)
                save(results, output)
                report(f"grading mode {repeat + 1}/{args.repeats}: {run['total_seconds']:.1f} s")
            summaries["grading mode (NBGRADER_EXECUTION=autograde)"] = summarize(
                [r["total_seconds"] for r in results["grading"]]
            )

        if not args.skip_autograde:
            report("autograde: generating lab1 in a scratch course ...")
            with tempfile.TemporaryDirectory(prefix="bench-lab1-course-") as workdir:
                results["autograde"] = autograde_runs(args.repeats, grading_data["data_dir"], Path(workdir), report)
            save(results, output)
            report(f"  generate_assignment + generate_solution (once): {results['autograde']['generate_seconds']:.1f} s")
            summaries["nbgrader autograde, 1 submission"] = summarize(
                [r["total_seconds"] for r in results["autograde"]["runs"]]
            )
    except CellExecutionError as error:
        save(results, output)
        report(f"FAILED: a notebook cell raised an error (partial results in {output}):\n{error}")
        return 1
    except course.CourseError as error:
        save(results, output)
        report(f"FAILED: {error}\n(partial results in {output})")
        return 1

    results["summary"] = summaries
    if results.get("lab"):
        results["lab_cells_median"] = median_cell_times(results["lab"])
    save(results, output)

    report("")
    report(format_table(summaries))
    if results.get("lab"):
        lab_median = summaries["lab mode (whole notebook)"]["median"]
        verdict = "within" if lab_median <= LAB_BUDGET_SECONDS else "OVER"
        report(f"\nlab mode: median {lab_median:.1f} s, {verdict} the {LAB_BUDGET_SECONDS} s budget "
               f"(stand-in of {6 * args.images_per_class} images; data generation excluded)")
        overhead = statistics.median(r["overhead_seconds"] for r in results["lab"])
        report(f"slowest lab-mode cells (median over {len(results['lab'])} run(s); "
               f"kernel start/stop and nbclient add {overhead:.1f} s):")
        for row in results["lab_cells_median"][: args.top_cells]:
            share = 100 * row["median_seconds"] / lab_median
            report(f"  {row['median_seconds']:8.1f} s {share:5.1f}%  {row['label']}")
        accuracies = [r["test_accuracy_percent"] for r in results["lab"] if "test_accuracy_percent" in r]
        if accuracies:
            report("test accuracy (SYNTHETIC data), per run: " + "; ".join(
                f"fully connected {a['fully_connected']}%, CNN {a['cnn']}%" for a in accuracies))
        report(SYNTHETIC_WARNING)
    report(f"\nraw timings: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
