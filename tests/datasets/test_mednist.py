"""Tests for dlmed.datasets.mednist: safe extraction, the synthetic stand-in, notebook choices.

What every data module shares (download, checksum, cache, offline error, mirror, grading
mode) is tested in test_shared.py. No test touches the network: downloads read a small fake
archive through a ``file://`` URL, and ``urlopen``/requests are replaced wherever a test
must prove they are not called.
"""

import dataclasses
import hashlib
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlmed.config import RunConfig
from dlmed.datasets import DataUnavailableError, is_synthetic, mednist
from dlmed.datasets.mednist import CLASSES, FOLDER, SYNTHETIC_FOLDER, fetch, find, for_notebook, make_synthetic
from tests.datasets.fakes import extract_fake_mednist, fake_mednist_members, jpeg_bytes, write_fake_mednist_archive, write_tar

GRADING = RunConfig(mode="grading", images_per_class=8, allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)


# --- helpers and fixtures ----------------------------------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _point_remote_at(monkeypatch, archive: Path) -> None:
    """Make mednist.REMOTE name ``archive`` (a file:// address) with its checksum."""
    monkeypatch.setattr(mednist, "REMOTE", dataclasses.replace(mednist.REMOTE, url=archive.as_uri(),
                                                                checksum=f"md5:{_md5(archive)}"))


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """A small MedNIST-shaped archive; mednist.REMOTE points at it."""
    served = tmp_path / "served"
    served.mkdir()
    archive = write_fake_mednist_archive(served / "MedNIST.tar.gz")
    _point_remote_at(monkeypatch, archive)
    return archive


# --- fetch: archives here, safe extraction ----------------------------------------------


def test_fetch_extracts_archive_copied_by_hand(fake_archive, root, no_network):
    """A valid MedNIST.tar.gz in root is extracted without the network, even with downloads off."""
    root.mkdir()
    (root / "MedNIST.tar.gz").write_bytes(fake_archive.read_bytes())
    folder = fetch(root, allow_download=False, show_progress=False)
    assert find(root) == folder
    assert no_network == []


def test_fetch_replaces_damaged_archive_when_downloads_allowed(fake_archive, root, capsys):
    """An archive with a wrong MD5 is reported, deleted and downloaded again."""
    root.mkdir()
    (root / "MedNIST.tar.gz").write_bytes(b"not an archive")
    folder = fetch(root, show_progress=False)
    assert find(root) == folder
    assert _md5(root / "MedNIST.tar.gz") == mednist.REMOTE.digest
    assert "MD5" in capsys.readouterr().out


def test_fetch_keeps_damaged_archive_when_downloads_off(fake_archive, root, no_network):
    """With downloads off, a wrong-MD5 archive raises DataUnavailableError and is kept."""
    root.mkdir()
    damaged = root / "MedNIST.tar.gz"
    damaged.write_bytes(b"not an archive")
    with pytest.raises(DataUnavailableError) as caught:
        fetch(root, allow_download=False, show_progress=False)
    message = str(caught.value)
    assert hashlib.md5(b"not an archive").hexdigest() in message
    assert mednist.REMOTE.digest in message
    assert damaged.read_bytes() == b"not an archive"
    assert no_network == []


