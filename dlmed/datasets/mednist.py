"""MedNIST: download, checksum, cache, and a synthetic stand-in for offline work.

MedNIST (from the MONAI project) holds 58,954 grayscale 64x64 JPEGs of six kinds of medical
image. The archive extracts to ``MedNIST/<Class>/<NNNNNN>.jpeg``, which is the layout that
``torchvision.datasets.ImageFolder`` reads.

Where the data lives: the data folder (:func:`dlmed.datasets.data_dir`: ``DLMED_DATA``, or
``~/dlmed-data``). Nothing here runs on import: folders are made and files downloaded only
when a function that needs them is called.

Without internet (or while a notebook is graded) :func:`make_synthetic` writes a small
stand-in with the same layout. Its pictures are simple shapes, one pattern per class; they
are NOT medical images and only exist so that code can be run and tested offline.
:func:`for_notebook` decides which of the two a notebook uses.
"""

import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dlmed.datasets import PathLike, data_dir, stand_in_settings
from dlmed.datasets._download import Remote, by_hand, download, file_checksum, matches, unavailable
from dlmed.datasets._standin import build_folder, move_into_place, write_marker

NAME = "MedNIST"
#: The archive's canonical address and checksum, and its name in the data folder (where a
#: hand-copied one is looked for too).
REMOTE = Remote(
    url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/MedNIST.tar.gz",
    checksum="md5:0bc7306e7427e00ad1c5526a6677552d",
    filename="MedNIST.tar.gz",
)
CLASSES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")
#: The folder the archive extracts to.
FOLDER = "MedNIST"
#: The folder :func:`make_synthetic` writes.
SYNTHETIC_FOLDER = "MedNIST-synthetic"

#: Images per class of the stand-in used for offline practice in lab mode. Enough for a
#: small CNN to learn the patterns; a second or two to generate.
SYNTHETIC_LAB_IMAGES_PER_CLASS = 300
#: Fewest images per class of the stand-in used while grading, so that a notebook that
#: splits it into training, validation and test sets still sees every class in each.
SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS = 16

# Bump when the drawings change, so that stand-ins made by older code are rebuilt.
_SYNTHETIC_VERSION = 1

# tarfile's "data" filter (Python 3.12, backported to 3.8.17, 3.9.17, 3.10.12 and 3.11.4)
# refuses absolute paths, "..", links out of the folder and device files.
_TARFILE_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def _has_class_folders(folder: Path) -> bool:
    """True if ``folder`` has a sub-folder with at least one .jpeg for every MedNIST class."""
    for name in CLASSES:
        class_folder = folder / name
        if not class_folder.is_dir() or next(class_folder.glob("*.jpeg"), None) is None:
            return False
    return True


