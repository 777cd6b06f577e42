"""PneumoniaMNIST (MedMNIST v2): download, checksum, cache, and a synthetic stand-in.

PneumoniaMNIST holds 5,856 pediatric chest X-rays (Kermany et al. 2018) shrunk to 28x28
grayscale, labelled 0 = normal, 1 = pneumonia (about one normal to three pneumonia). It
comes as one NumPy ``.npz`` file with the keys ``train_images``, ``train_labels``,
``val_images``, ``val_labels``, ``test_images`` and ``test_labels``; images are uint8
arrays of shape (N, 28, 28) and labels arrays of shape (N, 1).

The file lives in the data folder (:func:`dlmed.datasets.data_dir`: the environment
variable ``DLMED_DATA``, or ``~/dlmed-data``). Nothing here runs on import.

A copy whose checksum differs from the official file (for example an offline mirror that
was reassembled from other copies) is accepted when its content is valid PneumoniaMNIST.
While a notebook is graded, :func:`for_notebook` uses a small synthetic stand-in when the
real file is not there; its pictures are NOT medical images.
"""

import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from dlmed.datasets import PathLike, data_dir, usual_permissions
from dlmed.datasets._download import Remote, by_hand, download, file_checksum, matches

NAME = "PneumoniaMNIST"
#: The official file published by MedMNIST: address, checksum, and its name in the data
#: folder (where a hand-copied one is looked for too).
REMOTE = Remote(
    url="https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1",
    checksum="md5:28209eda62fecd6e6a2d98b1501bb15f",
    filename="pneumoniamnist.npz",
)
#: Class names in label order: label 0 is "normal", label 1 is "pneumonia".
CLASSES = ("normal", "pneumonia")
#: The splits, in the order the file and the returned dict hold them.
SPLITS = ("train", "val", "test")
#: The file :func:`for_notebook` writes the stand-in to.
SYNTHETIC_FILE = "pneumoniamnist-synthetic.npz"
#: While grading, each split is cut to at most this many images (class ratio kept), so
#: that a notebook runs in seconds yet still sees both classes in every split.
GRADING_SAMPLES_PER_SPLIT = 48
#: Images per split of the stand-in used for offline practice in lab mode (train, val, test).
SYNTHETIC_LAB_SAMPLES_PER_SPLIT = (600, 100, 200)

_IMAGE_SIZE = 28


def _content_problem(arrays: dict) -> Optional[str]:
    """Say what is wrong with the arrays of a would-be PneumoniaMNIST file, or None if nothing."""
    missing = [
        f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")
        if f"{split}_{kind}" not in arrays
    ]
    if missing:
        return f"it lacks the key(s) {', '.join(missing)}"
    for split in SPLITS:
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


def _read(path: Path) -> dict:
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
            f"download it from {REMOTE.url}, or copy a good copy ({REMOTE.algorithm.upper()} "
            f"{REMOTE.digest}) there."
        )
    return {
        split: (arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1).astype(np.int64))
        for split in SPLITS
    }


