"""Time a lab's solution notebook three ways and report medians (``--lab lab1``, the default, ``lab2`` ... ``lab6``).

1. lab      The solution notebook executed top to bottom with nbclient, as a student runs
            it (NBGRADER_EXECUTION unset, so the full lab configuration), against a
            FULL-SIZE synthetic stand-in for MedNIST: ``--images-per-class`` images of each
            of the six classes (real MedNIST has 58,954 images, about 10,000 per class),
            64x64 grayscale JPEGs, laid out as ``<data dir>/MedNIST/<Class>/*.jpeg`` so that
            the notebook finds it as if MedNIST had been downloaded. Nothing is downloaded.
            Lab 2 also needs the real PneumoniaMNIST: its data dir holds a symlink
            ``pneumoniamnist.npz`` -> ``--pneumoniamnist`` (default: the read-only offline
            copy ../shared/data/pneumoniamnist.npz beside the project; lab mode is skipped with a message
            when it is not there). It holds no ``MURA-v1.1``, so the notebook shows the MURA
            part on a small synthetic MURA tree that it makes in the data dir itself.
            Lab 3 trains on the REAL DSB2018 at 96x96: its data dir holds a symlink
            ``dsb2018_96.zip`` -> ``--dsb2018`` (default: the read-only offline copy
            ../shared/data/dsb2018_96.zip; lab mode is skipped with a message when absent).
            Lab 4 runs on the REAL ChEMBL set the notebook names (CHEMBL219): its data
            dir holds a symlink ``CHEMBL219_cl.csv`` -> the read-only offline copy in
            ../shared/data/chembl-koutsoukas2017/ (lab mode is skipped when it is not there).
2. grading  The same execution with NBGRADER_EXECUTION=autograde: the tiny grading
            configuration, on the small stand-ins the notebook makes for grading (the data
            dir holds no MedNIST/, and for Lab 2 no pneumoniamnist.npz and no MURA-v1.1).
3. autograde  ``nbgrader autograde <lab> --force`` on one submission (the source notebook
            submitted as student "reference") in a scratch course. Generating the
            assignment is timed once, separately.

Accuracies on MedNIST printed by the notebooks in lab mode are accuracies ON SYNTHETIC DATA
(simple shapes, not medical images); the accuracy on the real MedNIST is NOT measured here.
Lab 2's Part B results (test ROC AUC, accuracy, Cohen's kappa) are on the REAL
PneumoniaMNIST; real MURA is not measured here.

Each measurement is repeated (``--repeats``, default 3; ``--lab-repeats`` for lab mode) and
reported as median, min and max. Raw timings, per-cell times and machine details go to a
JSON file in benchmarks/results/ (git-ignored). Generating the stand-ins is not timed as
part of a run; they are cached in ``--data-root`` and reused.

Examples (from the course root)::

    .venv/bin/python benchmarks/bench_lab.py --lab-repeats 1 --skip-grading --skip-autograde
    .venv/bin/python benchmarks/bench_lab.py --repeats 3 --lab-repeats 2
    .venv/bin/python benchmarks/bench_lab.py --skip-lab
    .venv/bin/python benchmarks/bench_lab.py --lab lab2 --lab-repeats 1 --skip-grading --skip-autograde
    .venv/bin/python benchmarks/bench_lab.py --lab lab2 --skip-lab
    .venv/bin/python benchmarks/bench_lab.py --lab lab3 --lab-repeats 1 --skip-grading --skip-autograde
    .venv/bin/python benchmarks/bench_lab.py --lab lab5 --lab-repeats 1 --repeats 1

Lab 5 runs lab mode on the real CiteSeer, ESOL, FreeSolv and Tox21 (symlinks to
``--shared-data``, by default the read-only offline copies in ../shared/data) and grading
mode on the stand-ins it makes for grading. Lab 6 likewise: lab mode on the real GAD fold 1
(``gad-biobert/``) and UCI splice junctions (``uci-splice.data``), grading mode on stand-ins.
"""

import argparse
import dataclasses
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
from typing import Callable, List

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # so that `dlmed` imports without installing it

from dlmed import course  # noqa: E402  (needs the sys.path entry above)
from dlmed.config import GRADING_LIMITS  # noqa: E402
from dlmed.datasets import chembl, citeseer, dsb2018, gad, mednist, moleculenet, mura, pneumoniamnist, splice  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Real MedNIST: 58,954 images in six classes.
REAL_MEDNIST_IMAGES = 58954
#: The read-only offline copy of PneumoniaMNIST that Lab 2's lab mode uses by default.
# The read-only offline copy beside the project (../shared/data), as on the CI machines.
SHARED_PNEUMONIAMNIST = PROJECT_ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"
#: The read-only offline copy of the prepared DSB2018 (96x96) that Lab 3's lab mode uses by default.
SHARED_DSB2018 = PROJECT_ROOT.parent / "shared" / "data" / dsb2018.PREPARED_ZIP
#: Lab 3: the validation IoU (pooled) that the student's U-Net should reach in lab mode.
DSB2018_IOU_TARGET = 0.80
#: Lab 2, Part B: the test ROC AUC on PneumoniaMNIST that lab mode should reach.
PNEUMONIA_AUC_TARGET = 0.95
#: Lab 4: the read-only offline copies of the ChEMBL sets.
SHARED_CHEMBL = PROJECT_ROOT.parent / "shared" / "data" / chembl.MIRROR_FOLDER
#: Lab 5: the read-only offline copies of CiteSeer and the MoleculeNet tables (../shared/data).
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
#: Lab 5, Part A: the mean CiteSeer test accuracy of the student's GCN that lab mode should reach
#: (Kipf & Welling 2017 report 0.703).
CITESEER_ACCURACY_TARGET = 0.70

MODE_LINE = re.compile(r"mode: (\w+) \| device: (\S+)")

# Lab 1's printed results.
LAB1_ACCURACY_LINE = re.compile(r"test accuracy: fully connected ([\d.]+)%, CNN ([\d.]+)%")
LAB1_CLASS_COUNT_LINE = re.compile(r"^(\w+)\s+(\d+) images$", re.MULTILINE)
LAB1_CAVEAT = (
    "The lab-mode accuracies are on SYNTHETIC data (simple shapes, not medical images); "
    "the accuracy on the real MedNIST is NOT measured here (MedNIST cannot be downloaded "
    "on this machine)."
)