def find(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return ``root/MedNIST`` if it holds an extracted MedNIST, else ``None``.

    "Extracted" means all six class folders exist and each holds at least one ``.jpeg``.
    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. Nothing is downloaded or created.
    """
    folder = Path(root if root is not None else data_dir()) / FOLDER
    return folder if _has_class_folders(folder) else None


def _how_to_get(root: Path) -> str:
    """The by-hand instructions every DataUnavailableError about MedNIST ends with."""
    return (
        f"{by_hand(REMOTE, root)} (the next run extracts it).\n"
        f"  Outside a notebook, the stand-in is dlmed.datasets.mednist.make_synthetic()."
    )


def _check_members(tar: tarfile.TarFile, destination: Path) -> list:
    """Return the archive's members after checking that none can escape ``destination``.

    MedNIST holds only folders and regular files, so links, devices and paths that leave
    the folder (absolute, or with "..") mean a damaged or malicious archive.
    """
    inside = str(destination.resolve())
    members = tar.getmembers()
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise ValueError(
                f"Refusing to extract {tar.name}: member {member.name!r} is a link or special "
                f"file, which MedNIST never contains. Delete the archive and download it again."
            )
        # With links refused, resolving the path as text is enough (and much faster than
        # asking the file system about each of MedNIST's 59,000 files).
        target = os.path.normpath(os.path.join(inside, member.name))
        escapes = target != inside and not target.startswith(inside + os.sep)  # "." is fine
        if os.path.isabs(member.name) or escapes:
            raise ValueError(
                f"Refusing to extract {tar.name}: member {member.name!r} would be written "
                f"outside {destination}. Delete the archive and download it again."
            )
    return members


def _extract(archive: Path, root: Path, show_progress: bool) -> Path:
    """Extract ``archive`` safely so that ``root/MedNIST`` appears complete or not at all.

    Extraction goes into a temporary folder inside ``root`` (same file system, so the
    final rename is atomic); only the finished ``MedNIST`` folder is renamed into place.
    """
    final = root / FOLDER
    staging = Path(tempfile.mkdtemp(prefix=".MedNIST-extracting-", dir=root))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _check_members(tar, staging)
            progress = tqdm(
                members, desc=f"Extracting {archive.name}", unit="file", disable=not show_progress
            )
            if _TARFILE_HAS_DATA_FILTER:
                tar.extractall(staging, members=progress, filter="data")
            else:
                tar.extractall(staging, members=progress)  # members were checked above
        extracted = staging / FOLDER
        if not _has_class_folders(extracted):
            raise ValueError(
                f"{archive} is not the MedNIST archive: it does not contain "
                f"{FOLDER}/<class>/*.jpeg for the classes {', '.join(CLASSES)}. "
                f"Delete it and download {REMOTE.url} again."
            )
        if final.exists() and not _has_class_folders(final):
            # E.g. a copy or extraction by hand that was interrupted.
            print(f"{final} is incomplete (a class folder is missing or empty); replacing it.")
        move_into_place(extracted, final, _has_class_folders)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> Path:
    """Return the folder of the extracted MedNIST, downloading and extracting it if needed.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. In order:

    1. an extracted, complete ``root/MedNIST`` is returned as it is (``root`` may be read-only);
    2. ``root/MedNIST.tar.gz`` with the right checksum (e.g. copied there by hand) is
       extracted; one with a wrong checksum is deleted and downloaded again when
       ``allow_download``;
    3. otherwise the archive is downloaded from :data:`REMOTE` when ``allow_download``.

    ``root`` is created only when something has to be written into it.

    Raises:
        DataUnavailableError: the data is not here and may not, or cannot, be downloaded.
            The message says how to go on.
        ValueError: a download had the wrong checksum, or the archive is unsafe.
    """
    root = Path(root if root is not None else data_dir())
    found = find(root)
    if found is not None:
        return found

    archive = root / REMOTE.filename
    if archive.is_file() and not matches(REMOTE, archive):
        problem = (
            f"{archive} is damaged or not the MedNIST archive: its {REMOTE.algorithm.upper()} checksum is "
            f"{file_checksum(archive, REMOTE.algorithm)}, expected {REMOTE.digest}."
        )
        if not allow_download:
            # Not ours to delete: it may be the only copy the user has.
            raise unavailable(NAME, root, f"{problem} Downloads are switched off, so it cannot be replaced; "
                                          f"delete it and copy a good one there", _how_to_get(root)) from None
        print(f"{problem} Deleting it and downloading it again.")
        archive.unlink()
    if not archive.is_file():
        download(NAME, REMOTE, root, _how_to_get(root), allow_download, show_progress)
    return _extract(archive, root, show_progress)


# --- The synthetic stand-in --------------------------------------------------------------

_README = """\
SYNTHETIC DATA - NOT MEDICAL IMAGES

This folder was made by dlmed.datasets.mednist.make_synthetic() (the dlmed package of the
deep learning in biology and medicine workshop). It imitates the layout of MedNIST
(one folder per class, {size}x{size} grayscale JPEGs) so that notebooks and tests can run
offline and while being graded.

Each picture is a few simple shapes drawn with random position, size, brightness and
noise, one kind of pattern per class name ({classes}). They only loosely
evoke those kinds of scans. They are not, and do not come from, any patient's image.
A model trained on them has learnt nothing about medicine.

Settings: {per_class} images per class, image size {size}, seed {seed}.
Delete this folder whenever you like; it is rebuilt on demand.
"""

# Images drawn at once: enough for NumPy's per-call overhead not to matter, few enough that
# the temporary arrays stay in the CPU cache and are reused by the allocator instead of
# being mapped afresh (measured: 8 to 32 images of 64x64 are fastest).
_BATCH = 16


def _soft_ellipse(x, y, cx, cy, rx, ry, edge=0.08):
    """Soft-edged ellipse mask in [0, 1]; the soft edge avoids blocky, aliased outlines.

    ``edge`` is the width of the ramp as a fraction of the radius. The ramp is computed on
    the squared distance (1 - d**2 is about 2 * (1 - d) near the outline), which saves a
    square root per pixel.
    """
    u = (x - cx) / rx
    v = (y - cy) / ry
    inside = 1.0 - (u * u + v * v)
    return np.clip(inside / (2.0 * edge), 0.0, 1.0)


def _draw_class(name: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` images (float32 in about [0, 1], shape ``n x size x size``) of one class."""

    def jitter(low, high, shape=()):
        # One value per image (and per shape extra), broadcastable against n x size x size.
        return rng.uniform(low, high, size=(n, *shape, 1, 1)).astype(np.float32)

    # Coordinates in [-1, 1] (y points down), shifted and rotated a little per image so
    # that no single pixel gives the class away.
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y0, x0 = np.meshgrid(axis, axis, indexing="ij")
    dx, dy = jitter(-0.1, 0.1), jitter(-0.1, 0.1)
    angle = jitter(-0.2, 0.2)  # radians, about +-11 degrees
    cos, sin = np.cos(angle), np.sin(angle)
    x = (x0 - dx) * cos + (y0 - dy) * sin
    y = -(x0 - dx) * sin + (y0 - dy) * cos
    scale = jitter(0.88, 1.12)

    if name == "AbdomenCT":
        # A wide bright body with three brighter organ-like blobs inside.
        image = 0.05 + jitter(0.4, 0.55) * _soft_ellipse(x, y, 0, 0, 0.85 * scale, 0.65 * scale)
        for _ in range(3):
            bx, by = jitter(-0.45, 0.45), jitter(-0.3, 0.3)
            radius = jitter(0.1, 0.2)
            image = image + jitter(0.25, 0.4) * _soft_ellipse(x, y, bx, by, radius, radius, 0.3)
    elif name == "BreastMRI":
        # A half-disc: a disc cut straight along its lower side, on a dark background.
        cy = jitter(0.2, 0.45)
        disc = _soft_ellipse(x, y, 0, cy, 0.8 * scale, 0.85 * scale)
        upper = np.clip((cy - y) / 0.05, 0.0, 1.0)
        image = 0.05 + jitter(0.55, 0.8) * disc * upper
    elif name == "CXR":
        # A bright field with two tall dark lung ovals.
        image = jitter(0.7, 0.9) - 0.15 * (y0 + 1.0) / 2.0
        for side in (-1.0, 1.0):
            lung = _soft_ellipse(
                x, y, side * 0.38 * scale, jitter(-0.15, 0.05), 0.25 * scale, 0.5 * scale, 0.2
            )
            image = image - jitter(0.4, 0.55) * lung
    elif name == "ChestCT":
        # A wide body on a dark background with two dark lobes inside.
        image = 0.05 + jitter(0.45, 0.6) * _soft_ellipse(x, y, 0, 0, 0.88 * scale, 0.62 * scale)
        for side in (-1.0, 1.0):
            lobe = _soft_ellipse(x, y, side * 0.36 * scale, 0, 0.27 * scale, 0.4 * scale, 0.15)
            image = image - jitter(0.3, 0.45) * lobe
    elif name == "Hand":
        # A palm at the bottom with four or five finger-like bars pointing up.
        image = 0.05 + jitter(0.45, 0.65) * _soft_ellipse(x, y, 0, 0.55, 0.55 * scale, 0.35 * scale)
        centres = np.linspace(-0.4, 0.4, 5, dtype=np.float32)[None, :, None, None]
        finger_x = centres * scale[:, None] + jitter(-0.04, 0.04, (5,))
        tops = jitter(-0.85, -0.35, (5,))
        half_width = jitter(0.06, 0.09, (5,))
        present = (rng.uniform(size=(n, 5, 1, 1)) > 0.15).astype(np.float32)  # a finger may be missing
        across = np.clip((half_width - np.abs(x[:, None] - finger_x)) / 0.04, 0.0, 1.0)
        along = np.clip((y[:, None] - tops) / 0.05, 0.0, 1.0) * (y[:, None] < 0.55)
        fingers = (present * across * along).max(axis=1)
        image = np.maximum(image, 0.05 + jitter(0.45, 0.65) * fingers)
    elif name == "HeadCT":
        # A bright skull ring around a darker, but not black, interior.
        rx, ry = 0.72 * scale, 0.86 * scale
        outer = _soft_ellipse(x, y, 0, 0, rx, ry, 0.05)
        thickness = jitter(0.84, 0.9)
        inner = _soft_ellipse(x, y, 0, 0, rx * thickness, ry * thickness, 0.05)
        image = 0.05 + jitter(0.8, 0.95) * (outer - inner) + jitter(0.25, 0.4) * inner
    else:
        raise ValueError(f"No synthetic pattern for class {name!r}; expected one of {CLASSES}")

    # Per-image contrast and brightness, then pixel noise. Uniform noise looks the same as
    # Gaussian here and is several times cheaper to draw.
    image = image * jitter(0.85, 1.15) + jitter(-0.05, 0.05)
    noise = rng.random(image.shape, dtype=np.float32) - 0.5
    return image + noise * jitter(0.1, 0.25)


def _write_batch(class_folder: Path, class_index: int, start: int, count: int, settings: dict) -> None:
    """Draw images ``start`` to ``start + count - 1`` of one class and write them as JPEGs."""
    # A generator per batch, seeded by (seed, class, first image), makes every file depend
    # only on the settings, not on which thread draws it or in what order.
    rng = np.random.default_rng([settings["seed"], class_index, start])
    name = CLASSES[class_index]
    pixels = _draw_class(name, count, settings["image_size"], rng)
    pixels = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for offset, image in enumerate(pixels):
        # A 2-D uint8 array becomes a grayscale ("L") image.
        Image.fromarray(image).save(
            class_folder / f"{start + offset:06d}.jpeg", format="JPEG", quality=90
        )


def _write_synthetic(folder: Path, settings: dict) -> None:
    """Draw and write every image, then the README and (last) the marker, into ``folder``."""
    per_class = settings["images_per_class"]
    # NumPy's array operations, Pillow's JPEG encoder and file writes release the GIL,
    # so threads use every core and hide the latency of creating many small files.
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = []
        for class_index, name in enumerate(CLASSES):
            class_folder = folder / name
            class_folder.mkdir()
            for start in range(0, per_class, _BATCH):
                count = min(_BATCH, per_class - start)
                jobs.append(pool.submit(_write_batch, class_folder, class_index, start, count, settings))
        for job in jobs:
            job.result()  # re-raises the first error (e.g. disk full) here
    readme = _README.format(
        size=settings["image_size"],
        classes=", ".join(CLASSES),
        per_class=per_class,
        seed=settings["seed"],
    )
    (folder / "README.txt").write_text(readme, encoding="utf-8")
    write_marker(folder, settings)



def _synthetic_settings(images_per_class: int, image_size: int, seed: int) -> dict:
    """The marker's contents: what the stand-in is and how it was made."""
    return {
        "synthetic": True,
        "made_by": "dlmed.datasets.mednist.make_synthetic",
        "version": _SYNTHETIC_VERSION,
        "classes": list(CLASSES),
        "images_per_class": images_per_class,
        "image_size": image_size,
        "seed": seed,
    }


def _synthetic_is_complete(folder: Path, settings: dict) -> bool:
    """True if ``folder`` is a finished stand-in made with exactly ``settings``."""
    if stand_in_settings(folder) != settings:
        return False
    for name in CLASSES:
        class_folder = folder / name
        if not class_folder.is_dir():
            return False
        with os.scandir(class_folder) as entries:
            count = sum(1 for entry in entries if entry.name.endswith(".jpeg"))
        if count != settings["images_per_class"]:
            return False
    return True


def make_synthetic(
    root: Optional[PathLike] = None, images_per_class: int = 20, image_size: int = 64, seed: int = 0
) -> Path:
    """Write (or reuse) a synthetic stand-in for MedNIST and return its folder.

    The folder ``root/MedNIST-synthetic`` (``root`` defaults to
    :func:`~dlmed.datasets.data_dir`) gets one sub-folder per name in :data:`CLASSES`,
    each with ``images_per_class`` grayscale ``image_size`` x ``image_size`` JPEGs named
    ``000000.jpeg``, ..., and a ``README.txt`` saying it is synthetic. Each class is its
    own simple pattern (shapes with random position, size, brightness and noise), easy for
    a small CNN to learn.

    THE IMAGES ARE NOT MEDICAL DATA. They let code run offline and in tests.

    The same seed gives the same files. A complete stand-in with the same settings is
    reused; one with other settings is replaced. The new folder is written next to the
    old one and renamed into place, so an interrupted run or two processes at once never
    leave a half-written folder behind.
    """
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ValueError(f"images_per_class must be a positive integer, got {images_per_class!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(
            f"image_size must be an integer of at least 16 (the patterns need room), got {image_size!r}"
        )
    root = Path(root if root is not None else data_dir())
    settings = _synthetic_settings(images_per_class, image_size, int(seed))
    return build_folder(root / SYNTHETIC_FOLDER, lambda folder: _synthetic_is_complete(folder, settings),
                        lambda staged: _write_synthetic(staged, settings))


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False) -> Path:
    """Return the image folder a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the synthetic stand-in,
      for offline practice. In grading mode it has ``config.images_per_class`` images per
      class (at least :data:`SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS`); in lab mode
      :data:`SYNTHETIC_LAB_IMAGES_PER_CLASS`.
    - Grading mode: the real MedNIST if it is already extracted under ``root``, else the
      synthetic stand-in. Never downloads. Prints one line saying which is used.
    - Lab mode: the real MedNIST, downloaded if needed and ``config.allow_download``.
      Lab mode never swaps in synthetic data by itself: if MedNIST cannot be had,
      :class:`~dlmed.datasets.DataUnavailableError` explains what to do.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if config.grading:
        per_class = max(config.images_per_class or 0, SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS)
        if not synthetic:
            real = find(root)
            if real is not None:
                print(f"dlmed: using the real MedNIST in {real}")
                return real
        folder = make_synthetic(root, images_per_class=per_class)
        reason = "as asked" if synthetic else f"MedNIST is not extracted in {root}"
        print(f"dlmed: using the SYNTHETIC stand-in (not medical data) in {folder} ({reason})")
        return folder
    if synthetic:
        return make_synthetic(root, images_per_class=SYNTHETIC_LAB_IMAGES_PER_CLASS)
    return fetch(root, allow_download=config.allow_download, show_progress=config.show_progress)
