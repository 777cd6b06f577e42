"""Tests for dlmed.medmnist: PneumoniaMNIST checksum and content checks, download, stand-in.

No test touches the network: downloads read a small file through a ``file://`` URL, and
``urllib.request.urlopen`` is replaced wherever a test must prove it is not called.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import assert_import_has_no_side_effects, assert_public_api_documented
from dlmed import medmnist
from dlmed.config import RunConfig
from dlmed.data import DataUnavailableError, md5sum
from dlmed.medmnist import (
    PNEUMONIAMNIST_FILE,
    SYNTHETIC_PNEUMONIAMNIST_FILE,
    ArrayImageDataset,
    fetch_pneumoniamnist,
    load_pneumoniamnist,
    make_synthetic_pneumoniamnist,
    pneumonia_data,
)

GRADING = RunConfig(mode="grading", images_per_class=8, allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)
SHARED_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"
SPLITS = ("train", "val", "test")


# --- helpers and fixtures ----------------------------------------------------------------


def _valid_arrays(sizes=(60, 12, 20), seed=0) -> dict:
    """Arrays with PneumoniaMNIST's keys, dtypes and shapes (random pixels, labels 0/1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in zip(SPLITS, sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        labels = np.arange(size) % 4 != 0  # 1 normal in 4, like the real set
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    return arrays


def _write_npz(path: Path, arrays: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A small valid PneumoniaMNIST file; the URL and official MD5 point at it."""
    path = _write_npz(tmp_path / "served" / "pneumoniamnist.npz", _valid_arrays())
    monkeypatch.setattr(medmnist, "PNEUMONIAMNIST_URL", path.as_uri())
    monkeypatch.setattr(medmnist, "PNEUMONIAMNIST_MD5", md5sum(path))
    return path


# --- module hygiene ----------------------------------------------------------------------


def test_import_has_no_side_effects(tmp_path, monkeypatch):
    """Running dlmed/medmnist.py's top-level code creates no folder."""
    assert_import_has_no_side_effects(medmnist, "fetch_pneumoniamnist", tmp_path, monkeypatch)


def test_public_functions_have_docstrings():
    """Every public function and class of dlmed.medmnist is documented."""
    assert_public_api_documented(medmnist, minimum=5)


# --- fetch_pneumoniamnist: checksum and content ------------------------------------------


def test_official_file_accepted_silently(served, root, no_network, capsys):
    """A file with the official MD5 is returned as it is, with no message and no network."""
    root.mkdir()
    (root / PNEUMONIAMNIST_FILE).write_bytes(served.read_bytes())
    assert fetch_pneumoniamnist(allow_download=False, show_progress=False) == root / PNEUMONIAMNIST_FILE
    assert capsys.readouterr().out == ""
    assert no_network == []


def test_other_md5_with_valid_content_accepted_with_message(root, no_network, capsys):
    """A valid file with another MD5 (e.g. a reassembled mirror) is used, and one line says so."""
    path = _write_npz(root / PNEUMONIAMNIST_FILE, _valid_arrays())
    assert fetch_pneumoniamnist(root, show_progress=False) == path
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert md5sum(path) in lines[0] and medmnist.PNEUMONIAMNIST_MD5 in lines[0]
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
    path = _write_npz(root / PNEUMONIAMNIST_FILE, arrays)
    before = path.read_bytes()
    with pytest.raises(ValueError) as caught:
        fetch_pneumoniamnist(root, show_progress=False)
    message = str(caught.value)
    assert problem in message
    assert str(path) in message and "not valid PneumoniaMNIST" in message
    assert path.read_bytes() == before  # not ours to delete
    assert no_network == []


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04 truncated zip"])
def test_unreadable_file_is_rejected(root, content):
    """Empty, garbage or truncated files give a ValueError saying the file cannot be read."""
    root.mkdir()
    (root / PNEUMONIAMNIST_FILE).write_bytes(content)
    with pytest.raises(ValueError, match="cannot be read"):
        load_pneumoniamnist(root, allow_download=False, show_progress=False)


def test_single_npy_array_is_rejected(root):
    """A plain .npy saved under the .npz name is rejected as not an .npz."""
    root.mkdir()
    with open(root / PNEUMONIAMNIST_FILE, "wb") as file:
        np.save(file, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="single .npy array"):
        fetch_pneumoniamnist(root, allow_download=False, show_progress=False)


# --- fetch_pneumoniamnist: download ------------------------------------------------------


def test_download_when_absent(served, root):
    """With nothing present, the file is downloaded into root and checked."""
    path = fetch_pneumoniamnist(show_progress=False)  # root from DLMED_DATA
    assert path == root / PNEUMONIAMNIST_FILE
    assert path.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in root.iterdir()) == [PNEUMONIAMNIST_FILE]  # no .part left