@pytest.mark.parametrize("use_data_filter", [True, False], ids=["data-filter", "own-check"])
@pytest.mark.parametrize(
    "bad_member",
    ["../evil.txt", "MedNIST/../../evil.txt", "/tmp/dlmed-test-evil.txt", "symlink"],
)
def test_extraction_refuses_path_traversal(tmp_path, root, monkeypatch, bad_member, use_data_filter):
    """Members that would land outside root (.., absolute, links) stop extraction; nothing escapes."""
    monkeypatch.setattr(mednist, "_TARFILE_HAS_DATA_FILTER", use_data_filter)
    root.mkdir()
    archive = root / "MedNIST.tar.gz"
    members = fake_mednist_members(1)
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        if bad_member == "symlink":
            link = tarfile.TarInfo("MedNIST/CXR/escape")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../../evil.txt"
            tar.addfile(link)
        else:
            info = tarfile.TarInfo(bad_member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    _point_remote_at(monkeypatch, archive)
    with pytest.raises(ValueError, match="Refusing to extract"):
        fetch(root, allow_download=False, show_progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/dlmed-test-evil.txt").exists()
    assert find(root) is None
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST.tar.gz"]  # no leftovers


def test_extraction_without_data_filter_still_works(fake_archive, root, monkeypatch):
    """On Pythons without tarfile's data filter, the own member check lets a good archive through."""
    monkeypatch.setattr(mednist, "_TARFILE_HAS_DATA_FILTER", False)
    assert find(root) is None
    folder = fetch(root, show_progress=False)
    assert find(root) == folder


def test_interrupted_extraction_never_looks_complete(fake_archive, root, monkeypatch):
    """If extraction fails half-way, no MedNIST folder (and no temporary folder) is left."""
    original = tarfile.TarFile.extractall

    def fail_after_some(self, path, members=None, **kwargs):
        some = list(members)[:5]
        original(self, path, members=some, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", fail_after_some)
    with pytest.raises(OSError, match="No space"):
        fetch(root, show_progress=False)
    assert find(root) is None
    assert not (root / FOLDER).exists()
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST.tar.gz"]


def test_incomplete_extracted_folder_is_replaced(fake_archive, root, capsys):
    """A MedNIST folder missing classes is not trusted: the archive is extracted over it."""
    (root / FOLDER / "CXR").mkdir(parents=True)
    (root / FOLDER / "CXR" / "000000.jpeg").write_bytes(jpeg_bytes(0))
    assert find(root) is None
    folder = fetch(root, show_progress=False)
    assert find(root) == folder
    assert "incomplete" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST", "MedNIST.tar.gz"]


def test_archive_without_mednist_layout_is_rejected(root, monkeypatch):
    """An archive with the right MD5 but no MedNIST/<class> folders gives a clear error."""
    root.mkdir()
    archive = write_tar(root / "MedNIST.tar.gz", [("other", None), ("other/a.jpeg", jpeg_bytes(1))])
    _point_remote_at(monkeypatch, archive)
    with pytest.raises(ValueError, match="not the MedNIST archive"):
        fetch(root, allow_download=False, show_progress=False)
    assert find(root) is None


def test_find_mednist_requires_every_class(root):
    """find_mednist is None unless all six class folders each hold a .jpeg."""
    folder = extract_fake_mednist(root)
    assert find(root) == folder
    for image in (folder / "Hand").iterdir():
        image.unlink()
    assert find(root) is None


# --- the synthetic stand-in --------------------------------------------------------------


def test_synthetic_layout(root):
    """Six class folders named as CLASSES, N grayscale JPEGs of image_size each, a README."""
    folder = make_synthetic(images_per_class=5, image_size=32)
    assert folder == root / SYNTHETIC_FOLDER
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(CLASSES)
    for name in CLASSES:
        files = sorted((folder / name).iterdir())
        assert [f.name for f in files] == [f"{i:06d}.jpeg" for i in range(5)]
        with Image.open(files[0]) as image:
            assert image.format == "JPEG"
            assert image.mode == "L"
            assert image.size == (32, 32)
    readme = (folder / "README.txt").read_text()
    assert "SYNTHETIC" in readme
    assert "not" in readme.lower() and "medical" in readme.lower()
    assert "dlmed" in readme
    assert is_synthetic(folder)
    # Nothing but the finished folder is left in root.
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]


def test_is_synthetic_false_for_real_layout(root, tmp_path):
    """A real-looking MedNIST folder and a missing folder are not synthetic."""
    assert not is_synthetic(extract_fake_mednist(root))
    assert not is_synthetic(tmp_path / "nowhere")


def _folder_bytes(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.jpeg"))}


def test_synthetic_is_deterministic(tmp_path):
    """The same seed gives byte-identical images; another seed gives different ones."""
    first = _folder_bytes(make_synthetic(tmp_path / "a", images_per_class=4, seed=3))
    again = _folder_bytes(make_synthetic(tmp_path / "b", images_per_class=4, seed=3))
    other = _folder_bytes(make_synthetic(tmp_path / "c", images_per_class=4, seed=4))
    assert len(first) == 24
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[key] != other[key] for key in first)


def test_synthetic_images_vary_within_a_class(root):
    """Images of one class differ (jitter and noise), so no two files are identical."""
    folder = make_synthetic(images_per_class=6)
    for name in CLASSES:
        contents = {p.read_bytes() for p in (folder / name).iterdir()}
        assert len(contents) == 6


def test_synthetic_is_reused(root, monkeypatch):
    """A second call with the same settings returns the same folder without regenerating it."""
    folder = make_synthetic(images_per_class=3)
    inode = folder.stat().st_ino
    sample = folder / "CXR" / "000000.jpeg"
    mtime = sample.stat().st_mtime_ns

    def must_not_draw(*args, **kwargs):
        raise AssertionError("the stand-in was generated again")

    monkeypatch.setattr(mednist, "_draw_class", must_not_draw)
    assert make_synthetic(images_per_class=3) == folder
    assert folder.stat().st_ino == inode
    assert sample.stat().st_mtime_ns == mtime


def test_synthetic_rebuilt_when_settings_differ_or_incomplete(root):
    """Other settings replace the old stand-in; a damaged one is rebuilt."""
    folder = make_synthetic(images_per_class=3)
    make_synthetic(images_per_class=5)
    assert all(len(list((folder / name).iterdir())) == 5 for name in CLASSES)
    (folder / "Hand" / "000004.jpeg").unlink()
    make_synthetic(images_per_class=5)
    assert len(list((folder / "Hand").iterdir())) == 5
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]  # old copies cleaned up


def test_synthetic_two_writers_at_once(root, monkeypatch):
    """Two makers racing for the rename both end up with the same, complete folder."""
    original = mednist._write_synthetic
    barrier = threading.Barrier(2, timeout=10)

    def write_then_wait(folder, settings):
        original(folder, settings)
        barrier.wait()  # both have finished their copy before either renames it

    monkeypatch.setattr(mednist, "_write_synthetic", write_then_wait)
    results, errors = [], []

    def make():
        try:
            results.append(make_synthetic(images_per_class=4))
        except Exception as error:  # reported below, so the test fails with the real cause
            errors.append(error)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [root / SYNTHETIC_FOLDER] * 2
    assert all(len(list((results[0] / name).iterdir())) == 4 for name in CLASSES)
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]


