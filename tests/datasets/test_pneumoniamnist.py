"""Tests for dlmed.datasets.pneumoniamnist: checksum and content checks, the stand-in, subsampling.

What every data module shares (download, checksum, cache, offline error, mirror, grading
mode) is tested in test_shared.py. No test touches the network: downloads read a small file
through a ``file://`` URL, and ``urlopen``/requests are replaced wherever a test must prove
they are not called.
"""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlmed.config import RunConfig
from dlmed.datasets import DataUnavailableError, pneumoniamnist
from dlmed.datasets.pneumoniamnist import SPLITS, SYNTHETIC_FILE, ArrayImageDataset, fetch, for_notebook, load, make_synthetic
from tests.conftest import PROJECT_ROOT
from tests.datasets.fakes import valid_pneumonia_arrays as _valid_arrays
from tests.datasets.fakes import write_pneumonia_npz as _write_npz
from tests.datasets.test_shared import check_pneumonia_grading_splits as _check_grading_splits

GRADING = RunConfig(mode="grading", images_per_class=8, allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)
FILE = pneumoniamnist.REMOTE.filename
# The read-only offline mirror next to the project (../shared/data), where there is one.
SHARED_COPY = PROJECT_ROOT.parent / "shared" / "data" / FILE


def md5sum(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A small valid PneumoniaMNIST file; REMOTE's address and official checksum point at it."""
    path = _write_npz(tmp_path / "served" / FILE)
    monkeypatch.setattr(pneumoniamnist, "REMOTE", dataclasses.replace(
        pneumoniamnist.REMOTE, url=path.as_uri(), checksum=f"md5:{md5sum(path)}"))
    return path


# --- fetch: checksum and content ------------------------------------------


def test_official_file_accepted_silently(served, root, no_network, capsys):
    """A file with the official MD5 is returned as it is, with no message and no network."""
    root.mkdir()
    (root / FILE).write_bytes(served.read_bytes())
    assert fetch(allow_download=False, show_progress=False) == root / FILE
    assert capsys.readouterr().out == ""
    assert no_network == []


def test_other_md5_with_valid_content_accepted_with_message(root, no_network, capsys):
    """A valid file with another MD5 (e.g. a reassembled mirror) is used, and one line says so."""
    path = _write_npz(root / FILE, _valid_arrays())
    assert fetch(root, show_progress=False) == path
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert md5sum(path) in lines[0] and pneumoniamnist.REMOTE.digest in lines[0]
    assert "valid" in lines[0]
    assert no_network == []


def _broken(change):
    arrays = _valid_arrays()
    change(arrays)
    return arrays


@pytest.mark.parametrize(
    "arrays, problem",
    [
        (_broken(lambda a: a.pop("val_labels")), "val_labels"),
        (_broken(lambda a: a.update(train_images=a["train_images"].astype(np.float32))), "uint8"),
        (_broken(lambda a: a.update(test_images=np.zeros((20, 32, 32), np.uint8))), "(N, 28, 28)"),
        (_broken(lambda a: a.update(train_labels=a["train_labels"][:-1])), "train_labels"),
        (_broken(lambda a: a.update(val_labels=a["val_labels"] + 1)), "[2]"),
        (_broken(lambda a: a.update(test_labels=a["test_labels"].reshape(-1))), "(20, 1)"),
    ],
    ids=["missing-key", "float-images", "wrong-size", "too-few-labels", "label-2", "flat-labels"],
)
def test_invalid_content_is_rejected(root, no_network, arrays, problem):
    """A file with another MD5 and invalid content raises ValueError naming the problem, and is kept."""
    path = _write_npz(root / FILE, arrays)
    before = path.read_bytes()
    with pytest.raises(ValueError) as caught:
        fetch(root, show_progress=False)
    message = str(caught.value)
    assert problem in message
    assert str(path) in message and "not valid PneumoniaMNIST" in message
    assert path.read_bytes() == before  # not ours to delete
    assert no_network == []


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04 truncated zip"])
def test_unreadable_file_is_rejected(root, content):
    """Empty, garbage or truncated files give a ValueError saying the file cannot be read."""
    root.mkdir()
    (root / FILE).write_bytes(content)
    with pytest.raises(ValueError, match="cannot be read"):
        load(root, allow_download=False, show_progress=False)


def test_single_npy_array_is_rejected(root):
    """A plain .npy saved under the .npz name is rejected as not an .npz."""
    root.mkdir()
    with open(root / FILE, "wb") as file:
        np.save(file, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="single .npy array"):
        fetch(root, allow_download=False, show_progress=False)


def test_load_flattens_labels(root, no_network):
    """load gives uint8 (N, 28, 28) images and int64 (N,) labels for each split, reusing the file as it is."""
    arrays = _valid_arrays()
    _write_npz(root / FILE, arrays)
    mtime = (root / FILE).stat().st_mtime_ns
    splits = load(root, show_progress=False)
    assert (root / FILE).stat().st_mtime_ns == mtime
    assert no_network == []
    assert list(splits) == list(SPLITS)
    for split, (images, labels) in splits.items():
        assert images.dtype == np.uint8 and images.shape == arrays[f"{split}_images"].shape
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        np.testing.assert_array_equal(labels, arrays[f"{split}_labels"][:, 0])


# --- ArrayImageDataset -------------------------------------------------------------------


def test_array_dataset_items_without_transform():
    """Items are float (1, H, W) tensors in [0, 1] and int labels; targets is an int64 array."""
    images = np.array([np.full((28, 30), 0, np.uint8), np.full((28, 30), 255, np.uint8)])
    dataset = ArrayImageDataset(images, [0, 1])
    assert len(dataset) == 2
    image, label = dataset[1]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 30)
    assert image.min().item() == 1.0 and dataset[0][0].max().item() == 0.0
    assert label == 1 and type(label) is int
    assert dataset.targets.dtype == np.int64 and list(dataset.targets) == [0, 1]