# Lab 2's printed results.
LAB2_PART_A_ACCURACY_LINE = re.compile(r"^test accuracy: ([\d.]+)%$", re.MULTILINE)
LAB2_PART_B_TEST_LINE = re.compile(
    r"^test ROC AUC ([\d.]+) \| accuracy ([\d.]+)% \| Cohen's kappa (-?[\d.]+)$", re.MULTILINE
)
LAB2_VALIDATION_AUC_LINE = re.compile(r"^validation ROC AUC: ([\d.]+)$", re.MULTILINE)
LAB2_THRESHOLD_LINE = re.compile(r"^threshold chosen on validation: ([\d.]+)$", re.MULTILINE)
LAB2_PART_A_COUNTS_LINE = re.compile(r"^(\d+) training and (\d+) test images of (\d+) classes", re.MULTILINE)
LAB2_PNEUMONIA_SPLIT_LINE = re.compile(r"^(train|val|test)\s*:\s*(\d+) images, (\d+)% pneumonia$", re.MULTILINE)
LAB2_PRETRAINED_LINE = re.compile(r"^ImageNet weights: (yes|no)", re.MULTILINE)
LAB2_AMP_LINE = re.compile(r"^(float32|mixed precision)\s*:\s*([\d.]+) ms per step", re.MULTILINE)
LAB2_CAVEAT = (
    "Part A's test accuracy is on the SYNTHETIC MedNIST stand-in (simple shapes, not medical "
    "images): it says nothing about MedNIST, whose accuracy is NOT measured here. Part B's "
    "test ROC AUC, accuracy and kappa are on the REAL PneumoniaMNIST. MURA is not measured "
    "here (the notebook only shows its layout on a synthetic tree)."
)

# Lab 3's printed results.
LAB3_UNET_LINE = re.compile(r"^validation IoU, pooled: ([\d.]+); mean per image: ([\d.]+); mean Dice per image: ([\d.]+)$", re.MULTILINE)
LAB3_MONAI_LINE = re.compile(r"^MONAI U-Net: validation IoU, pooled: ([\d.]+)$", re.MULTILINE)
LAB3_TTA_LINE = re.compile(r"^validation IoU, pooled: one prediction ([\d.]+), TTA mean ([\d.]+)$", re.MULTILINE)
LAB3_TIME_LINES = re.compile(r"^(MONAI U-Net: )?training took (\d+) s$", re.MULTILINE)
LAB3_MONAI_EPOCHS_LINE = re.compile(r"^MONAI U-Net: [\d,]+ parameters, (\d+) epochs in about the", re.MULTILINE)
LAB3_COUNT_LINE = re.compile(r"^median absolute count error ([\d.]+) nuclei per image; exact count on (\d+)% of the images$", re.MULTILINE)
LAB3_CAVEAT = (
    "The IoUs are on the REAL DSB2018 (BBBC038 stage1_train at 96x96, the offline copy), "
    "validation = 20% of the sorted image ids (train_test_split, random_state=41), pixels pooled "
    "over the validation set at threshold 0.5. The published U-Net figure (0.839, "
    "pytorch-nested-unet README) used 100 epochs and another split."
)

# Lab 4's printed results.
LAB4_RESULT_ROW = re.compile(r"^(random|scaffold)?\s*(image|ECFP4 \+ CNN features|ECFP4|CNN features)\s+"
                             r"(CNN \(end to end\)|logistic regression|random forest)\s+(-?[\d.]+)\s+([\d.]+|NaN)\s+([\d.]+)$",
                             re.MULTILINE)
LAB4_SPREAD_LINE = re.compile(r"^MCC over (\d+) random splits: mean ([\d.]+), SD ([\d.]+)", re.MULTILINE)
LAB4_HEAT_LINE = re.compile(r"^Grad-CAM heat on the background: (\d+)% .* the background is (\d+)% of the image", re.MULTILINE)
LAB4_CAVEAT = (
    "Lab 4's figures are on the REAL ChEMBL set (Koutsoukas et al. 2017), with the lab's own "
    "stratified random 80/20 split and its scaffold split; the published MCC (from the seed "
    "notebook's quote of the paper) is for the paper's random splits."
)


# Lab 5's printed results.
LAB5_GCN_LINE = re.compile(r"^your GCN: test accuracy ([\d.]+) \+- ([\d.]+) over (\d+) seed", re.MULTILINE)
LAB5_PYG_LINE = re.compile(r"^PyG's GCNConv: test accuracy ([\d.]+) \+- ([\d.]+)", re.MULTILINE)
LAB5_SEED_LINE = re.compile(r"^seed (\d+): best epoch (\d+), validation ([\d.]+), test ([\d.]+)$", re.MULTILINE)
LAB5_RMSE_LINE = re.compile(r"^(esol|freesolv), (scaffold|random) split: train (\d+), validation (\d+), test (\d+); "
                            r"test RMSE: forest ([\d.]+), GNN ([\d.]+)$", re.MULTILINE)
LAB5_TOX21_LINE = re.compile(r"^mean test ROC AUC over (\d+) assays: ([\d.]+)$", re.MULTILINE)
LAB5_CAVEAT = (
    "All Lab 5 figures are on the REAL data from the offline mirror (CiteSeer Planetoid split; "
    "ESOL, FreeSolv and Tox21 from MoleculeNet), one run of the notebook with its fixed seeds."
)

# Lab 6's printed results.
LAB6_F1_LINE = re.compile(r"^GAD test F1 \(deduplicated, (\d+) sentences\): TF-IDF \+ logistic regression ([\d.]+), "
                          r"your encoder ([\d.]+)$", re.MULTILINE)
LAB6_BERT_LINE = re.compile(r"^GAD test F1 of the BERT model \((.+)\): ([\d.]+)$", re.MULTILINE)
LAB6_SPLICE_LINE = re.compile(r"test accuracy ([\d.]+) on (\d+) distinct sequences")
LAB6_CONSENSUS_LINE = re.compile(r"^(EI|IE): most important base at -2, -1, \+1, \+2: (.+)$", re.MULTILINE)
#: Lab 6: the test accuracy on the deduplicated splice junctions that lab mode should reach.
SPLICE_ACCURACY_TARGET = 0.95
LAB6_CAVEAT = (
    "All Lab 6 figures are on the REAL data from the offline mirror (GAD fold 1 of BioBERT's folds, "
    "deduplicated; UCI splice junctions, deduplicated), one run of the notebook with its fixed seeds. "
    "No pretrained BERT is available here: the BERT model is a small one trained from scratch."
)


@dataclasses.dataclass(frozen=True)
class Lab:
    """What differs between the labs: notebook, budget, data and what the notebook prints."""

    name: str
    notebook: Path
    #: Lab mode should finish within this many seconds per run on a 2-core CPU.
    budget_seconds: int
    caveat: str
    #: (args) -> {"data_dir", "seconds", "images", ...}; raises LabDataUnavailable.
    prepare_lab_data: Callable[[argparse.Namespace], dict]
    #: (data_root) -> {"data_dir", "seconds", "images"}.
    prepare_grading_data: Callable[[Path], dict]
    #: (notebook text) -> the results the notebook printed, for the run's JSON record.
    parse_output: Callable[[str], dict]
    #: (a lab-mode run) -> one line about its printed results.
    describe_run: Callable[[dict], str]
    #: (the lab-mode runs) -> summary lines printed at the end.
    summarize_results: Callable[[List[dict]], List[str]]


