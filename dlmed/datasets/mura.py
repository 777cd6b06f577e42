"""MURA-v1.1 (Rajpurkar et al. 2017): find it, read its tables, and a synthetic stand-in.

MURA holds about 40,000 musculoskeletal radiographs (PNG) from 14,863 studies of seven
body parts, each study labelled normal (negative) or abnormal (positive). It needs
registration with its publisher, so this module never downloads it: copy the unzipped
``MURA-v1.1`` folder into the data folder (:func:`dlmed.datasets.data_dir`: the environment
variable ``DLMED_DATA``, or ``~/dlmed-data``). Its layout::

    MURA-v1.1/train_image_paths.csv     MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png
    MURA-v1.1/train_labeled_studies.csv MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1
    MURA-v1.1/valid_image_paths.csv     (and the same for valid)
    MURA-v1.1/valid_labeled_studies.csv
    MURA-v1.1/{train,valid}/XR_<BODY PART>/patient<NNNNN>/study<K>_<positive|negative>/image<M>.png

The CSVs have no header. For tests and offline practice :func:`make_synthetic` writes a
tiny tree with the same layout; its pictures are NOT medical images, and
:func:`for_notebook` uses it whenever MURA is absent. Nothing here runs on import.
"""

from pathlib import Path, PurePosixPath
from typing import Optional, Tuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from dlmed.datasets import PathLike, data_dir, is_synthetic, stand_in_settings
from dlmed.datasets._download import unavailable
from dlmed.datasets._standin import build_folder, write_marker

NAME = "MURA"
#: MURA cannot be downloaded automatically: it needs registration at :data:`REGISTRATION_URL`.
REMOTE = None
REGISTRATION_URL = "https://stanfordmlgroup.github.io/competitions/mura/"
FOLDER = "MURA-v1.1"
BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
SPLITS = ("train", "valid")
#: The folder (inside the data folder) :func:`for_notebook` writes the stand-in tree to.
SYNTHETIC_ROOT = "mura-synthetic"

# Bump when the drawings or the tree change, so that stand-ins made by older code are rebuilt.
_SYNTHETIC_VERSION = 1


def _csv_names(split: str) -> Tuple[str, str]:
    """The image-paths and labeled-studies CSV file names of ``split``."""
    return f"{split}_image_paths.csv", f"{split}_labeled_studies.csv"


def find(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return ``root/MURA-v1.1`` if it holds MURA's four CSV files, else ``None``.

    ``root`` defaults to :func:`dlmed.datasets.data_dir`. Nothing is downloaded or created.
    """
    folder = Path(root if root is not None else data_dir()) / FOLDER
    names = [name for split in SPLITS for name in _csv_names(split)]
    return folder if all((folder / name).is_file() for name in names) else None


def _how_to_get(root: Path) -> str:
    """The by-hand instructions every DataUnavailableError about MURA ends with."""
    return (
        f"  To get it: register and download MURA-v1.1 at {REGISTRATION_URL}\n"
        f"  and put the unzipped {FOLDER} folder into {root}\n"
        f"  (so that {root / FOLDER / 'train_image_paths.csv'} exists).\n"
        f"  Outside a notebook, the stand-in is dlmed.datasets.mura.make_synthetic(folder)."
    )


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> Path:
    """Return ``root/MURA-v1.1`` if MURA is there; MURA is never downloaded (it needs registration).

    ``allow_download`` and ``show_progress`` are accepted so that every data module is called
    the same way. ``root`` defaults to :func:`~dlmed.datasets.data_dir`.

    Raises:
        DataUnavailableError: MURA is not under ``root``; the message says how to get it.
    """
    root = Path(root if root is not None else data_dir())
    folder = find(root)
    if folder is None:
        raise unavailable(NAME, root, f"it is not in {root} and cannot be downloaded automatically",
                          _how_to_get(root)) from None
    return folder


def _mura_folder(root: Optional[PathLike], split: str) -> Path:
    """Return the MURA folder under ``root`` after checking ``split``; raise if MURA is absent."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (MURA's test set is not public), got {split!r}")
    folder = fetch(root)
    if is_synthetic(folder):
        # Never let the stand-in pass for the real data unnoticed.
        print(f"dlmed: {folder} is the SYNTHETIC stand-in made by make_synthetic (not medical data)")
    return folder


