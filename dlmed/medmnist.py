"""PneumoniaMNIST (MedMNIST v2): download, checksum, cache, and a synthetic stand-in.

PneumoniaMNIST holds 5,856 pediatric chest X-rays (Kermany et al. 2018) shrunk to 28x28
grayscale, labelled 0 = normal, 1 = pneumonia (about one normal to three pneumonia). It
comes as one NumPy ``.npz`` file with the keys ``train_images``, ``train_labels``,
``val_images``, ``val_labels``, ``test_images`` and ``test_labels``; images are uint8
arrays of shape (N, 28, 28) and labels arrays of shape (N, 1).

The file lives in the same data folder as MedNIST (:func:`dlmed.data.data_dir`: the
environment variable ``DLMED_DATA``, or ``~/dlmed-data``). Nothing here runs on import.

A copy whose MD5 differs from the official file (for example an offline mirror that was
reassembled from other copies) is accepted when its content is valid PneumoniaMNIST.
While a notebook is graded, :func:`pneumonia_data` uses a small synthetic stand-in when
the real file is not there; its pictures are NOT medical images.
"""

import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from dlmed.data import DataUnavailableError, data_dir, download_or_explain, md5sum, usual_permissions

PNEUMONIAMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
#: MD5 of the official file published by MedMNIST.
PNEUMONIAMNIST_MD5 = "28209eda62fecd6e6a2d98b1501bb15f"
#: The file name the data is downloaded to (and where a hand-copied one is looked for).
PNEUMONIAMNIST_FILE = "pneumoniamnist.npz"
#: Class names in label order: label 0 is "normal", label 1 is "pneumonia".
PNEUMONIA_CLASSES = ("normal", "pneumonia")
#: The splits, in the order the file and the returned dict hold them.
PNEUMONIA_SPLITS = ("train", "val", "test")
#: The file :func:`pneumonia_data` writes the stand-in to while grading.
SYNTHETIC_PNEUMONIAMNIST_FILE = "pneumoniamnist-synthetic.npz"
#: While grading, each split is cut to at most this many images (class ratio kept), so
#: that a notebook runs in seconds yet still sees both classes in every split.
PNEUMONIA_GRADING_SAMPLES_PER_SPLIT = 48

_IMAGE_SIZE = 28

PathLike = Union[str, os.PathLike]


def _how_to_get_pneumoniamnist(root: Path) -> str:
    """The instructions that every DataUnavailableError about PneumoniaMNIST ends with."""
    return (
        f"To use PneumoniaMNIST on this machine, do one of the following:\n"
        f"  1. On a machine with internet, download\n"
        f"       {PNEUMONIAMNIST_URL}\n"
        f"     check that its MD5 checksum is {PNEUMONIAMNIST_MD5}, and copy it as\n"
        f"     {PNEUMONIAMNIST_FILE} into {root}\n"
        f"  2. Set the environment variable DLMED_DATA to a folder that already holds\n"
        f"     {PNEUMONIAMNIST_FILE} (in Jupyter, restart the kernel afterwards)."
    )


def _content_problem(arrays: dict) -> Optional[str]:
    """Say what is wrong with the arrays of a would-be PneumoniaMNIST file, or None if nothing."""
    missing = [
        f"{split}_{kind}" for split in PNEUMONIA_SPLITS for kind in ("images", "labels")
        if f"{split}_{kind}" not in arrays
    ]
    if missing:
        return f"it lacks the key(s) {', '.join(missing)}"
    for split in PNEUMONIA_SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE):
            return (
                f"{split}_images should be uint8 of shape (N, {_IMAGE_SIZE}, {_IMAGE_SIZE}), "
                f"got {images.dtype} of shape {images.shape}"
            )
        if len(images) == 0:
            return f"{split}_images is empty"
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images), 1):
            return (
                f"{split}_labels should be integers of shape ({len(images)}, 1) (one per image), "
                f"got {labels.dtype} of shape {labels.shape}"
            )
        unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1})
        if unexpected:
            return f"{split}_labels holds {unexpected}, but the only labels are 0 (normal) and 1 (pneumonia)"
    return None


def _load_arrays(path: Path) -> dict:
    """Return every array in the ``.npz`` file at ``path`` as {key: array}.

    Raises:
        ValueError: the file cannot be read as ``.npz``; the message says why.
    """
    try:
        # allow_pickle=False: a data file has no business running code when loaded.
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                # Members are decompressed here, so a damaged one fails inside this try.
                return {key: loaded[key] for key in loaded.files}
    # Not an .npz (ValueError: pickled data), empty (EOFError), or a zip damaged in its
    # directory (BadZipFile) or in a member (zlib.error, OSError).
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"it cannot be read as a NumPy .npz file ({error})") from error
    raise ValueError("it holds a single .npy array, not the arrays of an .npz file")


