"""Tests for dlmed.data: MedNIST download, checksum, cache, safe extraction, synthetic stand-in.

No test touches the network: downloads read a small fake archive through a ``file://`` URL,
and ``urllib.request.urlopen`` is replaced wherever a test must prove it is not called.
"""

import hashlib
import io
import os
import tarfile
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import assert_import_has_no_side_effects, assert_public_api_documented
from dlmed import data
from dlmed.config import RunConfig
from dlmed.data import (
    MEDNIST_CLASSES,
    MEDNIST_FOLDER,
    SYNTHETIC_FOLDER,
    DataUnavailableError,
    data_dir,
    download_url,
    fetch_mednist,
    find_mednist,
    is_synthetic,
    make_synthetic_mednist,
    md5sum,
    mednist_folder,
    subset_per_class,
)

GRADING = RunConfig(mode="grading", images_per_class=8, allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)


# --- helpers and fixtures ----------------------------------------------------------------


def _jpeg_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), color=value).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_tar(path: Path, members) -> Path:
    """Write a .tar.gz holding ``members``: (name, bytes) pairs for files, (name, None) for folders."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
    return path


def _fake_mednist_members(per_class=2):
    members = [(".", None), (MEDNIST_FOLDER, None)]  # "tar -C dir ." archives start with "."
    for index, name in enumerate(MEDNIST_CLASSES):
        members.append((f"{MEDNIST_FOLDER}/{name}", None))
        for number in range(per_class):
            members.append((f"{MEDNIST_FOLDER}/{name}/{number:06d}.jpeg", _jpeg_bytes(40 * index)))
    return members


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """A small MedNIST-shaped archive; MEDNIST_URL and MEDNIST_MD5 point at it."""
    served = tmp_path / "served"
    served.mkdir()
    archive = _write_tar(served / "MedNIST.tar.gz", _fake_mednist_members())
    monkeypatch.setattr(data, "MEDNIST_URL", archive.as_uri())
    monkeypatch.setattr(data, "MEDNIST_MD5", md5sum(archive))
    return archive


def _extract_fake_mednist(root: Path, per_class=2) -> Path:
    archive = _write_tar(root.parent / "real.tar.gz", _fake_mednist_members(per_class))
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / MEDNIST_FOLDER


# --- module hygiene ----------------------------------------------------------------------


def test_import_has_no_side_effects(tmp_path, monkeypatch):
    """Running dlmed/data.py's top-level code creates no folder (neither DLMED_DATA nor ~/dlmed-data)."""
    assert_import_has_no_side_effects(data, "make_synthetic_mednist", tmp_path, monkeypatch)


def test_public_functions_have_docstrings():
    """Every public function and class of dlmed.data is documented."""
    assert_public_api_documented(data, minimum=10)


# --- data_dir and md5sum -----------------------------------------------------------------


