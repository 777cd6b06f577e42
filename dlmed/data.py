"""MedNIST: download, checksum, cache, and a synthetic stand-in for offline work.

MedNIST (from the MONAI project) holds 58,954 grayscale 64x64 JPEGs of six kinds of medical
image. The archive extracts to ``MedNIST/<Class>/<NNNNNN>.jpeg``, which is the layout that
``torchvision.datasets.ImageFolder`` reads.

Where the data lives: the folder named by the environment variable ``DLMED_DATA``, or
``~/dlmed-data``. Nothing here runs on import: folders are made and files downloaded only
when a function that needs them is called.

Without internet (or while a notebook is graded) :func:`make_synthetic_mednist` writes a
small stand-in with the same layout. Its pictures are simple shapes, one pattern per
class; they are NOT medical images and only exist so that code can be run and tested
offline. :func:`mednist_folder` decides which of the two a notebook uses.
"""

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

MEDNIST_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/MedNIST.tar.gz"
)
MEDNIST_MD5 = "0bc7306e7427e00ad1c5526a6677552d"
MEDNIST_CLASSES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")
#: The folder the archive extracts to.
MEDNIST_FOLDER = "MedNIST"
#: The file name the archive is downloaded to (and where a hand-copied one is looked for).
MEDNIST_ARCHIVE = "MedNIST.tar.gz"
#: The folder :func:`make_synthetic_mednist` writes.
SYNTHETIC_FOLDER = "MedNIST-synthetic"

#: Images per class of the stand-in used for offline practice in lab mode. Enough for a
#: small CNN to learn the patterns; a second or two to generate.
SYNTHETIC_LAB_IMAGES_PER_CLASS = 300
#: Fewest images per class of the stand-in used while grading, so that a notebook that
#: splits it into training, validation and test sets still sees every class in each.
SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS = 16

# Marks a folder as made by make_synthetic_mednist and records how, so that a later call
# with the same settings can reuse it and one with other settings knows to rebuild it.
_SYNTHETIC_MARKER = "dlmed-synthetic.json"
# Bump when the drawings change, so that stand-ins made by older code are rebuilt.
_SYNTHETIC_VERSION = 1

# tarfile's "data" filter (Python 3.12, backported to 3.8.17, 3.9.17, 3.10.12 and 3.11.4)
# refuses absolute paths, "..", links out of the folder and device files.
_TARFILE_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")

PathLike = Union[str, os.PathLike]


class DataUnavailableError(RuntimeError):
    """MedNIST is not on this machine and cannot be downloaded (offline, or not allowed).

    The message says how to get it onto the machine by hand, or how to use the synthetic
    stand-in instead.
    """


def data_dir() -> Path:
    """Return the folder that holds the workshop's data sets.

    It is the environment variable ``DLMED_DATA`` (``~`` is expanded) when set, otherwise
    ``~/dlmed-data``. The folder is not created here; functions that write create it.
    """
    configured = os.environ.get("DLMED_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / "dlmed-data"


def md5sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the MD5 checksum (hex) of a file, read in chunks so big files fit in memory."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_url(url: str, out, digest, label: str, show_progress: bool) -> None:
    """Stream ``url`` into the open file ``out``, updating ``digest`` and a tqdm bar."""
    # Without a time-out a stalled connection would hang the notebook with no message.
    with urllib.request.urlopen(url, timeout=60) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"Downloading {label}",
            disable=not show_progress,
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))