def _parse_mura_path(path: str) -> dict:
    """Split a MURA image or study path into its parts.

    ``"MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png"`` (or the study
    folder ``".../study1_positive/"``) gives ``{"split": "train", "body_part": "WRIST",
    "patient": "patient00001", "study": "patient00001/study1", "label": 1}``.
    """
    # ("MURA-v1.1", "train", "XR_WRIST", "patient00001", "study1_positive", "image1.png")
    parts = PurePosixPath(path).parts
    if len(parts) < 5 or parts[0] != FOLDER:
        raise ValueError(
            f"{path!r} is not a MURA path like "
            f"'{FOLDER}/train/XR_WRIST/patient00001/study1_positive/image1.png'"
        )
    split, body_folder, patient, study_folder = parts[1:5]
    body_part = body_folder.removeprefix("XR_")
    study, _, outcome = study_folder.partition("_")
    if body_part not in BODY_PARTS or outcome not in ("positive", "negative"):
        raise ValueError(
            f"{path!r} does not follow MURA's layout XR_<body part>/patient<N>/study<K>_<positive|negative>: "
            f"body parts are {', '.join(BODY_PARTS)}"
        )
    return {
        "split": split,
        "body_part": body_part,
        "patient": patient,
        "study": f"{patient}/{study}",
        "label": 1 if outcome == "positive" else 0,
    }


def image_table(root: Optional[PathLike] = None, split: str = "train") -> pd.DataFrame:
    """Return one row per image of a MURA split, read from ``<split>_image_paths.csv``.

    Columns: ``path`` (absolute path of the PNG, str), ``split`` ("train" or "valid"),
    ``body_part`` (e.g. "WRIST"), ``patient`` (e.g. "patient00001"), ``study`` (e.g.
    "patient00001/study1") and ``label`` (int64: 1 if the study folder says "positive",
    i.e. abnormal, else 0). Rows are in the CSV's order. ``root`` (the folder that holds
    ``MURA-v1.1``) defaults to :func:`dlmed.datasets.data_dir`.

    Raises:
        DataUnavailableError: MURA is not under ``root``; the message says how to get it.
    """
    folder = _mura_folder(root, split)
    image_csv, _ = _csv_names(split)
    relative = pd.read_csv(folder / image_csv, header=None, names=["relative"])["relative"]
    table = pd.DataFrame([_parse_mura_path(path) for path in relative])
    # The CSV's paths start with "MURA-v1.1/", so they are relative to the folder above it.
    table.insert(0, "path", [str(folder.parent.resolve() / path) for path in relative])
    return table.astype({"label": "int64"})


def study_table(root: Optional[PathLike] = None, split: str = "train") -> pd.DataFrame:
    """Return one row per study of a MURA split, read from ``<split>_labeled_studies.csv``.

    Columns: ``study`` (e.g. "patient00001/study1", as in :func:`image_table`),
    ``body_part``, ``patient`` and ``label`` (int64, from the CSV: 1 = abnormal).

    Raises:
        DataUnavailableError: MURA is not under ``root``; the message says how to get it.
    """
    folder = _mura_folder(root, split)
    _, study_csv = _csv_names(split)
    studies = pd.read_csv(folder / study_csv, header=None, names=["relative", "label"])
    parsed = pd.DataFrame([_parse_mura_path(path) for path in studies["relative"]])
    table = parsed[["study", "body_part", "patient"]].copy()
    table["label"] = studies["label"].astype("int64")
    return table