def test_data_dir_from_environment(monkeypatch, tmp_path):
    """DLMED_DATA wins, with ~ expanded, and the folder is not created."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DLMED_DATA", "~/somewhere/data")
    assert data_dir() == tmp_path / "somewhere" / "data"
    assert not (tmp_path / "somewhere").exists()


def test_data_dir_default(monkeypatch, tmp_path):
    """Without DLMED_DATA the folder is ~/dlmed-data, not created."""
    monkeypatch.delenv("DLMED_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dir() == tmp_path / "dlmed-data"
    assert not (tmp_path / "dlmed-data").exists()


def test_md5sum_matches_hashlib(tmp_path):
    """md5sum reads in chunks but gives hashlib's answer."""
    content = os.urandom(3 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(content)
    assert md5sum(path, chunk_size=1000) == hashlib.md5(content).hexdigest()


# --- download_url ------------------------------------------------------------------------


def test_download_url_writes_verified_file(fake_archive, tmp_path):
    """A download with the right MD5 lands at the destination, with no .part left over."""
    destination = tmp_path / "out" / "copy.tar.gz"
    result = download_url(fake_archive.as_uri(), destination, md5sum(fake_archive), show_progress=False)
    assert result == destination
    assert destination.read_bytes() == fake_archive.read_bytes()
    assert not (tmp_path / "out" / "copy.tar.gz.part").exists()


def test_download_url_checksum_mismatch_deletes_file(fake_archive, tmp_path):
    """A wrong MD5 deletes the download and raises ValueError naming file, expected and got MD5."""
    destination = tmp_path / "copy.tar.gz"
    wrong = "0" * 32
    with pytest.raises(ValueError) as caught:
        download_url(fake_archive.as_uri(), destination, wrong, show_progress=False)
    message = str(caught.value)
    assert wrong in message
    assert md5sum(fake_archive) in message
    assert str(destination) in message
    assert "again" in message  # says what to do
    assert not destination.exists()
    assert not (tmp_path / "copy.tar.gz.part").exists()


def test_download_url_network_error(offline, tmp_path):
    """A network failure becomes DataUnavailableError naming the URL and leaves no file."""
    url = "https://example.invalid/MedNIST.tar.gz"
    with pytest.raises(DataUnavailableError) as caught:
        download_url(url, tmp_path / "x.tar.gz", "a" * 32, show_progress=False)
    assert url in str(caught.value)
    assert isinstance(caught.value.__cause__, urllib.error.URLError)
    assert list(tmp_path.iterdir()) == []


# --- fetch_mednist -----------------------------------------------------------------------


def test_fetch_downloads_and_extracts(fake_archive, root):
    """With nothing present, fetch_mednist downloads, extracts and returns root/MedNIST."""
    folder = fetch_mednist(show_progress=False)  # root from DLMED_DATA
    assert folder == root / MEDNIST_FOLDER
    assert find_mednist(root) == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(MEDNIST_CLASSES)
    assert len(list((folder / "CXR").glob("*.jpeg"))) == 2
    # Only the archive and the folder remain: no temporary extraction folders.
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST", "MedNIST.tar.gz"]


def test_fetch_reuses_extracted_folder_without_network(root, no_network):
    """An extracted folder is returned as it is; urlopen is never called."""
    existing = _extract_fake_mednist(root)
    assert fetch_mednist(root, show_progress=False) == existing
    assert fetch_mednist(root, allow_download=False, show_progress=False) == existing
    assert no_network == []


def test_fetch_extracts_archive_copied_by_hand(fake_archive, root, no_network):
    """A valid MedNIST.tar.gz in root is extracted without the network, even with downloads off."""
    root.mkdir()
    (root / "MedNIST.tar.gz").write_bytes(fake_archive.read_bytes())
    folder = fetch_mednist(root, allow_download=False, show_progress=False)
    assert find_mednist(root) == folder
    assert no_network == []


def test_fetch_replaces_damaged_archive_when_downloads_allowed(fake_archive, root, capsys):
    """An archive with a wrong MD5 is reported, deleted and downloaded again."""
    root.mkdir()
    (root / "MedNIST.tar.gz").write_bytes(b"not an archive")
    folder = fetch_mednist(root, show_progress=False)
    assert find_mednist(root) == folder
    assert md5sum(root / "MedNIST.tar.gz") == data.MEDNIST_MD5
    assert "MD5" in capsys.readouterr().out


def test_fetch_keeps_damaged_archive_when_downloads_off(fake_archive, root, no_network):
    """With downloads off, a wrong-MD5 archive raises DataUnavailableError and is kept."""
    root.mkdir()
    damaged = root / "MedNIST.tar.gz"
    damaged.write_bytes(b"not an archive")
    with pytest.raises(DataUnavailableError) as caught:
        fetch_mednist(root, allow_download=False, show_progress=False)
    message = str(caught.value)
    assert hashlib.md5(b"not an archive").hexdigest() in message
    assert data.MEDNIST_MD5 in message
    assert damaged.read_bytes() == b"not an archive"
    assert no_network == []


def test_fetch_offline_error_explains_what_to_do(root, offline):
    """Offline, the error names the URL, the MD5, the folder, DLMED_DATA and the stand-in."""
    with pytest.raises(DataUnavailableError) as caught:
        fetch_mednist(root, show_progress=False)
    message = str(caught.value)
    assert data.MEDNIST_URL in message
    assert data.MEDNIST_MD5 in message
    assert str(root) in message
    assert "DLMED_DATA" in message
    assert "make_synthetic_mednist" in message
    assert find_mednist(root) is None
    assert not (root / "MedNIST.tar.gz").exists()
    assert not (root / "MedNIST.tar.gz.part").exists()


def test_fetch_without_download_and_without_data_raises(root, no_network):
    """allow_download=False with nothing present raises and creates nothing."""
    with pytest.raises(DataUnavailableError) as caught:
        fetch_mednist(root, allow_download=False, show_progress=False)
    assert str(root) in str(caught.value)
    assert not root.exists()
    assert no_network == []


@pytest.mark.parametrize("use_data_filter", [True, False], ids=["data-filter", "own-check"])
@pytest.mark.parametrize(
    "bad_member",
    ["../evil.txt", "MedNIST/../../evil.txt", "/tmp/dlmed-test-evil.txt", "symlink"],
)
def test_extraction_refuses_path_traversal(tmp_path, root, monkeypatch, bad_member, use_data_filter):
    """Members that would land outside root (.., absolute, links) stop extraction; nothing escapes."""
    monkeypatch.setattr(data, "_TARFILE_HAS_DATA_FILTER", use_data_filter)
    root.mkdir()
    archive = root / "MedNIST.tar.gz"
    members = _fake_mednist_members(1)
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
    monkeypatch.setattr(data, "MEDNIST_MD5", md5sum(archive))
    with pytest.raises(ValueError, match="Refusing to extract"):
        fetch_mednist(root, allow_download=False, show_progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/dlmed-test-evil.txt").exists()
    assert find_mednist(root) is None
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST.tar.gz"]  # no leftovers


def test_extraction_without_data_filter_still_works(fake_archive, root, monkeypatch):
    """On Pythons without tarfile's data filter, the own member check lets a good archive through."""
    monkeypatch.setattr(data, "_TARFILE_HAS_DATA_FILTER", False)
    assert find_mednist(root) is None
    folder = fetch_mednist(root, show_progress=False)
    assert find_mednist(root) == folder


def test_interrupted_extraction_never_looks_complete(fake_archive, root, monkeypatch):
    """If extraction fails half-way, no MedNIST folder (and no temporary folder) is left."""
    original = tarfile.TarFile.extractall

    def fail_after_some(self, path, members=None, **kwargs):
        some = list(members)[:5]
        original(self, path, members=some, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", fail_after_some)
    with pytest.raises(OSError, match="No space"):
        fetch_mednist(root, show_progress=False)
    assert find_mednist(root) is None
    assert not (root / MEDNIST_FOLDER).exists()
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST.tar.gz"]


def test_incomplete_extracted_folder_is_replaced(fake_archive, root, capsys):
    """A MedNIST folder missing classes is not trusted: the archive is extracted over it."""
    (root / MEDNIST_FOLDER / "CXR").mkdir(parents=True)
    (root / MEDNIST_FOLDER / "CXR" / "000000.jpeg").write_bytes(_jpeg_bytes(0))
    assert find_mednist(root) is None
    folder = fetch_mednist(root, show_progress=False)
    assert find_mednist(root) == folder
    assert "incomplete" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["MedNIST", "MedNIST.tar.gz"]


def test_archive_without_mednist_layout_is_rejected(root, monkeypatch):
    """An archive with the right MD5 but no MedNIST/<class> folders gives a clear error."""
    root.mkdir()
    archive = _write_tar(root / "MedNIST.tar.gz", [("other", None), ("other/a.jpeg", _jpeg_bytes(1))])
    monkeypatch.setattr(data, "MEDNIST_MD5", md5sum(archive))
    with pytest.raises(ValueError, match="not the MedNIST archive"):
        fetch_mednist(root, allow_download=False, show_progress=False)
    assert find_mednist(root) is None


def test_find_mednist_requires_every_class(root):
    """find_mednist is None unless all six class folders each hold a .jpeg."""
    folder = _extract_fake_mednist(root)
    assert find_mednist(root) == folder
    for image in (folder / "Hand").iterdir():
        image.unlink()
    assert find_mednist(root) is None


# --- the synthetic stand-in --------------------------------------------------------------


def test_synthetic_layout(root):
    """Six class folders named as MEDNIST_CLASSES, N grayscale JPEGs of image_size each, a README."""
    folder = make_synthetic_mednist(images_per_class=5, image_size=32)
    assert folder == root / SYNTHETIC_FOLDER
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(MEDNIST_CLASSES)
    for name in MEDNIST_CLASSES:
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
    assert not is_synthetic(_extract_fake_mednist(root))
    assert not is_synthetic(tmp_path / "nowhere")


def _folder_bytes(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.jpeg"))}


def test_synthetic_is_deterministic(tmp_path):
    """The same seed gives byte-identical images; another seed gives different ones."""
    first = _folder_bytes(make_synthetic_mednist(tmp_path / "a", images_per_class=4, seed=3))
    again = _folder_bytes(make_synthetic_mednist(tmp_path / "b", images_per_class=4, seed=3))
    other = _folder_bytes(make_synthetic_mednist(tmp_path / "c", images_per_class=4, seed=4))
    assert len(first) == 24
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[key] != other[key] for key in first)


def test_synthetic_images_vary_within_a_class(root):
    """Images of one class differ (jitter and noise), so no two files are identical."""
    folder = make_synthetic_mednist(images_per_class=6)
    for name in MEDNIST_CLASSES:
        contents = {p.read_bytes() for p in (folder / name).iterdir()}
        assert len(contents) == 6


def test_synthetic_is_reused(root, monkeypatch):
    """A second call with the same settings returns the same folder without regenerating it."""
    folder = make_synthetic_mednist(images_per_class=3)
    inode = folder.stat().st_ino
    sample = folder / "CXR" / "000000.jpeg"
    mtime = sample.stat().st_mtime_ns

    def must_not_draw(*args, **kwargs):
        raise AssertionError("the stand-in was generated again")

    monkeypatch.setattr(data, "_draw_class", must_not_draw)
    assert make_synthetic_mednist(images_per_class=3) == folder
    assert folder.stat().st_ino == inode
    assert sample.stat().st_mtime_ns == mtime


def test_synthetic_rebuilt_when_settings_differ_or_incomplete(root):
    """Other settings replace the old stand-in; a damaged one is rebuilt."""
    folder = make_synthetic_mednist(images_per_class=3)
    make_synthetic_mednist(images_per_class=5)
    assert all(len(list((folder / name).iterdir())) == 5 for name in MEDNIST_CLASSES)
    (folder / "Hand" / "000004.jpeg").unlink()
    make_synthetic_mednist(images_per_class=5)
    assert len(list((folder / "Hand").iterdir())) == 5
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]  # old copies cleaned up


def test_synthetic_two_writers_at_once(root, monkeypatch):
    """Two makers racing for the rename both end up with the same, complete folder."""
    original = data._write_synthetic
    barrier = threading.Barrier(2, timeout=10)

    def write_then_wait(folder, settings):
        original(folder, settings)
        barrier.wait()  # both have finished their copy before either renames it

    monkeypatch.setattr(data, "_write_synthetic", write_then_wait)
    results, errors = [], []

    def make():
        try:
            results.append(make_synthetic_mednist(images_per_class=4))
        except Exception as error:  # reported below, so the test fails with the real cause
            errors.append(error)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [root / SYNTHETIC_FOLDER] * 2
    assert all(len(list((results[0] / name).iterdir())) == 4 for name in MEDNIST_CLASSES)
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]


def test_synthetic_loser_of_rename_race_keeps_winners_folder(root, monkeypatch):
    """If another process finishes first with the same settings, its folder is kept, ours discarded."""
    original = data._write_synthetic
    winner = {}

    def write_while_another_process_wins(folder, settings):
        original(folder, settings)
        # The "other process" completes its stand-in while ours waits to be renamed.
        monkeypatch.setattr(data, "_write_synthetic", original)
        other = make_synthetic_mednist(images_per_class=settings["images_per_class"])
        winner["inode"] = other.stat().st_ino

    monkeypatch.setattr(data, "_write_synthetic", write_while_another_process_wins)
    folder = make_synthetic_mednist(images_per_class=2)
    assert folder.stat().st_ino == winner["inode"]  # not replaced by our identical copy
    assert [p.name for p in root.iterdir()] == [SYNTHETIC_FOLDER]  # our copy was removed


def test_synthetic_rejects_bad_settings(root):
    """Nonsense sizes fail with a message naming the setting."""
    with pytest.raises(ValueError, match="images_per_class"):
        make_synthetic_mednist(images_per_class=0)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_mednist(image_size=4)
    assert not root.exists()


def test_imagefolder_reads_the_stand_in(root):
    """torchvision's ImageFolder sees the six classes (sorted) and every image."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(make_synthetic_mednist(images_per_class=3))
    assert dataset.classes == sorted(MEDNIST_CLASSES)
    assert len(dataset) == 18
    assert sorted(set(dataset.targets)) == list(range(6))


def test_small_cnn_learns_the_stand_in(tmp_path):
    """The classes are learnable: a tiny CNN beats 95% on held-out stand-in images in seconds."""
    folder = make_synthetic_mednist(tmp_path, images_per_class=90, image_size=64, seed=1)
    images, labels = [], []
    for label, name in enumerate(sorted(MEDNIST_CLASSES)):
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
    folder = make_synthetic_mednist(tmp_path, images_per_class=60, image_size=32, seed=2)
    per_class = []
    for name in MEDNIST_CLASSES:
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


# --- mednist_folder ----------------------------------------------------------------------


def test_grading_uses_stand_in_when_real_data_absent(root, no_network, capsys):
    """Grading mode without MedNIST uses the synthetic stand-in, never the network, and says so."""
    folder = mednist_folder(GRADING)
    assert folder == root / SYNTHETIC_FOLDER
    assert is_synthetic(folder)
    counts = {len(list((folder / name).iterdir())) for name in MEDNIST_CLASSES}
    assert counts == {max(GRADING.images_per_class, data.SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS)}
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "SYNTHETIC" in lines[0]
    assert no_network == []


def test_grading_uses_real_data_when_present(root, no_network, capsys):
    """Grading mode uses an extracted MedNIST when there is one, and makes no stand-in."""
    real = _extract_fake_mednist(root)
    assert mednist_folder(GRADING, root) == real
    assert not (root / SYNTHETIC_FOLDER).exists()
    out = capsys.readouterr().out
    assert "real MedNIST" in out and "SYNTHETIC" not in out
    assert no_network == []


def test_grading_never_downloads_even_if_allowed(root, no_network):
    """Even a grading config that claims downloads are allowed does not download."""
    permissive = RunConfig(mode="grading", images_per_class=8, allow_download=True, show_progress=False)
    assert is_synthetic(mednist_folder(permissive, root))
    assert no_network == []


def test_lab_mode_offline_raises_instead_of_swapping(root, offline):
    """Lab mode without data or network raises DataUnavailableError; no stand-in appears."""
    with pytest.raises(DataUnavailableError) as caught:
        mednist_folder(LAB, root)
    assert data.MEDNIST_URL in str(caught.value)
    assert not (root / SYNTHETIC_FOLDER).exists()


def test_lab_mode_honours_allow_download(root, no_network):
    """Lab mode with allow_download=False and no data raises without touching the network."""
    with pytest.raises(DataUnavailableError):
        mednist_folder(RunConfig(mode="lab", allow_download=False, show_progress=False), root)
    assert no_network == []


def test_lab_mode_fetches_real_data(fake_archive, root):
    """Lab mode downloads and extracts MedNIST when it may."""
    assert mednist_folder(LAB, root) == find_mednist(root)


def test_lab_mode_synthetic_on_request(root, no_network, monkeypatch):
    """synthetic=True in lab mode gives the offline-practice stand-in, even if MedNIST is there."""
    monkeypatch.setattr(data, "SYNTHETIC_LAB_IMAGES_PER_CLASS", 7)  # the real size is slow to write here
    _extract_fake_mednist(root)
    folder = mednist_folder(LAB, root, synthetic=True)
    assert folder == root / SYNTHETIC_FOLDER and is_synthetic(folder)
    per_class = len(list((folder / "HeadCT").iterdir()))
    assert per_class == data.SYNTHETIC_LAB_IMAGES_PER_CLASS
    assert no_network == []


# --- subset_per_class --------------------------------------------------------------------


class _Labelled(torch.utils.data.Dataset):
    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return index, self.targets[index]


def test_subset_per_class_counts_and_order():
    """At most N per class (all of a smaller class), sorted indices, repeatable per seed."""
    dataset = _Labelled([0] * 10 + [1] * 3 + [2] * 7)
    subset = subset_per_class(dataset, 5, seed=0)
    assert isinstance(subset, torch.utils.data.Subset)
    labels = [dataset.targets[i] for i in subset.indices]
    assert [labels.count(c) for c in range(3)] == [5, 3, 5]
    assert list(subset.indices) == sorted(subset.indices)
    assert list(subset_per_class(dataset, 5, seed=0).indices) == list(subset.indices)
    seeds = {tuple(subset_per_class(dataset, 5, seed=s).indices) for s in range(5)}
    assert len(seeds) > 1  # the seed changes the choice


def test_subset_per_class_none_returns_dataset():
    """images_per_class=None keeps the whole dataset (the same object)."""
    dataset = _Labelled([0, 1, 1])
    assert subset_per_class(dataset, None) is dataset


def test_subset_per_class_needs_targets():
    """A dataset without .targets gets a TypeError saying what is needed."""
    with pytest.raises(TypeError, match="targets"):
        subset_per_class([1, 2, 3], 2)


def test_stand_ins_are_readable_by_other_users(tmp_path):
    """Stand-ins are staged in private temporary files but end up with the usual permissions (umask 022 here).

    Other users must read them: a JupyterHub's shared data folder, the class grader's sandboxed kernels.
    """
    import stat

    from dlmed import medmnist

    previous = os.umask(0o022)
    try:
        folder = data.make_synthetic_mednist(tmp_path, images_per_class=2)
        npz = medmnist.make_synthetic_pneumoniamnist(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755, f"{folder}: mode {oct(folder.stat().st_mode)}"
    assert stat.S_IMODE(npz.stat().st_mode) == 0o644, f"{npz}: mode {oct(npz.stat().st_mode)}"