class LabDataUnavailable(Exception):
    """Lab mode cannot run: data it needs is not on this machine (the message says which)."""


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


def machine_info(lab: Lab) -> dict:
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
        "lab": lab.name,
        "notebook": str(lab.notebook.relative_to(PROJECT_ROOT)),
        "notebook_sha256": hashlib.sha256(lab.notebook.read_bytes()).hexdigest(),
    }


def load_average() -> list:
    """1-, 5- and 15-minute load averages (other processes slow the runs down)."""
    return [round(x, 2) for x in os.getloadavg()]


# --- Data --------------------------------------------------------------------------------


def prepare_mednist_standin(data_root: Path, images_per_class: int) -> dict:
    """Make (or reuse) the full-size stand-in and a data dir whose MedNIST/ is that stand-in.

    Returns {"data_dir", "seconds" (generation or reuse check), "images", "standin"}.
    """
    data_dir = data_root / f"lab-{images_per_class}-per-class"
    started = time.perf_counter()
    standin = mednist.make_synthetic(data_dir, images_per_class=images_per_class, image_size=64)
    seconds = time.perf_counter() - started
    link = data_dir / mednist.FOLDER
    if link.is_symlink() and os.readlink(link) != standin.name:
        link.unlink()
    if not link.exists():
        link.symlink_to(standin.name, target_is_directory=True)  # relative: MedNIST -> MedNIST-synthetic
    found = mednist.find(data_dir)
    if found is None or found.resolve() != standin.resolve():
        raise RuntimeError(f"dlmed.datasets.mednist.find({data_dir}) does not accept {link} -> {standin}")
    return {"data_dir": str(data_dir), "seconds": round(seconds, 2), "images": 6 * images_per_class,
            "standin": str(standin)}