class ImageDataset(torch.utils.data.Dataset):
    """The images of a table from :func:`image_table` (or any rows of one).

    Each image is loaded as grayscale (MURA's PNGs are partly RGB). Without a
    ``transform`` an item's image is a float tensor of shape (1, H, W) in [0, 1]; H and W
    differ between images, so for batches give a transform that resizes, e.g.
    ``transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])``,
    which receives a PIL image. Items are ``(image, label)`` with ``label`` an ``int``;
    ``targets`` holds all labels (int64 array of shape (N,)) for samplers.
    """

    def __init__(self, table: pd.DataFrame, transform=None):
        missing = {"path", "label"} - set(table.columns)
        if missing:
            raise ValueError(
                f"the table needs the columns 'path' and 'label' (lacks {sorted(missing)}); "
                f"make it with dlmed.datasets.mura.image_table()"
            )
        self.paths = table["path"].astype(str).tolist()
        self.targets = table["label"].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as file:
            image = file.convert("L")
        tensor = to_tensor(image) if self.transform is None else self.transform(image)
        return tensor, int(self.targets[index])


# --- The synthetic stand-in --------------------------------------------------------------

_README = """\
SYNTHETIC DATA - NOT MEDICAL IMAGES

This folder was made by dlmed.datasets.mura.make_synthetic() (the dlmed package of the deep
learning in biology and medicine workshop). It imitates the layout of MURA-v1.1 (the CSV
files, XR_<BODY PART>/patient<NNNNN>/study<K>_<positive|negative>/image<M>.png) so that
code can be run and tested without the real data, which needs registration at
{url}

The pictures are a gray bar on a dark background; "positive" studies have a gap across the
bar. Settings: {patients} patients per body part and split, seed {seed}.
"""