def test_download_checksum_mismatch_removes_file(served, root, monkeypatch):
    """A download whose MD5 is not the official one raises ValueError and leaves no file."""
    monkeypatch.setattr(medmnist, "PNEUMONIAMNIST_MD5", "0" * 32)
    with pytest.raises(ValueError) as caught:
        fetch_pneumoniamnist(root, show_progress=False)
    assert "0" * 32 in str(caught.value) and md5sum(served) in str(caught.value)
    assert list(root.iterdir()) == []


def test_offline_error_explains_what_to_do(root, offline):
    """Offline, DataUnavailableError names the URL, the MD5, the folder and DLMED_DATA."""
    with pytest.raises(DataUnavailableError) as caught:
        fetch_pneumoniamnist(root, show_progress=False)
    message = str(caught.value)
    assert medmnist.PNEUMONIAMNIST_URL in message
    assert medmnist.PNEUMONIAMNIST_MD5 in message
    assert str(root) in message
    assert "DLMED_DATA" in message
    assert isinstance(caught.value.__cause__, DataUnavailableError)
    assert not (root / PNEUMONIAMNIST_FILE).exists()


def test_downloads_off_and_absent_raises_without_writing(root, no_network):
    """allow_download=False with nothing present raises with the instructions and creates nothing."""
    with pytest.raises(DataUnavailableError) as caught:
        fetch_pneumoniamnist(root, allow_download=False, show_progress=False)
    assert medmnist.PNEUMONIAMNIST_URL in str(caught.value)
    assert str(root) in str(caught.value)
    assert not root.exists()
    assert no_network == []


def test_reuse_without_network(served, root, no_network):
    """A file already in root is reused by fetch and load; urlopen is never called."""
    root.mkdir()
    (root / PNEUMONIAMNIST_FILE).write_bytes(served.read_bytes())
    mtime = (root / PNEUMONIAMNIST_FILE).stat().st_mtime_ns
    for allow in (True, False):
        assert fetch_pneumoniamnist(root, allow_download=allow, show_progress=False) == root / PNEUMONIAMNIST_FILE
    load_pneumoniamnist(root, show_progress=False)
    assert (root / PNEUMONIAMNIST_FILE).stat().st_mtime_ns == mtime
    assert no_network == []


def test_load_flattens_labels(root, no_network):
    """load_pneumoniamnist gives uint8 (N, 28, 28) images and int64 (N,) labels for each split."""
    arrays = _valid_arrays()
    _write_npz(root / PNEUMONIAMNIST_FILE, arrays)
    splits = load_pneumoniamnist(root, show_progress=False)
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
    path = make_synthetic_pneumoniamnist(tmp_path)
    assert path == tmp_path / SYNTHETIC_PNEUMONIAMNIST_FILE and "synthetic" in path.name
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
    first = make_synthetic_pneumoniamnist(tmp_path / "a-synthetic.npz", seed=3)
    mtime = first.stat().st_mtime_ns
    assert make_synthetic_pneumoniamnist(first, seed=3).stat().st_mtime_ns == mtime
    same = make_synthetic_pneumoniamnist(tmp_path / "b-synthetic.npz", seed=3)
    other = make_synthetic_pneumoniamnist(tmp_path / "c-synthetic.npz", seed=4)
    with np.load(first) as a, np.load(same) as b, np.load(other) as c:
        assert all(np.array_equal(a[key], b[key]) for key in a.files)
        assert not np.array_equal(a["train_images"], c["train_images"])


def test_synthetic_name_must_say_synthetic(tmp_path):
    """Writing the stand-in as pneumoniamnist.npz is refused, so it can never pass for real data."""
    with pytest.raises(ValueError, match="synthetic"):
        make_synthetic_pneumoniamnist(tmp_path / PNEUMONIAMNIST_FILE)
    with pytest.raises(ValueError, match="samples_per_split"):
        make_synthetic_pneumoniamnist(tmp_path, samples_per_split=(10, 1, 10))
    assert list(tmp_path.iterdir()) == []