def download_url(
    url: str, destination: PathLike, expected_md5: str, show_progress: bool = True
) -> Path:
    """Download ``url`` to ``destination`` and check its MD5 checksum.

    The bytes go to ``destination + ".part"`` first and are renamed only once complete
    and verified, so an interrupted download never looks like a finished one.

    Raises:
        DataUnavailableError: the download failed (no network, server error, time-out).
        ValueError: the downloaded file's MD5 is not ``expected_md5``; the file is deleted.
    """
    destination = Path(destination)
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    try:
        # Opened before connecting, so that a folder we may not write to is reported as
        # such (PermissionError) rather than as a failed download.
        with open(partial, "wb") as out:
            try:
                _copy_url(url, out, digest, destination.name, show_progress)
            # URLError, HTTPError, socket time-outs and connection resets are OSErrors;
            # HTTPException covers a connection cut in the middle of the body.
            except (OSError, http.client.HTTPException) as error:
                raise DataUnavailableError(
                    f"Could not download {url} to {destination}: {error}.\n"
                    f"Check the internet connection and try again, or download the file on "
                    f"another machine, check that its MD5 checksum is {expected_md5}, and "
                    f"copy it to {destination}."
                ) from error
        got_md5 = digest.hexdigest()
        if got_md5 != expected_md5:
            raise ValueError(
                f"The file downloaded from {url} is damaged or not the expected one: its "
                f"MD5 checksum is {got_md5}, expected {expected_md5}. It was deleted (it would "
                f"have been {destination}). Run again to retry; if it keeps happening, "
                f"download the file with a browser, check its MD5, and copy it to {destination}."
            )
        partial.replace(destination)
    finally:
        # Only a failed or interrupted download leaves the .part file behind.
        partial.unlink(missing_ok=True)
    return destination


def _has_class_folders(folder: Path) -> bool:
    """True if ``folder`` has a sub-folder with at least one .jpeg for every MedNIST class."""
    for name in MEDNIST_CLASSES:
        class_folder = folder / name
        if not class_folder.is_dir() or next(class_folder.glob("*.jpeg"), None) is None:
            return False
    return True


def download_or_explain(
    name: str,
    url: str,
    destination: PathLike,
    expected_md5: str,
    instructions: str,
    allow_download: bool = True,
    show_progress: bool = True,
) -> Path:
    """Download a data set's file with :func:`download_url`, or say how to get it by hand.

    Raises :class:`DataUnavailableError` ending with ``instructions`` when downloads are
    switched off or the download fails.
    """
    folder = Path(destination).parent
    if not allow_download:
        raise DataUnavailableError(
            f"{name} is not in {folder} and downloads are switched off "
            f"(allow_download=False).\n{instructions}"
        )
    try:
        return download_url(url, destination, expected_md5, show_progress=show_progress)
    except DataUnavailableError as error:
        raise DataUnavailableError(
            f"{name} is not in {folder} and could not be downloaded: "
            f"{error.__cause__ or error}\n{instructions}"
        ) from error