def test_synthetic_loser_of_rename_race_keeps_winners_folder(root, monkeypatch):
    """If another process finishes first with the same settings, its folder is kept, ours discarded."""
    original = mednist._write_synthetic
    winner = {}

    def write_while_another_process_wins(folder, settings):
        original(folder, settings)
        # The "other process" completes its stand-in while ours waits to be renamed.
        monkeypatch.setattr(mednist, "_write_synthetic", original)
        other = make_synthetic(images_per_class=settings["images_per_class"])
        winner["inode"] = other.stat().st_ino

    monkeypatch.setattr(mednist, "_write_synthetic", write_while_another_process_wins)
    folder = make_synthetic(images_per_class=2)
    assert folder.stat().st_ino == winner["inode"]  # not replaced by our identical copy
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]  # our copy was removed


def test_synthetic_rejects_bad_settings(root):
    """Nonsense sizes fail with a message naming the setting."""
    with pytest.raises(ValueError, match="images_per_class"):
        make_synthetic(images_per_class=0)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic(image_size=4)
    assert not root.exists()


def test_imagefolder_reads_the_stand_in(root):
    """torchvision's ImageFolder sees the six classes (sorted) and every image."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(make_synthetic(images_per_class=3))
    assert dataset.classes == sorted(CLASSES)
    assert len(dataset) == 18
    assert sorted(set(dataset.targets)) == list(range(6))


def test_small_cnn_learns_the_stand_in(tmp_path):
    """The classes are learnable: a tiny CNN beats 95% on held-out stand-in images in seconds."""
    folder = make_synthetic(tmp_path, images_per_class=90, image_size=64, seed=1)
    images, labels = [], []
    for label, name in enumerate(sorted(CLASSES)):
        for path in sorted((folder / name).iterdir()):
            images.append(np.asarray(Image.open(path), dtype=np.float32) / 255.0)
            labels.append(label)
    x = torch.from_numpy(np.stack(images))[:, None]
    y = torch.tensor(labels)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=generator)
    train, test = order[:360], order[360:]  # 360 to train on, 180 held out
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 6),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster and repeatable
    try:
        for _ in range(5):
            for batch in train[torch.randperm(len(train), generator=generator)].split(32):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimiser.step()
        with torch.no_grad():
            accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert accuracy > 0.95


def test_classes_are_not_separable_by_one_pixel(tmp_path):
    """No single pixel's brightness alone separates all six classes (the jitter matters)."""
    folder = make_synthetic(tmp_path, images_per_class=60, image_size=32, seed=2)
    per_class = []
    for name in CLASSES:
        stack = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in sorted((folder / name).iterdir())])
        per_class.append(stack.reshape(len(stack), -1))
    # For a pixel to separate the classes on its own, the classes' value ranges at that
    # pixel would have to be disjoint; count pixels where every pair of ranges overlaps less.
    lows = np.stack([c.min(0) for c in per_class])
    highs = np.stack([c.max(0) for c in per_class])
    order = np.argsort(lows, axis=0)
    sorted_lows = np.take_along_axis(lows, order, 0)
    sorted_highs = np.take_along_axis(highs, order, 0)
    disjoint = (sorted_highs[:-1] < sorted_lows[1:]).all(axis=0)
    assert not disjoint.any()


# --- for_notebook -----------------------------------------------------------------------


def test_lab_mode_honours_allow_download(root, no_network):
    """Lab mode with allow_download=False and no data raises without touching the network."""
    with pytest.raises(DataUnavailableError):
        for_notebook(RunConfig(mode="lab", allow_download=False, show_progress=False), root)
    assert no_network == []


def test_lab_mode_fetches_real_data(fake_archive, root):
    """Lab mode downloads and extracts MedNIST when it may."""
    assert for_notebook(LAB, root) == find(root)


def test_lab_mode_synthetic_on_request(root, no_network, monkeypatch):
    """synthetic=True in lab mode gives the offline-practice stand-in, even if MedNIST is there."""
    monkeypatch.setattr(mednist, "SYNTHETIC_LAB_IMAGES_PER_CLASS", 7)  # the real size is slow to write here
    extract_fake_mednist(root)
    folder = for_notebook(LAB, root, synthetic=True)
    assert folder == root / SYNTHETIC_FOLDER and is_synthetic(folder)
    per_class = len(list((folder / "HeadCT").iterdir()))
    assert per_class == mednist.SYNTHETIC_LAB_IMAGES_PER_CLASS
    assert no_network == []