def test_synthetic_is_learnable(tmp_path):
    """A linear model on the pixels beats always guessing "pneumonia" (75%) clearly."""
    from sklearn.linear_model import LogisticRegression

    path = make_synthetic_pneumoniamnist(tmp_path, samples_per_split=(400, 16, 200), seed=1)
    splits = medmnist._read_pneumoniamnist(path)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    model = LogisticRegression(max_iter=2000).fit(x_train.reshape(len(x_train), -1) / 255.0, y_train)
    assert model.score(x_test.reshape(len(x_test), -1) / 255.0, y_test) > 0.85


# --- pneumonia_data ----------------------------------------------------------------------


def _check_grading_splits(splits):
    for images, labels in splits.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        assert 2 <= len(labels) <= medmnist.PNEUMONIA_GRADING_SAMPLES_PER_SPLIT
        assert set(labels.tolist()) == {0, 1}


def test_grading_uses_stand_in_when_real_data_absent(root, no_network, capsys):
    """Grading mode without the file makes the stand-in in root, says so, and never downloads."""
    splits = pneumonia_data(GRADING)
    assert list(splits) == list(SPLITS)
    _check_grading_splits(splits)
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_PNEUMONIAMNIST_FILE]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "SYNTHETIC" in lines[0]
    assert no_network == []


def test_grading_uses_real_data_when_present(root, no_network, capsys):
    """Grading mode uses the real file when present, subsampled, and makes no stand-in."""
    arrays = _valid_arrays(sizes=(200, 12, 20))
    _write_npz(root / PNEUMONIAMNIST_FILE, arrays)
    splits = pneumonia_data(GRADING, root)
    _check_grading_splits(splits)
    assert len(splits["train"][1]) == medmnist.PNEUMONIA_GRADING_SAMPLES_PER_SPLIT
    assert len(splits["val"][1]) == 12  # already small: kept whole
    # The subsample is drawn from the real images (it keeps their order).
    real_rows = {row.tobytes() for row in arrays["train_images"]}
    assert all(image.tobytes() in real_rows for image in splits["train"][0])
    assert not (root / SYNTHETIC_PNEUMONIAMNIST_FILE).exists()
    out = capsys.readouterr().out
    assert "real PneumoniaMNIST" in out and "SYNTHETIC" not in out
    assert no_network == []


def test_grading_with_damaged_file_falls_back_and_says_why(root, no_network, capsys):
    """A damaged real file does not break grading: the stand-in is used and the line names the problem."""
    root.mkdir()
    (root / PNEUMONIAMNIST_FILE).write_bytes(b"damaged")
    _check_grading_splits(pneumonia_data(GRADING, root))
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "cannot be read" in out


def test_grading_never_downloads_even_if_allowed(root, no_network):
    """Even a grading config that claims downloads are allowed does not download."""
    permissive = RunConfig(mode="grading", allow_download=True, show_progress=False)
    _check_grading_splits(pneumonia_data(permissive, root))
    assert no_network == []


def test_lab_mode_offline_raises_instead_of_swapping(root, offline):
    """Lab mode without data or network raises DataUnavailableError; no stand-in appears."""
    with pytest.raises(DataUnavailableError) as caught:
        pneumonia_data(LAB, root)
    assert medmnist.PNEUMONIAMNIST_URL in str(caught.value)
    assert not (root / SYNTHETIC_PNEUMONIAMNIST_FILE).exists()


def test_lab_mode_ignores_a_stand_in(root, no_network):
    """A stand-in left in root by grading is not used in lab mode: it still raises."""
    make_synthetic_pneumoniamnist(root)
    with pytest.raises(DataUnavailableError):
        pneumonia_data(RunConfig(mode="lab", allow_download=False, show_progress=False), root)
    assert no_network == []


def test_lab_mode_returns_all_real_data(served, root):
    """Lab mode downloads when allowed and returns every image, not a subsample."""
    splits = pneumonia_data(LAB, root)
    assert [len(labels) for _, labels in splits.values()] == [60, 12, 20]


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
    splits = load_pneumoniamnist(allow_download=False, show_progress=False)
    assert {split: len(labels) for split, (_, labels) in splits.items()} == {"train": 4690, "val": 524, "test": 624}
    assert np.bincount(splits["test"][1]).tolist() == [234, 390]
    if md5sum(SHARED_COPY) != medmnist.PNEUMONIAMNIST_MD5:
        assert "valid" in capsys.readouterr().out  # the mirror is not byte-identical
    _check_grading_splits(pneumonia_data(GRADING))  # grading reads it too, without writing
    assert _folder_state(folder) == before
    assert no_network == []