def _read_pneumoniamnist(path: Path) -> dict:
    """Read and check a PneumoniaMNIST-style ``.npz``; return {split: (images, labels (N,) int64)}.

    Raises:
        ValueError: the file cannot be read or its content is not valid PneumoniaMNIST;
            the message names the problem and what to do.
    """
    try:
        arrays = _load_arrays(path)
    except ValueError as error:
        problem = str(error)
    else:
        problem = _content_problem(arrays)
    if problem is not None:
        raise ValueError(
            f"{path} is not valid PneumoniaMNIST: {problem}. Delete it and run again to "
            f"download it from {PNEUMONIAMNIST_URL}, or copy a good copy (MD5 "
            f"{PNEUMONIAMNIST_MD5}) there."
        )
    return {
        split: (arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1).astype(np.int64))
        for split in PNEUMONIA_SPLITS
    }


def fetch_pneumoniamnist(
    root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True
) -> Path:
    """Return the path of ``pneumoniamnist.npz``, downloading it if needed.

    ``root`` defaults to :func:`dlmed.data.data_dir`. In order:

    1. ``root/pneumoniamnist.npz`` with the official MD5 is returned as it is;
    2. one with another MD5 is checked: if its content is valid PneumoniaMNIST (the six
       keys, uint8 images (N, 28, 28), labels (N, 1) in {0, 1}) it is used, and one line
       says that its checksum differs from the official file; otherwise ValueError;
    3. otherwise it is downloaded from :data:`PNEUMONIAMNIST_URL` when ``allow_download``
       and checked against :data:`PNEUMONIAMNIST_MD5`.

    Nothing is written unless a download is needed, so ``root`` may be a read-only folder
    that holds the file.

    Raises:
        DataUnavailableError: the file is not here and may not, or cannot, be downloaded.
            The message says how to get it by hand.
        ValueError: the file here is not valid PneumoniaMNIST, or a download had the wrong
            checksum (the download is deleted).
    """
    root = Path(root if root is not None else data_dir())
    path = root / PNEUMONIAMNIST_FILE
    if path.is_file():
        got_md5 = md5sum(path)
        if got_md5 != PNEUMONIAMNIST_MD5:
            _read_pneumoniamnist(path)  # raises ValueError naming the problem
            print(
                f"dlmed: {path} has MD5 {got_md5}, not the official file's {PNEUMONIAMNIST_MD5}, "
                f"but its content is valid PneumoniaMNIST; using it."
            )
        return path

    return download_or_explain(
        "PneumoniaMNIST", PNEUMONIAMNIST_URL, path, PNEUMONIAMNIST_MD5,
        _how_to_get_pneumoniamnist(root), allow_download, show_progress,
    )


def load_pneumoniamnist(
    root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True
) -> dict:
    """Return PneumoniaMNIST as ``{"train": (images, labels), "val": ..., "test": ...}``.

    ``images`` is a uint8 array of shape (N, 28, 28) and ``labels`` an int64 array of
    shape (N,) (the file's (N, 1) flattened), 0 = normal, 1 = pneumonia. The file is found
    or downloaded by :func:`fetch_pneumoniamnist`, which takes the same arguments.
    """
    return _read_pneumoniamnist(fetch_pneumoniamnist(root, allow_download, show_progress))