def _symlink(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target`` (replacing a symlink elsewhere; never a real file)."""
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return
        link.unlink()
    elif link.exists():
        raise RuntimeError(f"{link} exists and is not a symlink; remove it or use another --data-root")
    link.symlink_to(target, target_is_directory=target.is_dir())


def prepare_lab1_data(args: argparse.Namespace) -> dict:
    return prepare_mednist_standin(args.data_root, args.images_per_class)


def prepare_lab2_data(args: argparse.Namespace) -> dict:
    """A data dir with MedNIST/ (the cached full-size stand-in) and pneumoniamnist.npz (the real file).

    Both are symlinks: ``MedNIST`` -> the stand-in that Lab 1's benchmark uses too (made if
    needed), ``pneumoniamnist.npz`` -> ``args.pneumoniamnist`` (read, never written). The
    dir must hold no ``MURA-v1.1``, so that the notebook makes its synthetic MURA tree.
    """
    source = Path(args.pneumoniamnist).resolve()
    if not source.is_file():
        raise LabDataUnavailable(
            f"PneumoniaMNIST is not at {args.pneumoniamnist}; Lab 2's lab mode trains on the real file "
            f"and never on a stand-in. Pass --pneumoniamnist PATH to a copy of pneumoniamnist.npz."
        )
    standin = prepare_mednist_standin(args.data_root, args.images_per_class)
    data_dir = args.data_root / f"lab2-{args.images_per_class}-per-class"
    data_dir.mkdir(parents=True, exist_ok=True)
    _symlink(data_dir / mednist.FOLDER, Path(standin["standin"]).resolve())
    _symlink(data_dir / pneumoniamnist.REMOTE.filename, source)
    found = mednist.find(data_dir)
    if found is None or found.resolve() != Path(standin["standin"]).resolve():
        raise RuntimeError(f"dlmed.datasets.mednist.find({data_dir}) does not accept its MedNIST link")
    if (data_dir / mura.FOLDER).exists() or mura.find(data_dir) is not None:
        raise RuntimeError(f"{data_dir / mura.FOLDER} exists; the notebook would use it instead of its synthetic MURA tree")
    # Check the file now (the notebook would fail after Part A otherwise); nothing is written.
    splits = pneumoniamnist.load(data_dir, allow_download=False, show_progress=False)
    return {
        "data_dir": str(data_dir),
        "seconds": standin["seconds"],
        "images": standin["images"],
        "mednist": f"{mednist.FOLDER} -> {standin['standin']} (SYNTHETIC stand-in)",
        "pneumoniamnist": f"{pneumoniamnist.REMOTE.filename} -> {source} (real; MD5 {hashlib.md5(source.read_bytes()).hexdigest()})",
        "pneumoniamnist_images": {split: len(labels) for split, (_, labels) in splits.items()},
    }


def prepare_lab3_data(args: argparse.Namespace) -> dict:
    """A data dir holding only ``dsb2018_96.zip``, a symlink to ``args.dsb2018`` (read, never written)."""
    source = Path(args.dsb2018).resolve()
    if not source.is_file():
        raise LabDataUnavailable(
            f"DSB2018 is not at {args.dsb2018}; Lab 3's lab mode trains on the real data and never on a "
            f"stand-in. Pass --dsb2018 PATH to a copy of {dsb2018.PREPARED_ZIP}."
        )
    data_dir = args.data_root / "lab3"
    data_dir.mkdir(parents=True, exist_ok=True)
    _symlink(data_dir / dsb2018.PREPARED_ZIP, source)
    if dsb2018.find(data_dir) != data_dir / dsb2018.PREPARED_ZIP:
        raise RuntimeError(f"{data_dir} holds a {dsb2018.FOLDER} folder; the notebook would use it instead of the zip")
    data = dsb2018.load(data_dir, allow_download=False, show_progress=False)  # checks it now; writes nothing
    return {
        "data_dir": str(data_dir),
        "seconds": 0.0,
        "images": len(data["ids"]),
        "dsb2018": f"{dsb2018.PREPARED_ZIP} -> {source} (real; sha256 {hashlib.sha256(source.read_bytes()).hexdigest()})",
    }


def prepare_standin_data(data_dir: Path, modules, images: int = 0) -> dict:
    """A data dir holding only the stand-ins that grading mode makes for the data modules ``modules``."""
    started = time.perf_counter()
    for module in modules:
        module.make_synthetic(data_dir)
    real = [module.NAME for module in modules if module.find(data_dir) is not None]
    if real:
        raise RuntimeError(f"{data_dir} holds the real {', '.join(real)}; grading mode would use it instead of the stand-in")
    return {"data_dir": str(data_dir), "seconds": round(time.perf_counter() - started, 2), "images": images}


def prepare_lab3_grading_data(data_root: Path) -> dict:
    """A data dir with the DSB2018 stand-in that grading mode makes (and no real data)."""
    return prepare_standin_data(data_root / "lab3-grading", [dsb2018], images=dsb2018.GRADING_IMAGES)


def make_grading_dir(data_dir: Path) -> dict:
    """A data dir without MedNIST/, holding the small stand-in that grading mode makes.

    It is made here, before timing, with the settings ``mednist.for_notebook`` uses in grading
    mode, so that every timed run reuses it (making it takes well under a second).
    """
    per_class = max(GRADING_LIMITS["images_per_class"], mednist.SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS)
    started = time.perf_counter()
    mednist.make_synthetic(data_dir, images_per_class=per_class)
    seconds = time.perf_counter() - started
    if mednist.find(data_dir) is not None:
        raise RuntimeError(f"{data_dir} holds a MedNIST/ folder; grading mode would use it instead of the small stand-in")
    return {"data_dir": str(data_dir), "seconds": round(seconds, 2), "images": 6 * per_class}


def prepare_lab5_data(args: argparse.Namespace) -> dict:
    """A data dir with symlinks to the real CiteSeer folder and the three MoleculeNet tables (read, never written)."""
    shared = Path(args.shared_data).resolve()
    sources = {citeseer.FOLDER: shared / citeseer.FOLDER,
               **{remote.filename: shared / remote.filename for remote in moleculenet.REMOTES.values()}}
    missing = [str(path) for path in sources.values() if not path.exists()]
    if missing:
        raise LabDataUnavailable(
            f"Lab 5's lab mode runs on the real data, and {', '.join(missing)} is not there. Pass --shared-data "
            f"PATH to a folder holding {citeseer.FOLDER}/ and the three MoleculeNet CSV files.")
    data_dir = args.data_root / "lab5-real"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, target in sources.items():
        _symlink(data_dir / name, target)
    started = time.perf_counter()
    if citeseer.find(data_dir) is None or moleculenet.find(data_dir) is None:
        raise RuntimeError(f"{data_dir}: the data modules do not find the linked files")
    return {"data_dir": str(data_dir), "seconds": round(time.perf_counter() - started, 2), "images": 0,
            "data": {name: str(target) for name, target in sources.items()}}


def prepare_lab5_grading_data(data_root: Path) -> dict:
    """A data dir holding the CiteSeer and MoleculeNet stand-ins grading mode makes (made here, not timed)."""
    return prepare_standin_data(data_root / "lab5-grading", [citeseer, moleculenet])


def prepare_lab6_data(args: argparse.Namespace) -> dict:
    """A data dir with symlinks to the real GAD folds and the splice file (read, never written)."""
    shared = Path(args.shared_data).resolve()
    sources = {gad.FOLDER: shared / gad.FOLDER, splice.REMOTE.filename: shared / splice.REMOTE.filename}
    missing = [str(path) for path in sources.values() if not path.exists()]
    if missing:
        raise LabDataUnavailable(
            f"Lab 6's lab mode runs on the real data, and {', '.join(missing)} is not there. Pass --shared-data "
            f"PATH to a folder holding {gad.FOLDER}/ and {splice.REMOTE.filename}.")
    data_dir = args.data_root / "lab6-real"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, target in sources.items():
        _symlink(data_dir / name, target)
    if gad.find(data_dir) is None or splice.find(data_dir) is None:
        raise RuntimeError(f"{data_dir}: the data modules do not find the linked files")
    return {"data_dir": str(data_dir), "seconds": 0.0, "images": 0,
            "data": {name: str(target) for name, target in sources.items()}}


def prepare_lab6_grading_data(data_root: Path) -> dict:
    """A data dir holding the GAD and splice stand-ins grading mode makes (made here, not timed)."""
    return prepare_standin_data(data_root / "lab6-grading", [gad, splice])


def prepare_lab1_grading_data(data_root: Path) -> dict:
    return make_grading_dir(data_root / "grading")


def prepare_lab2_grading_data(data_root: Path) -> dict:
    """As for Lab 1, plus the PneumoniaMNIST and MURA stand-ins that Lab 2 makes while graded.

    Both are made beforehand with the calls the notebook and ``pneumoniamnist.for_notebook``
    make, so that the timed runs reuse them. The dir must hold neither the real
    pneumoniamnist.npz nor MURA-v1.1 (grading would use them).
    """
    data_dir = data_root / "lab2-grading"
    result = make_grading_dir(data_dir)
    started = time.perf_counter()
    pneumoniamnist.make_synthetic(data_dir)
    mura.make_synthetic(data_dir / mura.SYNTHETIC_ROOT, patients_per_part=3)  # as the notebook's Part B cell
    result["seconds"] = round(result["seconds"] + time.perf_counter() - started, 2)
    for name in (pneumoniamnist.REMOTE.filename, mura.FOLDER):
        if (data_dir / name).exists():
            raise RuntimeError(f"{data_dir / name} exists; grading mode would use it instead of a stand-in")
    return result


# --- What the notebooks print --------------------------------------------------------------


def prepare_lab4_data(args: argparse.Namespace) -> dict:
    """A data dir with a symlink to the real set the notebook uses (CHEMBL219; read, never written)."""
    target = chembl.DEFAULT_TARGET
    name = chembl.remote(target).filename
    source = (Path(args.chembl_dir) / name).resolve()
    if not source.is_file():
        raise LabDataUnavailable(f"{name} is not in {args.chembl_dir}; pass --chembl-dir FOLDER holding the ChEMBL sets.")
    data_dir = args.data_root / f"lab4-{target}"
    data_dir.mkdir(parents=True, exist_ok=True)
    _symlink(data_dir / name, source)
    table = chembl.load(data_dir, allow_download=False, show_progress=False, target=target)
    return {"data_dir": str(data_dir), "seconds": 0.0, "images": len(table),
            "chembl": f"{name} -> {source} (real; SHA256 {hashlib.sha256(source.read_bytes()).hexdigest()})"}


def prepare_lab4_grading_data(data_root: Path) -> dict:
    """A data dir without the real sets, holding the stand-in that grading mode makes."""
    return prepare_standin_data(data_root / "lab4-grading", [chembl], images=len(chembl.STAND_IN_MOLECULES))


def parse_lab4_output(text: str) -> dict:
    rows, split = [], None
    for match in LAB4_RESULT_ROW.finditer(text):
        split = match.group(1) or split
        rows.append({"split": split, "features": match.group(2), "model": match.group(3), "mcc": float(match.group(4)),
                     "roc_auc": float(match.group(5)), "accuracy": float(match.group(6))})
    result = {"test_results": rows, "data": "SYNTHETIC stand-in" if "SYNTHETIC stand-in" in text else "real ChEMBL set"}
    spread = LAB4_SPREAD_LINE.search(text)
    if spread:
        result["ecfp_logistic_mcc_over_random_splits"] = {"repeats": int(spread.group(1)), "mean": float(spread.group(2)),
                                                          "sd": float(spread.group(3))}
    heat = LAB4_HEAT_LINE.search(text)
    if heat:
        result["gradcam_background_percent"] = {"heat": int(heat.group(1)), "area": int(heat.group(2))}
    return result


def _lab4_row_text(row: dict) -> str:
    return f"{row['split']}/{row['features']}/{row['model']}: MCC {row['mcc']:.3f}, ROC AUC {row['roc_auc']:.3f}"


def describe_lab4_run(run: dict) -> str:
    best = {split: max((r for r in run.get("test_results", []) if r["split"] == split), key=lambda r: r["mcc"], default=None)
            for split in ("random", "scaffold")}
    return "; ".join(f"best on {split}: {_lab4_row_text(row)}" for split, row in best.items() if row) or "no results printed"


def summarize_lab4_results(runs: List[dict]) -> List[str]:
    lines = []
    for run in runs:
        lines += [_lab4_row_text(row) for row in run.get("test_results", [])]
        if "ecfp_logistic_mcc_over_random_splits" in run:
            lines.append(f"ECFP4 + logistic regression over random splits: {run['ecfp_logistic_mcc_over_random_splits']}")
        if "gradcam_background_percent" in run:
            lines.append(f"Grad-CAM heat on the background (percent): {run['gradcam_background_percent']}")
    return lines


def parse_lab1_output(text: str) -> dict:
    result = {}
    accuracy = LAB1_ACCURACY_LINE.search(text)
    if accuracy:
        result["test_accuracy_percent"] = {
            "fully_connected": float(accuracy.group(1)),
            "cnn": float(accuracy.group(2)),
            "data": "synthetic stand-in (not medical images)",
        }
    counts = {name: int(n) for name, n in LAB1_CLASS_COUNT_LINE.findall(text) if name in mednist.CLASSES}
    if counts:
        result["images_per_class_seen"] = counts
    return result


def describe_lab1_run(run: dict) -> str:
    accuracy = run.get("test_accuracy_percent", {})
    return (f"test accuracy on SYNTHETIC data: fully connected {accuracy.get('fully_connected')}%, "
            f"CNN {accuracy.get('cnn')}%")


def summarize_lab1_results(runs: List[dict]) -> List[str]:
    accuracies = [r["test_accuracy_percent"] for r in runs if "test_accuracy_percent" in r]
    if not accuracies:
        return []
    return ["test accuracy (SYNTHETIC data), per run: " + "; ".join(
        f"fully connected {a['fully_connected']}%, CNN {a['cnn']}%" for a in accuracies)]


def parse_lab2_output(text: str) -> dict:
    result = {}
    part_a = LAB2_PART_A_ACCURACY_LINE.search(text)
    if part_a:
        result["part_a_test_accuracy_percent"] = float(part_a.group(1))
        result["part_a_data"] = "synthetic MedNIST stand-in (not medical images): meaningless as an accuracy"
    counts = LAB2_PART_A_COUNTS_LINE.search(text)
    if counts:
        result["part_a_images"] = {"train": int(counts.group(1)), "test": int(counts.group(2)),
                                   "classes": int(counts.group(3))}
    pretrained = LAB2_PRETRAINED_LINE.search(text)
    if pretrained:
        result["imagenet_weights"] = pretrained.group(1) == "yes"
    amp = {name: float(ms) for name, ms in LAB2_AMP_LINE.findall(text)}
    if amp:
        result["ms_per_step_of_8_images"] = amp
    part_b = LAB2_PART_B_TEST_LINE.search(text)
    if part_b:
        synthetic = re.search(r"dlmed: using the SYNTHETIC stand-in.*pneumoniamnist", text)
        result["part_b_test"] = {
            "roc_auc": float(part_b.group(1)),
            "accuracy_percent": float(part_b.group(2)),
            "cohen_kappa": float(part_b.group(3)),
            "data": "SYNTHETIC PneumoniaMNIST stand-in" if synthetic else "real PneumoniaMNIST",
        }
    validation = LAB2_VALIDATION_AUC_LINE.search(text)
    if validation:
        result["part_b_validation_roc_auc"] = float(validation.group(1))
    threshold = LAB2_THRESHOLD_LINE.search(text)
    if threshold:
        result["part_b_threshold"] = float(threshold.group(1))
    splits = {split: {"images": int(n), "pneumonia_percent": int(p)} for split, n, p in LAB2_PNEUMONIA_SPLIT_LINE.findall(text)}
    if splits:
        result["part_b_splits"] = splits
    result["mura"] = "real MURA" if "MURA found:" in text else (
        "synthetic tree" if "SYNTHETIC MURA-like tree" in text else "unknown")
    return result


def _part_b_text(part_b: dict) -> str:
    return (f"test ROC AUC {part_b['roc_auc']:.3f} | accuracy {part_b['accuracy_percent']}% | "
            f"Cohen's kappa {part_b['cohen_kappa']:.3f}")


def describe_lab2_run(run: dict) -> str:
    part_b = run.get("part_b_test")
    b_text = f"{_part_b_text(part_b)} ({part_b['data']})" if part_b else "no Part B result printed"
    return f"Part B: {b_text}; Part A test accuracy on SYNTHETIC data: {run.get('part_a_test_accuracy_percent')}%"


def summarize_lab2_results(runs: List[dict]) -> List[str]:
    lines = []
    part_b = [r["part_b_test"] for r in runs if "part_b_test" in r]
    if part_b:
        aucs = [p["roc_auc"] for p in part_b]
        missed = sum(auc < PNEUMONIA_AUC_TARGET for auc in aucs)
        verdict = (f"at least {PNEUMONIA_AUC_TARGET} in every run" if not missed
                   else f"BELOW the target of {PNEUMONIA_AUC_TARGET} in {missed} of {len(aucs)} run(s)")
        lines.append(f"Part B, {part_b[0]['data']}, per run: " + "; ".join(_part_b_text(p) for p in part_b))
        lines.append(f"  test ROC AUC median {statistics.median(aucs):.3f}, min {min(aucs):.3f}: {verdict}")
    part_a = [r["part_a_test_accuracy_percent"] for r in runs if "part_a_test_accuracy_percent" in r]
    if part_a:
        lines.append("Part A test accuracy on the SYNTHETIC MedNIST stand-in (meaningless as an accuracy), per run: "
                     + ", ".join(f"{a}%" for a in part_a))
    pretrained = {r.get("imagenet_weights") for r in runs}
    lines.append(f"ImageNet weights used: {', '.join(sorted('yes' if p else 'no' if p is False else 'unknown' for p in pretrained))}")
    return lines


def parse_lab3_output(text: str) -> dict:
    result = {}
    unet = LAB3_UNET_LINE.search(text)
    if unet:
        result["unet_validation"] = {"iou_pooled": float(unet.group(1)), "iou_mean_per_image": float(unet.group(2)),
                                     "dice_mean_per_image": float(unet.group(3))}
    monai = LAB3_MONAI_LINE.search(text)
    if monai:
        result["monai_validation_iou_pooled"] = float(monai.group(1))
    tta = LAB3_TTA_LINE.search(text)
    if tta:
        result["tta_validation_iou_pooled"] = float(tta.group(2))
    for monai_prefix, seconds in LAB3_TIME_LINES.findall(text):
        result["monai_training_seconds" if monai_prefix else "unet_training_seconds"] = int(seconds)
    epochs = LAB3_MONAI_EPOCHS_LINE.search(text)
    if epochs:
        result["monai_epochs"] = int(epochs.group(1))
    count = LAB3_COUNT_LINE.search(text)
    if count:
        result["count"] = {"median_absolute_error": float(count.group(1)), "exact_percent": int(count.group(2))}
    result["data"] = "SYNTHETIC stand-in" if "SYNTHETIC stand-in" in text else "real DSB2018"
    return result


def describe_lab3_run(run: dict) -> str:
    unet, count = run.get("unet_validation", {}), run.get("count", {})
    return (f"validation IoU (pooled, {run.get('data')}): your U-Net {unet.get('iou_pooled')} "
            f"(trained {run.get('unet_training_seconds')} s), with TTA {run.get('tta_validation_iou_pooled')}, "
            f"MONAI UNet {run.get('monai_validation_iou_pooled')} ({run.get('monai_epochs')} epochs, "
            f"{run.get('monai_training_seconds')} s); nuclei count: median absolute error "
            f"{count.get('median_absolute_error')}, exact on {count.get('exact_percent')}% of the validation images")


def summarize_lab3_results(runs: List[dict]) -> List[str]:
    ious = [r["unet_validation"]["iou_pooled"] for r in runs if "unet_validation" in r]
    if not ious:
        return []
    missed = sum(iou < DSB2018_IOU_TARGET for iou in ious)
    verdict = (f"at least {DSB2018_IOU_TARGET} in every run" if not missed
               else f"BELOW the target of {DSB2018_IOU_TARGET} in {missed} of {len(ious)} run(s)")
    lines = ["per run: " + "; ".join(describe_lab3_run(r) for r in runs),
             f"  your U-Net's validation IoU median {statistics.median(ious):.3f}, min {min(ious):.3f}: {verdict}"]
    return lines


def parse_lab5_output(text: str) -> dict:
    result = {}
    ours = LAB5_GCN_LINE.search(text)
    if ours:
        result["citeseer_gcn"] = {"mean": float(ours.group(1)), "std": float(ours.group(2)), "seeds": int(ours.group(3)),
                                  "per_seed": [float(m[3]) for m in LAB5_SEED_LINE.findall(text)]}
    pyg = LAB5_PYG_LINE.search(text)
    if pyg:
        result["citeseer_pyg_gcnconv"] = {"mean": float(pyg.group(1)), "std": float(pyg.group(2))}
    rmse = {}
    for name, split, train, val, test, forest, gnn in LAB5_RMSE_LINE.findall(text):
        rmse[f"{name}_{split}"] = {"sizes": [int(train), int(val), int(test)], "forest": float(forest), "gnn": float(gnn)}
    if rmse:
        result["test_rmse"] = rmse
    tox = LAB5_TOX21_LINE.search(text)
    if tox:
        result["tox21_mean_roc_auc"] = {"assays": int(tox.group(1)), "value": float(tox.group(2))}
    result["synthetic"] = "dlmed: using the SYNTHETIC" in text
    return result


def describe_lab5_run(run: dict) -> str:
    gcn, pyg, rmse = run.get("citeseer_gcn"), run.get("citeseer_pyg_gcnconv"), run.get("test_rmse", {})
    parts = []
    if gcn and pyg:
        parts.append(f"CiteSeer GCN {gcn['mean']:.3f} +- {gcn['std']:.3f}, PyG {pyg['mean']:.3f} +- {pyg['std']:.3f}")
    if "esol_scaffold" in rmse:
        parts.append(f"ESOL scaffold RMSE GNN {rmse['esol_scaffold']['gnn']:.3f} vs forest {rmse['esol_scaffold']['forest']:.3f}")
    if "tox21_mean_roc_auc" in run:
        parts.append(f"Tox21 mean ROC AUC {run['tox21_mean_roc_auc']['value']:.3f}")
    return "; ".join(parts) or "no results printed"


def summarize_lab5_results(runs: List[dict]) -> List[str]:
    lines = []
    for run in runs:
        gcn = run.get("citeseer_gcn")
        if gcn:
            verdict = "meets" if gcn["mean"] >= CITESEER_ACCURACY_TARGET else "is BELOW"
            lines.append(f"CiteSeer: your GCN {gcn['mean']:.3f} +- {gcn['std']:.3f} over {gcn['seeds']} seeds "
                         f"{verdict} the target {CITESEER_ACCURACY_TARGET} (Kipf & Welling 2017: 0.703); PyG's GCNConv "
                         f"{run['citeseer_pyg_gcnconv']['mean']:.3f} +- {run['citeseer_pyg_gcnconv']['std']:.3f}")
        for key, values in run.get("test_rmse", {}).items():
            better = "below" if values["gnn"] < values["forest"] else "NOT below"
            lines.append(f"{key}: test RMSE GNN {values['gnn']:.3f} ({better} the forest's {values['forest']:.3f}); "
                         f"train/val/test {values['sizes']}")
        if "tox21_mean_roc_auc" in run:
            lines.append(f"Tox21 scaffold split: mean test ROC AUC {run['tox21_mean_roc_auc']['value']:.3f} "
                         f"over {run['tox21_mean_roc_auc']['assays']} assays")
    return lines


def parse_lab6_output(text: str) -> dict:
    result = {"synthetic": "dlmed: using the SYNTHETIC" in text}
    f1 = LAB6_F1_LINE.search(text)
    if f1:
        result["gad_f1"] = {"test_sentences": int(f1.group(1)), "tfidf_logreg": float(f1.group(2)),
                            "encoder": float(f1.group(3))}
    bert = LAB6_BERT_LINE.search(text)
    if bert:
        result["gad_f1_bert"] = {"model": bert.group(1), "f1": float(bert.group(2))}
    accuracy = LAB6_SPLICE_LINE.search(text)
    if accuracy:
        result["splice_test_accuracy"] = {"value": float(accuracy.group(1)), "sequences": int(accuracy.group(2))}
    consensus = dict(LAB6_CONSENSUS_LINE.findall(text))
    if consensus:
        result["consensus"] = consensus
    return result


def describe_lab6_run(run: dict) -> str:
    parts = []
    if "gad_f1" in run:
        parts.append(f"GAD F1 TF-IDF+LR {run['gad_f1']['tfidf_logreg']:.3f}, encoder {run['gad_f1']['encoder']:.3f}")
    if "gad_f1_bert" in run:
        parts.append(f"BERT {run['gad_f1_bert']['f1']:.3f}")
    if "splice_test_accuracy" in run:
        parts.append(f"splice test accuracy {run['splice_test_accuracy']['value']:.3f}")
    return "; ".join(parts) or "no results printed"


def summarize_lab6_results(runs: List[dict]) -> List[str]:
    lines = []
    for run in runs:
        if "gad_f1" in run:
            f1 = run["gad_f1"]
            lines.append(f"GAD fold 1, deduplicated ({f1['test_sentences']} test sentences): F1 TF-IDF + logistic "
                         f"regression {f1['tfidf_logreg']:.3f}, from-scratch encoder {f1['encoder']:.3f}; published "
                         f"BioBERT {gad.PUBLISHED_BIOBERT['f1'] / 100:.4f} (10 folds, with duplicates; not re-read here)")
        if "gad_f1_bert" in run:
            lines.append(f"GAD F1 of the BERT model ({run['gad_f1_bert']['model']}): {run['gad_f1_bert']['f1']:.3f}")
        if "splice_test_accuracy" in run:
            value = run["splice_test_accuracy"]["value"]
            verdict = "meets" if value >= SPLICE_ACCURACY_TARGET else "is BELOW"
            lines.append(f"splice junctions: test accuracy {value:.3f} on {run['splice_test_accuracy']['sequences']} "
                         f"distinct sequences {verdict} the target {SPLICE_ACCURACY_TARGET}")
        for name, bases in run.get("consensus", {}).items():
            lines.append(f"  {name}: {bases}")
    return lines


LABS = {
    "lab1": Lab(
        name="lab1",
        notebook=PROJECT_ROOT / "source" / "lab1" / "lab1_mednist_from_scratch.ipynb",
        budget_seconds=300,
        caveat=LAB1_CAVEAT,
        prepare_lab_data=prepare_lab1_data,
        prepare_grading_data=prepare_lab1_grading_data,
        parse_output=parse_lab1_output,
        describe_run=describe_lab1_run,
        summarize_results=summarize_lab1_results,
    ),
    "lab2": Lab(
        name="lab2",
        notebook=PROJECT_ROOT / "source" / "lab2" / "lab2_mednist_mura_modern_practice.ipynb",
        budget_seconds=600,
        caveat=LAB2_CAVEAT,
        prepare_lab_data=prepare_lab2_data,
        prepare_grading_data=prepare_lab2_grading_data,
        parse_output=parse_lab2_output,
        describe_run=describe_lab2_run,
        summarize_results=summarize_lab2_results,
    ),
    "lab3": Lab(
        name="lab3",
        notebook=PROJECT_ROOT / "source" / "lab3" / "lab3_nuclei_segmentation.ipynb",
        budget_seconds=600,
        caveat=LAB3_CAVEAT,
        prepare_lab_data=prepare_lab3_data,
        prepare_grading_data=prepare_lab3_grading_data,
        parse_output=parse_lab3_output,
        describe_run=describe_lab3_run,
        summarize_results=summarize_lab3_results,
    ),
    "lab4": Lab(
        name="lab4",
        notebook=PROJECT_ROOT / "source" / "lab4" / "lab4_molecules_images_features.ipynb",
        budget_seconds=600,
        caveat=LAB4_CAVEAT,
        prepare_lab_data=prepare_lab4_data,
        prepare_grading_data=prepare_lab4_grading_data,
        parse_output=parse_lab4_output,
        describe_run=describe_lab4_run,
        summarize_results=summarize_lab4_results,
    ),
    "lab5": Lab(
        name="lab5",
        notebook=PROJECT_ROOT / "source" / "lab5" / "lab5_graphs_citations_molecules.ipynb",
        budget_seconds=600,
        caveat=LAB5_CAVEAT,
        prepare_lab_data=prepare_lab5_data,
        prepare_grading_data=prepare_lab5_grading_data,
        parse_output=parse_lab5_output,
        describe_run=describe_lab5_run,
        summarize_results=summarize_lab5_results,
    ),
    "lab6": Lab(
        name="lab6",
        notebook=PROJECT_ROOT / "source" / "lab6" / "lab6_text_and_dna_sequences.ipynb",
        budget_seconds=600,
        caveat=LAB6_CAVEAT,
        prepare_lab_data=prepare_lab6_data,
        prepare_grading_data=prepare_lab6_grading_data,
        parse_output=parse_lab6_output,
        describe_run=describe_lab6_run,
        summarize_results=summarize_lab6_results,
    ),
}


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
    # A figure's "<Figure ...>" has no line end: without one here, a line printed after it would
    # not start a line, and the ^-anchored result patterns would miss it (Lab 3's count line).
    return "\n".join(parts)


def execute_notebook(lab: Lab, mode: str, data_dir: str, cell_timeout: int) -> dict:
    """Execute the lab's solution notebook once in a fresh kernel and a temporary cwd; return timings.

    ``mode`` is "lab" (NBGRADER_EXECUTION unset) or "grading" (NBGRADER_EXECUTION=autograde).
    Raises CellExecutionError if a cell fails.
    """
    notebook = nbformat.read(lab.notebook, as_version=4)
    env = dict(os.environ)
    env.pop("NBGRADER_EXECUTION", None)
    if mode == "grading":
        env["NBGRADER_EXECUTION"] = "autograde"
    env["DLMED_DATA"] = data_dir
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix=f"bench-{lab.name}-{mode}-") as workdir:
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
    result.update(lab.parse_output(text))
    result["data_source_lines"] = [line for line in text.splitlines() if line.startswith("dlmed:")]
    return result


# --- Autograding ---------------------------------------------------------------------------


def autograde_runs(lab: Lab, repeats: int, grading_data_dir: str, workdir: Path, report) -> dict:
    """Generate the lab once in a scratch course, then autograde one submission ``repeats`` times."""
    os.environ["DLMED_DATA"] = grading_data_dir  # inherited by nbgrader and its kernels
    os.environ.pop("NBGRADER_EXECUTION", None)
    workspace = course.make_workspace(PROJECT_ROOT, workdir / "course")
    started = time.perf_counter()
    course.generate(workspace, [lab.name])
    generate_seconds = time.perf_counter() - started
    name = course.lab_notebook_name(workspace, lab.name)
    course.add_submission(workspace, lab.name, "reference", workspace / "source" / lab.name / name, name)

    runs = []
    for repeat in range(repeats):
        load_before = load_average()
        started = time.perf_counter()
        course.run_nbgrader(["autograde", lab.name, "--force"], workspace)
        seconds = time.perf_counter() - started
        scores = course.read_scores(workspace, lab.name, name, ["reference"])
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
    parser.add_argument("--lab", choices=sorted(LABS), default="lab1", help="which lab to time (default lab1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--lab-repeats", type=int, default=None,
                        help="runs of lab mode (default: --repeats); lab mode is the slow one")
    parser.add_argument("--skip-lab", action="store_true", help="do not time lab mode")
    parser.add_argument("--skip-grading", action="store_true", help="do not time grading mode")
    parser.add_argument("--skip-autograde", action="store_true", help="do not time nbgrader autograde")
    parser.add_argument("--images-per-class", type=int, default=10000,
                        help="images per class of the lab-mode MedNIST stand-in (default 10000, as real MedNIST; "
                             "Lab 1 keeps 2,000 of them per class, Lab 2 400)")
    parser.add_argument("--pneumoniamnist", type=Path, default=SHARED_PNEUMONIAMNIST,
                        help="Lab 2: the real pneumoniamnist.npz that lab mode links to (read only; "
                             "default: %(default)s)")
    parser.add_argument("--dsb2018", type=Path, default=SHARED_DSB2018,
                        help="Lab 3: the prepared dsb2018_96.zip that lab mode links to (read only; default: %(default)s)")

    parser.add_argument("--chembl-dir", type=Path, default=SHARED_CHEMBL,
                        help="Lab 4: the folder holding CHEMBL<target>_cl.csv (read only; default: the offline copy)")
    parser.add_argument("--shared-data", type=Path, default=SHARED_DATA,
                        help="Lab 5: the folder holding planetoid-citeseer/ and the MoleculeNet CSV files "
                             "(default: the read-only offline copies in ../shared/data)")
    parser.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "dlmed-bench-data",
                        help="where the stand-ins are made and cached (default: %(default)s)")
    parser.add_argument("--cell-timeout", type=int, default=3600,
                        help="seconds one cell may run before the run is abandoned (default 3600)")
    parser.add_argument("--top-cells", type=int, default=8, help="slowest lab-mode cells to print (default 8)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file for the raw timings (default: benchmarks/results/<lab>-<time>.json)")
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
    lab = LABS[args.lab]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / f"{lab.name}-{stamp}.json"
    budget_text = f"{lab.budget_seconds / 60:g}-MINUTE"

    def report(message: str) -> None:
        print(message, flush=True)

    results = {
        "machine": machine_info(lab),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "lab": lab.name,
            "repeats": args.repeats,
            "lab_repeats": args.lab_repeats,
            "images_per_class": args.images_per_class,
            "data_root": str(args.data_root),
            "lab_budget_seconds": lab.budget_seconds,
        },
        "caveat": lab.caveat,
    }
    if lab.name == "lab2":
        results["settings"]["pneumoniamnist"] = str(args.pneumoniamnist)
    if lab.name == "lab3":
        results["settings"]["dsb2018"] = str(args.dsb2018)
    report(f"{lab.name}: {results['machine']['notebook']}")
    report(f"machine: {results['machine']['nproc']} CPUs ({results['machine']['cpu_model']}), "
           f"{results['machine']['ram_gib']} GiB, Python {results['machine']['python']}, "
           f"torch {results['machine']['torch']}; load average {load_average()}")
    summaries = {}

    try:
        if not args.skip_lab:
            if lab.name == "lab3":
                report(f"preparing the lab-mode data: the real DSB2018 from {args.dsb2018} ...")
            elif lab.name in ("lab4", "lab5", "lab6"):
                report("preparing the lab-mode data: links to the real data (read-only offline copies) ...")
            else:
                report(f"preparing the lab-mode data: MedNIST stand-in of {args.images_per_class} images per class "
                       f"({6 * args.images_per_class} images; real MedNIST has {REAL_MEDNIST_IMAGES}) ...")
            try:
                lab_data = lab.prepare_lab_data(args)
            except LabDataUnavailable as error:
                results["lab_skipped"] = str(error)
                report(f"LAB MODE SKIPPED: {error}")
                lab_data = None
            if lab_data is not None:
                results["lab_data"] = lab_data
                report(f"  {lab_data['data_dir']} ready in {lab_data['seconds']:.1f} s (not part of the timings)")
                for key in ("mednist", "pneumoniamnist", "chembl", "dsb2018"):
                    if key in lab_data:
                        report(f"  {lab_data[key]}")
                results["lab"] = []
                for repeat in range(args.lab_repeats):
                    report(f"lab mode {repeat + 1}/{args.lab_repeats} ...")
                    run = execute_notebook(lab, "lab", lab_data["data_dir"], args.cell_timeout)
                    results["lab"].append(run)
                    save(results, output)
                    over = f"  OVER THE {budget_text} BUDGET" if run["total_seconds"] > lab.budget_seconds else ""
                    report(f"  {run['total_seconds']:.1f} s{over}; {lab.describe_run(run)}; "
                           f"load average {run['load_average_after']}")
                summaries["lab mode (whole notebook)"] = summarize([r["total_seconds"] for r in results["lab"]])

        if not args.skip_grading or not args.skip_autograde:
            grading_data = lab.prepare_grading_data(args.data_root)
            results["grading_data"] = grading_data

        if not args.skip_grading:
            results["grading"] = []
            for repeat in range(args.repeats):
                run = execute_notebook(lab, "grading", grading_data["data_dir"], args.cell_timeout)
                results["grading"].append(run)
                save(results, output)
                report(f"grading mode {repeat + 1}/{args.repeats}: {run['total_seconds']:.1f} s")
            summaries["grading mode (NBGRADER_EXECUTION=autograde)"] = summarize(
                [r["total_seconds"] for r in results["grading"]]
            )
            results["grading_cells_median"] = median_cell_times(results["grading"])

        if not args.skip_autograde:
            report(f"autograde: generating {lab.name} in a scratch course ...")
            with tempfile.TemporaryDirectory(prefix=f"bench-{lab.name}-course-") as workdir:
                results["autograde"] = autograde_runs(lab, args.repeats, grading_data["data_dir"], Path(workdir), report)
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
        verdict = "within" if lab_median <= lab.budget_seconds else "OVER"
        data_text = ("real DSB2018, 670 images" if lab.name == "lab3"
                     else "the real data sets, linked read-only" if lab.name in ("lab4", "lab5", "lab6")
                     else f"MedNIST stand-in of {6 * args.images_per_class} images; data generation excluded")
        report(f"\nlab mode: median {lab_median:.1f} s, {verdict} the {lab.budget_seconds} s budget ({data_text})")
        overhead = statistics.median(r["overhead_seconds"] for r in results["lab"])
        report(f"slowest lab-mode cells (median over {len(results['lab'])} run(s); "
               f"kernel start/stop and nbclient add {overhead:.1f} s):")
        for row in results["lab_cells_median"][: args.top_cells]:
            share = 100 * row["median_seconds"] / lab_median
            report(f"  {row['median_seconds']:8.1f} s {share:5.1f}%  {row['label']}")
        for line in lab.summarize_results(results["lab"]):
            report(line)
        report(lab.caveat)
    elif "lab_skipped" in results:
        report(f"\nlab mode was SKIPPED: {results['lab_skipped']}")
    if results.get("grading"):
        report(f"\nslowest grading-mode cells (median over {len(results['grading'])} run(s)):")
        for row in results["grading_cells_median"][:3]:
            report(f"  {row['median_seconds']:8.1f} s  {row['label']}")
    report(f"\nraw timings: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