def test_array_dataset_transform_gets_grayscale_pil():
    """The transform receives a grayscale PIL image of the same size, and its result is the item."""
    seen = []

    def transform(image):
        seen.append(image)
        return "transformed"

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    dataset = ArrayImageDataset(images, np.array([1, 0, 1]), transform=transform)
    assert dataset[2] == ("transformed", 1)
    assert isinstance(seen[0], Image.Image) and seen[0].mode == "L" and seen[0].size == (28, 28)
    np.testing.assert_array_equal(np.asarray(seen[0]), images[2])


def test_array_dataset_rejects_bad_input():
    """Float images and labels of the wrong shape fail with messages saying what to do."""
    with pytest.raises(TypeError, match="uint8"):
        ArrayImageDataset(np.zeros((2, 28, 28), np.float32), [0, 1])
    with pytest.raises(ValueError, match="reshape"):
        ArrayImageDataset(np.zeros((2, 28, 28), np.uint8), np.zeros((2, 1)))


def test_array_dataset_in_a_dataloader():
    """A DataLoader batches items to (B, 1, H, W) float and (B,) int64."""
    images = np.zeros((5, 28, 28), np.uint8)
    loader = torch.utils.data.DataLoader(ArrayImageDataset(images, [0, 1, 1, 1, 0]), batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 1, 28, 28) and y.dtype == torch.int64


# --- the synthetic stand-in --------------------------------------------------------------