def find(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return the path of ``root/pneumoniamnist.npz`` if it is there, else ``None``.

    Its content is not checked here (:func:`fetch` does). ``root`` defaults to
    :func:`~dlmed.datasets.data_dir`. Nothing is downloaded or created.
    """
    path = Path(root if root is not None else data_dir()) / REMOTE.filename
    return path if path.is_file() else None


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> Path:
    """Return the path of ``pneumoniamnist.npz``, downloading it if needed.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. In order:

    1. ``root/pneumoniamnist.npz`` with the official checksum is returned as it is;
    2. one with another checksum is checked: if its content is valid PneumoniaMNIST (the
       six keys, uint8 images (N, 28, 28), labels (N, 1) in {0, 1}) it is used, and one
       line says that its checksum differs from the official file; otherwise ValueError;
    3. otherwise it is downloaded from :data:`REMOTE` when ``allow_download`` and checked
       against its checksum.

    Nothing is written unless a download is needed, so ``root`` may be a read-only folder
    that holds the file (such as a shared offline mirror).

    Raises:
        DataUnavailableError: the file is not here and may not, or cannot, be downloaded.
            The message says how to go on.
        ValueError: the file here is not valid PneumoniaMNIST, or a download had the wrong
            checksum (the download is deleted).
    """
    root = Path(root if root is not None else data_dir())
    path = find(root)
    if path is None:
        return download(NAME, REMOTE, root, by_hand(REMOTE, root), allow_download, show_progress)
    if not matches(REMOTE, path):
        _read(path)  # raises ValueError naming the problem
        got = file_checksum(path, REMOTE.algorithm)
        print(
            f"dlmed: {path} has {REMOTE.algorithm.upper()} {got}, not the official file's {REMOTE.digest}, "
            f"but its content is valid PneumoniaMNIST; using it."
        )
    return path


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> dict:
    """Return PneumoniaMNIST as ``{"train": (images, labels), "val": ..., "test": ...}``.

    ``images`` is a uint8 array of shape (N, 28, 28) and ``labels`` an int64 array of
    shape (N,) (the file's (N, 1) flattened), 0 = normal, 1 = pneumonia. The file is found
    or downloaded by :func:`fetch`, which takes the same arguments.
    """
    return _read(fetch(root, allow_download, show_progress))


class ArrayImageDataset(torch.utils.data.Dataset):
    """A dataset of grayscale images held in memory as a NumPy array.

    Args:
        images: uint8 array of shape (N, H, W).
        labels: N integer class labels (array or list, shape (N,)).
        transform: applied to each image as a grayscale PIL image (e.g. torchvision
            transforms ending in ``ToTensor()``). Without one, an item's image is a float
            tensor of shape (1, H, W) with values in [0, 1].

    Items are ``(image, label)`` with ``label`` an ``int``. ``targets`` holds all labels
    (int64 array of shape (N,)), as samplers and :func:`dlmed.datasets.subset_per_class` need.
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


def make_synthetic(
    path: PathLike, samples_per_split: Tuple[int, int, int] = (64, 16, 32), seed: int = 0
) -> Path:
    """Write a small synthetic stand-in for PneumoniaMNIST and return its path.

    ``path`` is the ``.npz`` file to write, or a folder to write
    :data:`SYNTHETIC_FILE` into. The file name must contain "synthetic", so
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
        path = path / SYNTHETIC_FILE
    if "synthetic" not in path.name:
        raise ValueError(
            f"The stand-in's file name must contain 'synthetic' so that it is never mistaken "
            f"for real data, got {path.name!r}; use e.g. {SYNTHETIC_FILE!r}"
        )
    counts = tuple(samples_per_split)
    if len(counts) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in counts):
        raise ValueError(
            f"samples_per_split must be three integers of at least 2 (train, val, test; both "
            f"classes need an image), got {samples_per_split!r}"
        )
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(SPLITS, counts):
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


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False) -> dict:
    """Return the PneumoniaMNIST splits a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    The result is ``{"train": (images, labels), "val": ..., "test": ...}`` with uint8
    images of shape (N, 28, 28) and int64 labels of shape (N,), as from :func:`load`.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the synthetic stand-in
      :data:`SYNTHETIC_FILE` made in ``root``, for offline practice (in lab mode with
      :data:`SYNTHETIC_LAB_SAMPLES_PER_SPLIT` images).
    - Grading mode: the real file if it is in ``root`` (a read-only folder such as an
      offline mirror is fine: nothing is written there), else the stand-in. Never
      downloads. Each split is cut to at most :data:`GRADING_SAMPLES_PER_SPLIT` images,
      both classes kept in their ratio. Prints one line saying which data is used.
    - Lab mode: the whole real data set, downloaded if needed and ``config.allow_download``.
      Lab mode never swaps in synthetic data by itself: if PneumoniaMNIST cannot be had,
      :class:`~dlmed.datasets.DataUnavailableError` explains what to do.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if not config.grading:
        if synthetic:
            return _read(make_synthetic(root, SYNTHETIC_LAB_SAMPLES_PER_SPLIT))
        return load(root, allow_download=config.allow_download, show_progress=config.show_progress)

    splits = None
    reason = "as asked" if synthetic else f"{REMOTE.filename} is not in {root}"
    if not synthetic and find(root) is not None:
        try:
            splits = load(root, allow_download=False, show_progress=False)
            print(f"dlmed: using the real PneumoniaMNIST in {root / REMOTE.filename} (subsampled for grading)")
        except ValueError as error:
            # Grading must not fail because of a damaged data file; say why and go on.
            reason = str(error)
    if splits is None:
        path = make_synthetic(root)
        splits = _read(path)
        print(f"dlmed: using the SYNTHETIC stand-in (not medical data) in {path} ({reason})")
    return {
        split: _subsample(images, labels, GRADING_SAMPLES_PER_SPLIT)
        for split, (images, labels) in splits.items()
    }