def _draw_bone(positive: bool, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a size x size uint8 picture: a bright bar ("bone"); abnormal ones have a dark gap."""
    axis = np.linspace(-1.0, 1.0, size)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    angle = rng.uniform(-0.5, 0.5)
    across = x * np.cos(angle) - y * np.sin(angle)
    along = x * np.sin(angle) + y * np.cos(angle)
    bone = (np.abs(across) < rng.uniform(0.12, 0.22)) & (np.abs(along) < 0.8)
    image = 0.1 + rng.uniform(0.5, 0.7) * bone
    if positive:
        gap = np.abs(along - rng.uniform(-0.4, 0.4)) < 0.06
        image = image - 0.5 * (bone & gap)
    image = image + rng.normal(0.0, 0.05, size=image.shape)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _write_synthetic_mura(folder: Path, settings: dict) -> None:
    """Write the stand-in's images, CSVs, README and (last) marker into ``folder``."""
    rng = np.random.default_rng(settings["seed"])
    low_studies, high_studies = settings["studies_per_patient"]
    low_images, high_images = settings["images_per_study"]
    patient_number = 0  # numbered across splits, as in MURA (valid's patients follow train's)
    for split in SPLITS:
        image_rows, study_rows = [], []
        for body_part in BODY_PARTS:
            study_count = 0
            for index in range(settings["patients_per_part"]):
                patient_number += 1
                patient = f"patient{patient_number:05d}"
                # Cycle through the allowed study counts, so patients with one study and
                # patients with several both appear, whatever the seed.
                studies = low_studies + index % (high_studies - low_studies + 1)
                for study in range(1, studies + 1):
                    # Alternate within each body part, so both labels appear in each.
                    positive = study_count % 2 == 0
                    study_count += 1
                    outcome = "positive" if positive else "negative"
                    relative = f"{FOLDER}/{split}/XR_{body_part}/{patient}/study{study}_{outcome}/"
                    study_rows.append((relative, int(positive)))
                    study_folder = folder.parent / relative  # ``folder`` is named MURA-v1.1
                    study_folder.mkdir(parents=True)
                    for image in range(1, int(rng.integers(low_images, high_images + 1)) + 1):
                        pixels = _draw_bone(positive, settings["image_size"], rng)
                        Image.fromarray(pixels).save(study_folder / f"image{image}.png")
                        image_rows.append(f"{relative}image{image}.png")
        image_csv, study_csv = _csv_names(split)
        # Same format as MURA's own CSVs: no header, no index.
        pd.DataFrame({"path": image_rows}).to_csv(folder / image_csv, header=False, index=False)
        pd.DataFrame(study_rows).to_csv(folder / study_csv, header=False, index=False)
    readme = _README.format(url=REGISTRATION_URL, patients=settings["patients_per_part"], seed=settings["seed"])
    (folder / "README.txt").write_text(readme, encoding="utf-8")
    write_marker(folder, settings)


def _check_range(name: str, value) -> Tuple[int, int]:
    """Return ``value`` as a (low, high) pair of positive integers, or raise naming ``name``."""
    is_pair = isinstance(value, (tuple, list)) and len(value) == 2
    # type() rather than isinstance(): True and False are ints too, but not counts.
    if not (is_pair and all(type(v) is int for v in value) and 1 <= value[0] <= value[1]):
        raise ValueError(f"{name} must be a pair (low, high) of integers with 1 <= low <= high, got {value!r}")
    return value[0], value[1]


def make_synthetic(
    root: PathLike,
    patients_per_part: int = 3,
    studies_per_patient: Tuple[int, int] = (1, 2),
    images_per_study: Tuple[int, int] = (1, 3),
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write (or reuse) a tiny synthetic MURA-v1.1 tree in ``root`` and return ``root/MURA-v1.1``.

    For each split (train, valid) and each of :data:`BODY_PARTS` there are
    ``patients_per_part`` patients (numbered across the whole tree), each with between
    ``studies_per_patient[0]`` and ``[1]`` studies (cycling through that range, so both
    single- and multi-study patients appear) of ``images_per_study[0]`` to ``[1]``
    grayscale ``image_size`` x ``image_size`` PNGs (random). Study labels alternate
    within each body part, so both appear. The four CSVs have MURA's exact format and a
    ``README.txt`` says the folder is SYNTHETIC.

    THE IMAGES ARE NOT MEDICAL DATA. The same settings give the same files; a complete
    stand-in with the same settings is reused, one with other settings replaced. A real
    MURA folder in ``root`` is never touched: that raises ValueError instead.
    """
    if isinstance(patients_per_part, bool) or not isinstance(patients_per_part, int) or patients_per_part < 1:
        raise ValueError(f"patients_per_part must be a positive integer, got {patients_per_part!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer of at least 16 (the bars need room), got {image_size!r}")
    settings = {
        "synthetic": True,
        "made_by": "dlmed.datasets.mura.make_synthetic",
        "version": _SYNTHETIC_VERSION,
        "patients_per_part": patients_per_part,
        "studies_per_patient": list(_check_range("studies_per_patient", studies_per_patient)),
        "images_per_study": list(_check_range("images_per_study", images_per_study)),
        "image_size": image_size,
        "seed": int(seed),
    }
    root = Path(root)
    final = root / FOLDER

    def is_wanted(folder: Path) -> bool:
        # The marker is written last, so a matching one means a finished stand-in.
        return stand_in_settings(folder) == settings

    if final.exists() and not is_synthetic(final):
        raise ValueError(
            f"{final} exists and is not a synthetic stand-in (it may be the real MURA); "
            f"refusing to replace it. Give make_synthetic another folder."
        )
    return build_folder(final, is_wanted, lambda staged: _write_synthetic_mura(staged, settings))


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False) -> Path:
    """Return the folder that holds the ``MURA-v1.1`` a notebook should read (pass it to :func:`image_table`).

    ``config`` (the notebook's :class:`~dlmed.config.RunConfig`) is accepted so that every
    data module is called the same way; MURA is never downloaded, in lab mode as in
    grading mode, so:

    - the real MURA when it is in ``root`` (and ``synthetic`` is False);
    - otherwise (or with ``synthetic=True``, the notebook's ``USE_SYNTHETIC_DATA``) a small
      synthetic MURA-like tree in ``root/mura-synthetic`` (NOT medical data), which keeps
      MURA's layout so that the notebook's table code runs; one line says so.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if not synthetic and find(root) is not None:
        return root
    stand_in = make_synthetic(root / SYNTHETIC_ROOT, patients_per_part=3)
    reason = "as asked" if synthetic else f"MURA is not in {root}"
    print(f"dlmed: using a SYNTHETIC MURA-like tree (not X-rays) in {stand_in} ({reason})")
    return stand_in.parent