class ArrayImageDataset(torch.utils.data.Dataset):
    """A dataset of grayscale images held in memory as a NumPy array.

    Args:
        images: uint8 array of shape (N, H, W).
        labels: N integer class labels (array or list, shape (N,)).
        transform: applied to each image as a grayscale PIL image (e.g. torchvision
            transforms ending in ``ToTensor()``). Without one, an item's image is a float
            tensor of shape (1, H, W) with values in [0, 1].

    Items are ``(image, label)`` with ``label`` an ``int``. ``targets`` holds all labels
    (int64 array of shape (N,)), as samplers and :func:`dlmed.data.subset_per_class` need.
    """

    def __init__(self, images, labels, transform=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise TypeError(
                f"images should be a uint8 array of shape (N, H, W), got {images.dtype} of shape "
                f"{images.shape}. Convert images in [0, 1] with (x * 255).round().astype(np.uint8)."
            )
        if labels.shape != (len(images),):
            raise ValueError(
                f"labels should have shape ({len(images)},), one per image, got {labels.shape}; "
                f"flatten (N, 1) labels with labels.reshape(-1)"
            )
        self.images = images
        self.targets = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is None:
            tensor = torch.from_numpy(image).float().div(255.0).unsqueeze(0)
        else:
            tensor = self.transform(Image.fromarray(image))  # 2-D uint8 -> grayscale ("L")
        return tensor, int(self.targets[index])


# --- The synthetic stand-in --------------------------------------------------------------


def _draw_chests(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one 28x28 uint8 picture per label: two dark lungs; pneumonia adds a bright patch."""
    n = len(labels)

    def jitter(low, high):
        # One value per image, broadcastable against (n, 28, 28).
        return rng.uniform(low, high, size=(n, 1, 1))

    axis = np.linspace(-1.0, 1.0, _IMAGE_SIZE)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x = x - jitter(-0.08, 0.08)
    y = y - jitter(-0.08, 0.08)
    image = np.zeros_like(x) + jitter(0.65, 0.85)  # bright chest
    for side in (-1.0, 1.0):
        lung = ((x - side * 0.4) / 0.28) ** 2 + (y / 0.6) ** 2 < 1.0
        image = image - jitter(0.35, 0.5) * lung
    # The "opacity": a soft bright blob in one lung, which a small model can learn to spot.
    side = np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0)
    cx, cy = side * 0.4 + jitter(-0.1, 0.1), jitter(-0.3, 0.3)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * jitter(0.15, 0.25) ** 2))
    image = image + jitter(0.3, 0.45) * blob * (labels == 1)[:, None, None]
    image = image + rng.normal(0.0, 0.06, size=image.shape)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_synthetic_pneumoniamnist(
    path: PathLike, samples_per_split: Tuple[int, int, int] = (64, 16, 32), seed: int = 0
) -> Path:
    """Write a small synthetic stand-in for PneumoniaMNIST and return its path.

    ``path`` is the ``.npz`` file to write, or a folder to write
    :data:`SYNTHETIC_PNEUMONIAMNIST_FILE` into. The file name must contain "synthetic", so
    the stand-in can never be taken for the real ``pneumoniamnist.npz``.

    The file has the real file's keys, dtypes and shapes: ``<split>_images`` uint8
    (N, 28, 28) and ``<split>_labels`` uint8 (N, 1) for the splits train, val and test
    with ``samples_per_split`` images each. About one image in four is "normal" (label 0),
    as in the real set, and every split holds both classes. The pictures are two dark
    lungs on a bright chest; "pneumonia" adds a bright patch in one lung. THEY ARE NOT
    MEDICAL IMAGES: they let code run offline and in tests.

    The same seed gives the same arrays. The file is written under a temporary name and
    renamed, so readers never see half a file; an identical existing file is left alone.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path / SYNTHETIC_PNEUMONIAMNIST_FILE
    if "synthetic" not in path.name:
        raise ValueError(
            f"The stand-in's file name must contain 'synthetic' so that it is never mistaken "
            f"for real data, got {path.name!r}; use e.g. {SYNTHETIC_PNEUMONIAMNIST_FILE!r}"
        )
    counts = tuple(samples_per_split)
    if len(counts) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in counts):
        raise ValueError(
            f"samples_per_split must be three integers of at least 2 (train, val, test; both "
            f"classes need an image), got {samples_per_split!r}"
        )
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(PNEUMONIA_SPLITS, counts):
        normal = max(1, round(count / 4))  # about 1:3, as in the real data
        labels = rng.permutation(np.repeat([0, 1], [normal, count - normal]))
        arrays[f"{split}_images"] = _draw_chests(labels, rng)
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)

    if path.is_file():
        try:
            old = _load_arrays(path)
        except ValueError:
            old = {}  # damaged: written again below
        if old.keys() == arrays.keys() and all(np.array_equal(old[k], v) for k, v in arrays.items()):
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so the rename is atomic and two writers at once each replace it whole.
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **arrays)
        usual_permissions(partial)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)  # left only if writing failed
    return path


def _subsample(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0):
    """Keep ``size`` images chosen at random with the class ratio kept (in original order)."""
    if len(labels) <= size:
        return images, labels
    keep, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    keep = np.sort(keep)
    return images[keep], labels[keep]


def pneumonia_data(config, root: Optional[PathLike] = None) -> dict:
    """Return the PneumoniaMNIST splits a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    The result is ``{"train": (images, labels), "val": ..., "test": ...}`` with uint8
    images of shape (N, 28, 28) and int64 labels of shape (N,), as from
    :func:`load_pneumoniamnist`.

    - Grading mode: the real file if it is in ``root`` (a read-only folder such as an
      offline mirror is fine: nothing is written there), else the synthetic stand-in
      :data:`SYNTHETIC_PNEUMONIAMNIST_FILE` made in ``root``. Never downloads. Each split
      is cut to at most :data:`PNEUMONIA_GRADING_SAMPLES_PER_SPLIT` images, both classes
      kept in their ratio. Prints one line saying which data is used.
    - Lab mode: the whole real data set, downloaded if needed and ``config.allow_download``.
      Lab mode never swaps in synthetic data: if PneumoniaMNIST cannot be had,
      :class:`~dlmed.data.DataUnavailableError` explains what to do.

    ``root`` defaults to :func:`dlmed.data.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if not config.grading:
        return load_pneumoniamnist(root, allow_download=config.allow_download, show_progress=config.show_progress)

    splits = None
    reason = f"{PNEUMONIAMNIST_FILE} is not in {root}"
    if (root / PNEUMONIAMNIST_FILE).is_file():
        try:
            splits = load_pneumoniamnist(root, allow_download=False, show_progress=False)
            print(f"dlmed: using the real PneumoniaMNIST in {root / PNEUMONIAMNIST_FILE} (subsampled for grading)")
        except ValueError as error:
            # Grading must not fail because of a damaged data file; say why and go on.
            reason = str(error)
    if splits is None:
        path = make_synthetic_pneumoniamnist(root)
        splits = _read_pneumoniamnist(path)
        print(f"dlmed: using the SYNTHETIC stand-in (not medical data) in {path} ({reason})")
    return {
        split: _subsample(images, labels, PNEUMONIA_GRADING_SAMPLES_PER_SPLIT)
        for split, (images, labels) in splits.items()
    }