def test_synthetic_layout(tmp_path):
    """The stand-in has the real file's keys, dtypes and shapes, both classes per split, about 1:3."""
    path = make_synthetic(tmp_path)
    assert path == tmp_path / SYNTHETIC_FILE and "synthetic" in path.name
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))
        for split, size in zip(SPLITS, (64, 16, 32)):
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
            assert images.dtype == np.uint8 and images.shape == (size, 28, 28)
            assert labels.dtype == np.uint8 and labels.shape == (size, 1)
            assert np.bincount(labels[:, 0]).tolist() == [size // 4, size - size // 4]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_synthetic_is_deterministic_and_reused(tmp_path):
    """The same seed gives the same arrays and leaves an identical file alone; another seed differs."""
    first = make_synthetic(tmp_path / "a-synthetic.npz", seed=3)
    mtime = first.stat().st_mtime_ns
    assert make_synthetic(first, seed=3).stat().st_mtime_ns == mtime
    same = make_synthetic(tmp_path / "b-synthetic.npz", seed=3)
    other = make_synthetic(tmp_path / "c-synthetic.npz", seed=4)
    with np.load(first) as a, np.load(same) as b, np.load(other) as c:
        assert all(np.array_equal(a[key], b[key]) for key in a.files)
        assert not np.array_equal(a["train_images"], c["train_images"])


def test_synthetic_name_must_say_synthetic(tmp_path):
    """Writing the stand-in as pneumoniamnist.npz is refused, so it can never pass for real data."""
    with pytest.raises(ValueError, match="synthetic"):
        make_synthetic(tmp_path / FILE)
    with pytest.raises(ValueError, match="samples_per_split"):
        make_synthetic(tmp_path, samples_per_split=(10, 1, 10))
    assert list(tmp_path.iterdir()) == []


def test_synthetic_is_learnable(tmp_path):
    """A linear model on the pixels beats always guessing "pneumonia" (75%) clearly."""
    from sklearn.linear_model import LogisticRegression

    path = make_synthetic(tmp_path, samples_per_split=(400, 16, 200), seed=1)
    with np.load(path) as arrays:
        x_train, y_train = arrays["train_images"], arrays["train_labels"][:, 0]
        x_test, y_test = arrays["test_images"], arrays["test_labels"][:, 0]
    model = LogisticRegression(max_iter=2000).fit(x_train.reshape(len(x_train), -1) / 255.0, y_train)
    assert model.score(x_test.reshape(len(x_test), -1) / 255.0, y_test) > 0.85


# --- for_notebook ------------------------------------------------------------------------


def test_grading_subsamples_the_real_data(root, no_network, capsys):
    """Grading mode uses the real file when present, subsampled, and makes no stand-in."""
    arrays = _valid_arrays(sizes=(200, 12, 20))
    _write_npz(root / FILE, arrays)
    splits = for_notebook(GRADING, root)
    _check_grading_splits(splits)
    assert len(splits["train"][1]) == pneumoniamnist.GRADING_SAMPLES_PER_SPLIT
    assert len(splits["val"][1]) == 12  # already small: kept whole
    # The subsample is drawn from the real images (it keeps their order).
    real_rows = {row.tobytes() for row in arrays["train_images"]}
    assert all(image.tobytes() in real_rows for image in splits["train"][0])
    assert not (root / SYNTHETIC_FILE).exists()
    out = capsys.readouterr().out
    assert "real PneumoniaMNIST" in out and "SYNTHETIC" not in out
    assert no_network == []


def test_grading_with_damaged_file_falls_back_and_says_why(root, no_network, capsys):
    """A damaged real file does not break grading: the stand-in is used and the line names the problem."""
    root.mkdir()
    (root / FILE).write_bytes(b"damaged")
    _check_grading_splits(for_notebook(GRADING, root))
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "cannot be read" in out


def test_lab_mode_ignores_a_stand_in(root, no_network):
    """A stand-in left in root by grading is not used in lab mode: it still raises."""
    make_synthetic(root)
    with pytest.raises(DataUnavailableError):
        for_notebook(RunConfig(mode="lab", allow_download=False, show_progress=False), root)
    assert no_network == []


def test_lab_mode_returns_all_real_data(served, root):
    """Lab mode downloads when allowed and returns every image, not a subsample."""
    splits = for_notebook(LAB, root)
    assert [len(labels) for _, labels in splits.values()] == [60, 12, 20]


def test_synthetic_on_request(root, no_network, capsys):
    """synthetic=True (USE_SYNTHETIC_DATA) gives the stand-in even when the real file is there:
    in lab mode the larger practice size, in grading mode the usual small splits."""
    _write_npz(root / FILE)
    lab = for_notebook(LAB, root, synthetic=True)
    assert [len(labels) for _, labels in lab.values()] == list(pneumoniamnist.SYNTHETIC_LAB_SAMPLES_PER_SPLIT)
    _check_grading_splits(for_notebook(GRADING, root, synthetic=True))
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "as asked" in out
    assert no_network == []


# --- the offline mirror ------------------------------------------------------------------


def _folder_state(folder: Path):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.mark.skipif(
    not SHARED_COPY.is_file(),
    reason=f"the offline copy of PneumoniaMNIST is not on this machine ({SHARED_COPY})",
)
def test_shared_offline_copy(monkeypatch, no_network, capsys):
    """The shared mirror reads through DLMED_DATA with the real split sizes; nothing is written there."""
    folder = SHARED_COPY.parent
    monkeypatch.setenv("DLMED_DATA", str(folder))
    before = _folder_state(folder)
    splits = load(allow_download=False, show_progress=False)
    assert {split: len(labels) for split, (_, labels) in splits.items()} == {"train": 4690, "val": 524, "test": 624}
    assert np.bincount(splits["test"][1]).tolist() == [234, 390]
    if md5sum(SHARED_COPY) != pneumoniamnist.REMOTE.digest:
        assert "valid" in capsys.readouterr().out  # the mirror is not byte-identical
    _check_grading_splits(for_notebook(GRADING))  # grading reads it too, without writing
    assert _folder_state(folder) == before
    assert no_network == []