def find_mednist(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return ``root/MedNIST`` if it holds an extracted MedNIST, else ``None``.

    "Extracted" means all six class folders exist and each holds at least one ``.jpeg``.
    ``root`` defaults to :func:`data_dir`. Nothing is downloaded or created.
    """
    folder = Path(root if root is not None else data_dir()) / MEDNIST_FOLDER
    return folder if _has_class_folders(folder) else None


def _how_to_get_mednist(root: Path) -> str:
    """The instructions that every DataUnavailableError about MedNIST ends with."""
    return (
        f"To use MedNIST on this machine, do one of the following:\n"
        f"  1. On a machine with internet, download\n"
        f"       {MEDNIST_URL}\n"
        f"     check that its MD5 checksum is {MEDNIST_MD5}, and copy {MEDNIST_ARCHIVE}\n"
        f"     into {root}\n"
        f"     The next run extracts it there.\n"
        f"  2. Set the environment variable DLMED_DATA to a folder that already holds\n"
        f"     {MEDNIST_ARCHIVE} or the extracted {MEDNIST_FOLDER} folder (in Jupyter, restart\n"
        f"     the kernel afterwards).\n"
        f"  3. Practise offline with the synthetic stand-in (simple shapes, NOT medical data):\n"
        f"     dlmed.data.make_synthetic_mednist(), or mednist_folder(config, synthetic=True)."
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


def _extract_mednist(archive: Path, root: Path, show_progress: bool) -> Path:
    """Extract ``archive`` safely so that ``root/MedNIST`` appears complete or not at all.

    Extraction goes into a temporary folder inside ``root`` (same file system, so the
    final rename is atomic); only the finished ``MedNIST`` folder is renamed into place.
    """
    final = root / MEDNIST_FOLDER
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
        extracted = staging / MEDNIST_FOLDER
        if not _has_class_folders(extracted):
            raise ValueError(
                f"{archive} is not the MedNIST archive: it does not contain "
                f"{MEDNIST_FOLDER}/<class>/*.jpeg for the classes {', '.join(MEDNIST_CLASSES)}. "
                f"Delete it and download {MEDNIST_URL} again."
            )
        if final.exists() and not _has_class_folders(final):
            # E.g. a copy or extraction by hand that was interrupted.
            print(f"{final} is incomplete (a class folder is missing or empty); replacing it.")
        _move_into_place(extracted, final, _has_class_folders)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def fetch_mednist(
    root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True
) -> Path:
    """Return the folder of the extracted MedNIST, downloading and extracting it if needed.

    ``root`` defaults to :func:`data_dir`. In order:

    1. an extracted, complete ``root/MedNIST`` is returned as it is;
    2. ``root/MedNIST.tar.gz`` with the right MD5 (e.g. copied there by hand) is extracted;
       one with a wrong MD5 is deleted and downloaded again when ``allow_download``;
    3. otherwise the archive is downloaded from :data:`MEDNIST_URL` when ``allow_download``.

    ``root`` is created only when something has to be written into it.

    Raises:
        DataUnavailableError: the data is not here and may not, or cannot, be downloaded.
            The message says how to get it by hand or how to use the synthetic stand-in.
        ValueError: a download had the wrong checksum, or the archive is unsafe.
    """
    root = Path(root if root is not None else data_dir())
    found = find_mednist(root)
    if found is not None:
        return found

    archive = root / MEDNIST_ARCHIVE
    if archive.is_file():
        got_md5 = md5sum(archive)
        if got_md5 != MEDNIST_MD5:
            problem = (
                f"{archive} is damaged or not the MedNIST archive: its MD5 checksum is "
                f"{got_md5}, expected {MEDNIST_MD5}."
            )
            if not allow_download:
                # Not ours to delete: it may be the only copy the user has.
                raise DataUnavailableError(
                    f"{problem} Downloads are switched off, so it cannot be replaced. "
                    f"Delete it and copy a good one there.\n{_how_to_get_mednist(root)}"
                )
            print(f"{problem} Deleting it and downloading it again.")
            archive.unlink()

    if not archive.is_file():
        download_or_explain(
            "MedNIST", MEDNIST_URL, archive, MEDNIST_MD5, _how_to_get_mednist(root), allow_download, show_progress
        )

    return _extract_mednist(archive, root, show_progress)


# --- The synthetic stand-in --------------------------------------------------------------

_README = """\
SYNTHETIC DATA - NOT MEDICAL IMAGES

This folder was made by dlmed.data.make_synthetic_mednist() (the dlmed package of the
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
        raise ValueError(f"No synthetic pattern for class {name!r}; expected one of {MEDNIST_CLASSES}")

    # Per-image contrast and brightness, then pixel noise. Uniform noise looks the same as
    # Gaussian here and is several times cheaper to draw.
    image = image * jitter(0.85, 1.15) + jitter(-0.05, 0.05)
    noise = rng.random(image.shape, dtype=np.float32) - 0.5
    return image + noise * jitter(0.1, 0.25)


def _synthetic_settings(images_per_class: int, image_size: int, seed: int) -> dict:
    """The marker's contents: what the stand-in is and how it was made."""
    return {
        "synthetic": True,
        "made_by": "dlmed.data.make_synthetic_mednist",
        "version": _SYNTHETIC_VERSION,
        "classes": list(MEDNIST_CLASSES),
        "images_per_class": images_per_class,
        "image_size": image_size,
        "seed": seed,
    }


def _read_marker(folder: Path) -> Optional[dict]:
    """The stand-in's marker as a dict, or None if it is missing or unreadable."""
    try:
        with open(folder / _SYNTHETIC_MARKER, encoding="utf-8") as file:
            marker = json.load(file)
    except (OSError, ValueError):  # missing, unreadable, or not JSON
        return None
    return marker if isinstance(marker, dict) else None


def _synthetic_is_complete(folder: Path, settings: dict) -> bool:
    """True if ``folder`` is a finished stand-in made with exactly ``settings``."""
    if _read_marker(folder) != settings:
        return False
    for name in MEDNIST_CLASSES:
        class_folder = folder / name
        if not class_folder.is_dir():
            return False
        with os.scandir(class_folder) as entries:
            count = sum(1 for entry in entries if entry.name.endswith(".jpeg"))
        if count != settings["images_per_class"]:
            return False
    return True


def _write_batch(class_folder: Path, class_index: int, start: int, count: int, settings: dict) -> None:
    """Draw images ``start`` to ``start + count - 1`` of one class and write them as JPEGs."""
    # A generator per batch, seeded by (seed, class, first image), makes every file depend
    # only on the settings, not on which thread draws it or in what order.
    rng = np.random.default_rng([settings["seed"], class_index, start])
    name = MEDNIST_CLASSES[class_index]
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
        for class_index, name in enumerate(MEDNIST_CLASSES):
            class_folder = folder / name
            class_folder.mkdir()
            for start in range(0, per_class, _BATCH):
                count = min(_BATCH, per_class - start)
                jobs.append(pool.submit(_write_batch, class_folder, class_index, start, count, settings))
        for job in jobs:
            job.result()  # re-raises the first error (e.g. disk full) here
    readme = _README.format(
        size=settings["image_size"],
        classes=", ".join(MEDNIST_CLASSES),
        per_class=per_class,
        seed=settings["seed"],
    )
    (folder / "README.txt").write_text(readme, encoding="utf-8")
    with open(folder / _SYNTHETIC_MARKER, "w", encoding="utf-8") as file:
        json.dump(settings, file, indent=2)


def usual_permissions(path: PathLike) -> None:
    """Give ``path`` the permissions a normally created file or folder would have (umask applied).

    Temporary files and folders are private (0600 / 0700); a data folder shared by several
    users (a JupyterHub, the class grader's sandboxed kernels) must stay readable by them.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def _move_into_place(staged: Path, final: Path, is_wanted: Callable[[Path], bool]) -> None:
    """Rename the finished ``staged`` folder to ``final``, replacing an unwanted old one.

    The rename is atomic, so readers see the old folder or the new one, never half of one.
    If another process puts a wanted folder there first, ours is simply discarded.
    """
    usual_permissions(staged)
    for _ in range(5):
        try:
            os.rename(staged, final)  # fails if ``final`` exists and is not empty
            return
        except OSError:
            if not final.exists():
                raise  # not a lost race: e.g. permissions; the message says which path
        if is_wanted(final):
            shutil.rmtree(staged, ignore_errors=True)
            return
        # Out of date or incomplete: move it aside (atomic) and delete it, then retry.
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
        try:
            os.rename(final, trash / final.name)
        except FileNotFoundError:
            pass  # another process moved it aside already
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    raise RuntimeError(
        f"Could not put {final} in place: other processes keep replacing it (for the "
        f"stand-in: with other settings). Let one program at a time write to {final.parent}, "
        f"or give each its own folder with DLMED_DATA, and try again."
    )


def make_synthetic_mednist(
    root: Optional[PathLike] = None, images_per_class: int = 20, image_size: int = 64, seed: int = 0
) -> Path:
    """Write (or reuse) a synthetic stand-in for MedNIST and return its folder.

    The folder ``root/MedNIST-synthetic`` (``root`` defaults to :func:`data_dir`) gets
    one sub-folder per name in :data:`MEDNIST_CLASSES`, each with ``images_per_class``
    grayscale ``image_size`` x ``image_size`` JPEGs named ``000000.jpeg``, ..., and a
    ``README.txt`` saying it is synthetic. Each class is its own simple pattern (shapes
    with random position, size, brightness and noise), easy for a small CNN to learn.

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
    final = root / SYNTHETIC_FOLDER
    settings = _synthetic_settings(images_per_class, image_size, int(seed))

    def is_wanted(folder: Path) -> bool:
        return _synthetic_is_complete(folder, settings)

    if is_wanted(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{SYNTHETIC_FOLDER}-building-", dir=root))
    try:
        _write_synthetic(staged, settings)
        _move_into_place(staged, final, is_wanted)
    finally:
        # Gone after a successful rename; left over only if something failed.
        shutil.rmtree(staged, ignore_errors=True)
    return final


def is_synthetic(folder: PathLike) -> bool:
    """Return True if ``folder`` is a stand-in written by :func:`make_synthetic_mednist`."""
    marker = _read_marker(Path(folder))
    return bool(marker and marker.get("synthetic") is True)


def mednist_folder(config, root: Optional[PathLike] = None, synthetic: bool = False) -> Path:
    """Return the image folder a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    - ``synthetic=True``: the synthetic stand-in, for offline practice. In grading mode it
      has ``config.images_per_class`` images per class (at least
      :data:`SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS`); in lab mode
      :data:`SYNTHETIC_LAB_IMAGES_PER_CLASS`.
    - Grading mode: the real MedNIST if it is already extracted under ``root``, else the
      synthetic stand-in. Never downloads. Prints one line saying which is used.
    - Lab mode: the real MedNIST, downloaded if needed and ``config.allow_download``.
      Lab mode never swaps in synthetic data by itself: if MedNIST cannot be had,
      :class:`DataUnavailableError` explains what to do.

    ``root`` defaults to :func:`data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if config.grading:
        per_class = max(config.images_per_class or 0, SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS)
        if not synthetic:
            real = find_mednist(root)
            if real is not None:
                print(f"dlmed: using the real MedNIST in {real}")
                return real
        folder = make_synthetic_mednist(root, images_per_class=per_class)
        reason = "as asked" if synthetic else f"MedNIST is not extracted in {root}"
        print(f"dlmed: using the SYNTHETIC stand-in (not medical data) in {folder} ({reason})")
        return folder
    if synthetic:
        return make_synthetic_mednist(root, images_per_class=SYNTHETIC_LAB_IMAGES_PER_CLASS)
    return fetch_mednist(root, allow_download=config.allow_download, show_progress=config.show_progress)


def subset_per_class(dataset, images_per_class: Optional[int], seed: int = 0):
    """Keep at most ``images_per_class`` randomly chosen images of each class.

    ``dataset`` needs a ``targets`` list of class indices, as ``torchvision``'s
    ``ImageFolder`` has. The choice is repeatable for a ``seed``, and the kept indices are
    in ascending order. Returns a ``torch.utils.data.Subset``, or ``dataset`` itself when
    ``images_per_class`` is ``None``.
    """
    if images_per_class is None:
        return dataset
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ValueError(f"images_per_class must be a positive integer or None, got {images_per_class!r}")
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(
            f"subset_per_class needs a dataset with a .targets list of class indices (such as "
            f"torchvision.datasets.ImageFolder); got {type(dataset).__name__} without one"
        )
    targets = torch.as_tensor(targets)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(targets).tolist():
        indices = torch.nonzero(targets == label).flatten()
        shuffled = indices[torch.randperm(len(indices), generator=generator)]
        chosen.extend(shuffled[:images_per_class].tolist())
    return torch.utils.data.Subset(dataset, sorted(chosen))
