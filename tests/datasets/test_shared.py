"""What every data module does the same way, tested once for each data set.

Every module in ``dlmed/datasets/`` has ``find``, ``fetch``, ``make_synthetic`` and
``for_notebook`` and shares one download mechanism (``dlmed/datasets/_download.py``): a
wrong checksum, reuse of what is there, the one short offline error, a read-only mirror,
downloads switched off, grading mode that never downloads, and stand-ins with the real
layout. A new data set adds one :class:`Case` to :data:`CASES` (and to
:data:`DOWNLOADABLE` if it can be downloaded). A data set of several files (CiteSeer's
eight, MoleculeNet's three tables) lists them in ``REMOTES`` ({key: Remote}) instead of one
``REMOTE``; the download tests then check every file.

No test touches the network: the published file is served from a ``file://`` address, and
the ``no_network`` and ``offline`` fixtures (tests/conftest.py) replace urlopen and requests.
"""

import dataclasses
import hashlib
import os
import stat
import traceback
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch

from dlmed import datasets
from dlmed.config import RunConfig
from dlmed.datasets import (DataUnavailableError, chembl, citeseer, data_dir, dsb2018, gad, is_synthetic, mednist,
                            moleculenet, mura, pneumoniamnist, splice, subset_per_class)
from tests.datasets.fakes import (
    FAKE_DSB2018_IDS,
    FAKE_GAD_TEST,
    FAKE_GAD_TRAIN,
    FAKE_SPLICE_ROWS,
    extract_fake_mednist,
    place_fake_chembl,
    place_real_looking_citeseer,
    place_real_looking_gad,
    place_real_looking_moleculenet,
    place_real_looking_mura,
    place_real_looking_splice,
    write_fake_chembl_csv,
    write_fake_citeseer_files,
    write_fake_dsb2018_96_zip,
    write_fake_gad_files,
    write_fake_mednist_archive,
    write_fake_moleculenet_files,
    write_fake_splice_file,
    write_fake_stage1_train,
    write_pneumonia_npz,
)
from tests.helpers import assert_import_has_no_side_effects, assert_public_api_documented

GRADING = RunConfig(mode="grading", images_per_class=8, allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)


# --- what each data set looks like ---------------------------------------------------------


def _check_mednist(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(mednist.CLASSES)
    assert len(list((folder / "CXR").glob("*.jpeg"))) == 2


def _check_pneumonia(path: Path) -> None:
    splits = pneumoniamnist.load(path.parent, allow_download=False, show_progress=False)
    assert list(splits) == list(pneumoniamnist.SPLITS)


def _check_mura(folder: Path) -> None:
    assert mura.find(folder.parent) == folder
    assert len(mura.image_table(folder.parent, "train")) > 0


def check_pneumonia_grading_splits(splits: dict) -> None:
    """What grading mode hands a notebook: every split small, both classes in each."""
    assert list(splits) == list(pneumoniamnist.SPLITS)
    for images, labels in splits.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        assert 2 <= len(labels) <= pneumoniamnist.GRADING_SAMPLES_PER_SPLIT
        assert set(labels.tolist()) == {0, 1}


def _check_dsb2018(path: Path) -> None:
    data = dsb2018.load(path.parent, allow_download=False, show_progress=False)
    assert data["ids"] == sorted(FAKE_DSB2018_IDS) and data["synthetic"] is False
    assert data["images"].shape == (3, 96, 96, 3) and data["masks"].shape == (3, 96, 96)
    assert set(np.unique(data["masks"]).tolist()) == {0, 1}


def _dsb2018_grading_stand_in(data: dict, root: Path) -> None:
    assert data["synthetic"] is True and is_synthetic(root / dsb2018.SYNTHETIC_FOLDER)
    assert len(data["ids"]) == dsb2018.GRADING_IMAGES == len(data["images"]) == len(data["masks"])
    assert data["images"].dtype == np.uint8 and data["images"].shape[1:] == (96, 96, 3)
    assert 0 < data["masks"].mean() < 0.5  # nuclei and background in the stand-in


def _dsb2018_grading_real(data: dict, real: Path) -> None:
    assert data["synthetic"] is False and data["ids"] == sorted(FAKE_DSB2018_IDS)


def _mednist_grading_stand_in(folder: Path, root: Path) -> None:
    assert folder == root / mednist.SYNTHETIC_FOLDER and is_synthetic(folder)
    counts = {len(list((folder / name).iterdir())) for name in mednist.CLASSES}
    assert counts == {max(GRADING.images_per_class, mednist.SYNTHETIC_GRADING_MIN_IMAGES_PER_CLASS)}


def _pneumonia_grading_stand_in(splits: dict, root: Path) -> None:
    check_pneumonia_grading_splits(splits)
    assert [p.name for p in root.iterdir()] == [pneumoniamnist.SYNTHETIC_FILE]


def _mura_grading_stand_in(folder: Path, root: Path) -> None:
    assert folder == root / mura.SYNTHETIC_ROOT and is_synthetic(folder / mura.FOLDER)
    assert mura.find(folder) == folder / mura.FOLDER  # readable by image_table


def _check_chembl(path: Path) -> None:
    table = chembl.read(path)
    assert list(table.columns) == ["cid", "smiles", "label"] and len(table) == 12
    assert table["label"].sum() == 2


def _chembl_grading_stand_in(table, root: Path) -> None:
    assert table.attrs["synthetic"] is True and table.attrs["path"] == str(root / chembl.SYNTHETIC_FOLDER / chembl.SYNTHETIC_FILE)
    assert is_synthetic(root / chembl.SYNTHETIC_FOLDER)
    assert len(table) == len(chembl.STAND_IN_MOLECULES) and set(table["label"]) == {0, 1}


def _chembl_grading_real(table, real: Path) -> None:
    assert table.attrs["synthetic"] is False and table.attrs["path"] == str(real)
    assert list(table.columns) == ["cid", "smiles", "label"]
    assert table["label"].sum() == 2 and len(table) == 12  # the fake file is below the grading limits


def _check_citeseer(folder: Path) -> None:
    assert citeseer.find(folder.parent) == folder
    _check_citeseer_graph(citeseer.load(folder.parent, allow_download=False, show_progress=False))


def _check_citeseer_graph(graph) -> None:
    """A Planetoid graph: features, labels of six classes, undirected edges, the three masks."""
    assert graph.x.dtype == torch.float32 and graph.x.shape[0] == graph.num_nodes
    assert graph.y.dtype == torch.int64 and set(graph.y.tolist()) <= set(range(len(citeseer.CLASSES)))
    assert graph.edge_index.shape[0] == 2 and graph.is_undirected() and not graph.has_self_loops()
    assert int(graph.val_mask.sum()) == citeseer.NUM_VAL
    assert not (graph.train_mask & graph.test_mask).any() and not (graph.val_mask & graph.test_mask).any()


def _citeseer_grading_stand_in(graph, root: Path) -> None:
    _check_citeseer_graph(graph)
    assert [p.name for p in root.iterdir()] == [citeseer.SYNTHETIC_FOLDER]
    assert is_synthetic(root / citeseer.SYNTHETIC_FOLDER)


def _check_moleculenet(paths: dict) -> None:
    tables = moleculenet.load(next(iter(paths.values())).parent, allow_download=False, show_progress=False)
    assert list(tables) == list(moleculenet.TABLES)
    assert set(moleculenet.TOX21_TASKS) <= set(tables["tox21"].columns)


def _check_moleculenet_grading(tables: dict) -> None:
    assert list(tables) == list(moleculenet.TABLES)
    for frame in tables.values():
        assert 8 <= len(frame) <= moleculenet.GRADING_MOLECULES
        assert frame["smiles"].map(lambda s: isinstance(s, str) and s == s.strip()).all()
    assert tables["esol"][moleculenet.ESOL_TARGET].notna().all()


def _moleculenet_grading_stand_in(tables: dict, root: Path) -> None:
    _check_moleculenet_grading(tables)
    assert [p.name for p in root.iterdir()] == [moleculenet.SYNTHETIC_FOLDER]


def _check_gad(folder: Path) -> None:
    tables = gad.load(folder.parent.parent, allow_download=False, show_progress=False)
    assert list(tables) == ["train", "test"]
    assert tables["train"]["label"].tolist() == [label for _, label in FAKE_GAD_TRAIN]
    assert tables["test"]["sentence"].tolist() == [s for s, _ in FAKE_GAD_TEST]


def _gad_grading(tables: dict, synthetic: bool) -> None:
    assert list(tables) == ["train", "test"]
    for part, table in tables.items():
        assert list(table.columns) == ["sentence", "label"] and table.attrs["synthetic"] is synthetic
        assert 2 <= len(table) <= 2 * gad.GRADING_PER_LABEL[part] and set(table["label"]) == {0, 1}
        assert table["sentence"].str.contains(gad.GENE, regex=False).all()


def _gad_grading_stand_in(tables: dict, root: Path) -> None:
    _gad_grading(tables, synthetic=True)
    assert [p.name for p in root.iterdir()] == [gad.SYNTHETIC_FOLDER] and is_synthetic(root / gad.SYNTHETIC_FOLDER)


def _check_splice(path: Path) -> None:
    table = splice.load(path.parent, allow_download=False, show_progress=False)
    assert list(table.columns) == ["label", "name", "sequence"]
    assert table["sequence"].tolist() == [seq for _, _, seq in FAKE_SPLICE_ROWS]


def _splice_grading(table, synthetic: bool) -> None:
    assert list(table.columns) == ["label", "name", "sequence"] and table.attrs["synthetic"] is synthetic
    assert set(table["label"]) == set(splice.CLASSES) and (table["sequence"].str.len() == splice.LENGTH).all()
    assert len(table) <= 3 * splice.GRADING_PER_CLASS + 3


def _splice_grading_stand_in(table, root: Path) -> None:
    _splice_grading(table, synthetic=True)
    assert [p.name for p in root.iterdir()] == [splice.SYNTHETIC_FOLDER]


@dataclasses.dataclass
class Case:
    """One data module and how to make its data here."""

    module: object
    #: Write the published file at the given path (None: the data set cannot be downloaded).
    serve: Optional[Callable[[Path], Path]]
    #: Put real-looking data into a data folder; return what ``find`` should return.
    place_real: Callable[[Path], Path]
    #: Check that what fetch/find returned is the data set.
    check: Callable[[Path], None]
    #: The stand-in's path for a data folder (what make_synthetic(root) writes).
    stand_in: Callable[[Path], Path]
    #: Check what for_notebook returned in grading mode without the real data (result, data folder).
    check_grading_stand_in: Callable[[object, Path], None]
    #: Check what for_notebook returned in grading mode with the real data (result, what find returns).
    check_grading_real: Callable[[object, Path], None]
    #: At least this many documented public names in the module.
    public_minimum: int
    #: What the data folder holds after a download.
    after_download: tuple = ()
    #: The folder of the data folder that downloads go to ("" : the data folder itself).
    download_folder: str = ""

    def __str__(self):
        return self.module.NAME


CASES = [
    Case(mednist, write_fake_mednist_archive, extract_fake_mednist, _check_mednist,
         lambda root: mednist.make_synthetic(root, images_per_class=2), _mednist_grading_stand_in,
         lambda folder, real: folder == real or pytest.fail(f"{folder} is not {real}"), 4,
         after_download=(mednist.FOLDER, mednist.REMOTE.filename)),
    Case(pneumoniamnist, write_pneumonia_npz, lambda root: write_pneumonia_npz(root / pneumoniamnist.REMOTE.filename),
         _check_pneumonia, lambda root: pneumoniamnist.make_synthetic(root), _pneumonia_grading_stand_in,
         lambda splits, real: check_pneumonia_grading_splits(splits), 5,
         after_download=(pneumoniamnist.REMOTE.filename,)),
    Case(mura, None, place_real_looking_mura, _check_mura, lambda root: mura.make_synthetic(root / mura.SYNTHETIC_ROOT),
         _mura_grading_stand_in, lambda folder, real: folder == real.parent or pytest.fail(f"{folder} does not hold {real}"), 5),
    Case(dsb2018, write_fake_stage1_train, lambda root: write_fake_dsb2018_96_zip(root / dsb2018.PREPARED_ZIP),
         _check_dsb2018, lambda root: dsb2018.make_synthetic(root), _dsb2018_grading_stand_in, _dsb2018_grading_real, 5,
         after_download=(dsb2018.FOLDER, dsb2018.REMOTE.filename)),
    Case(chembl, write_fake_chembl_csv, place_fake_chembl, _check_chembl, lambda root: chembl.make_synthetic(root),
         _chembl_grading_stand_in, _chembl_grading_real, 6, after_download=(chembl.REMOTE.filename,)),
    Case(citeseer, write_fake_citeseer_files, place_real_looking_citeseer, _check_citeseer,
         lambda root: citeseer.make_synthetic(root), _citeseer_grading_stand_in,
         lambda graph, real: _check_citeseer_graph(graph), 4,
         after_download=(citeseer.FOLDER,), download_folder=citeseer.FOLDER),
    Case(moleculenet, write_fake_moleculenet_files, place_real_looking_moleculenet, _check_moleculenet,
         lambda root: moleculenet.make_synthetic(root), _moleculenet_grading_stand_in,
         lambda tables, real: _check_moleculenet_grading(tables), 4,
         after_download=tuple(remote.filename for remote in moleculenet.REMOTES.values())),
    Case(gad, write_fake_gad_files, place_real_looking_gad, _check_gad, lambda root: gad.make_synthetic(root),
         _gad_grading_stand_in, lambda tables, real: _gad_grading(tables, synthetic=False), 5,
         after_download=(gad.FOLDER,), download_folder=f"{gad.FOLDER}/{gad.DEFAULT_FOLD}"),
    Case(splice, write_fake_splice_file, place_real_looking_splice, _check_splice, lambda root: splice.make_synthetic(root),
         _splice_grading_stand_in, lambda table, real: _splice_grading(table, synthetic=False), 5,
         after_download=(splice.REMOTE.filename,)),
]
DOWNLOADABLE = [case for case in CASES if case.serve is not None]


def _ids(cases):
    return [str(case) for case in cases]


def _remotes(module) -> list:
    """Every file a module downloads: its REMOTES (several files) or its one REMOTE (None: none)."""
    remotes = getattr(module, "REMOTES", None)
    if remotes is not None:
        return list(remotes.values())
    return [module.REMOTE] if module.REMOTE is not None else []


def _replace_remotes(monkeypatch, module, change) -> None:
    """Replace every Remote of ``module`` by ``change(remote)``."""
    if hasattr(module, "REMOTES"):
        monkeypatch.setattr(module, "REMOTES", {key: change(remote) for key, remote in module.REMOTES.items()})
    else:
        monkeypatch.setattr(module, "REMOTE", change(module.REMOTE))


def _downloaded(case, root: Path) -> list:
    """Where the module's downloaded files are in the data folder ``root``."""
    return [root / case.download_folder / remote.filename for remote in _remotes(case.module)]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def served(request, tmp_path, monkeypatch):
    """The case's published files in one folder, served from file:// addresses that REMOTE(S) point at."""
    case = request.param
    folder = tmp_path / "served"
    if hasattr(case.module, "REMOTES"):
        case.serve(folder)  # every published file, named as its Remote
    else:
        case.serve(folder / case.module.REMOTE.filename)
    _replace_remotes(monkeypatch, case.module, lambda remote: dataclasses.replace(
        remote, url=(folder / remote.filename).as_uri(), checksum=f"md5:{_md5(folder / remote.filename)}"))
    return case, folder


def _folder_state(folder: Path):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


# --- module hygiene ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_same_public_surface(case):
    """Every data module offers the same calls and constants, documented."""
    for name in ("find", "fetch", "make_synthetic", "for_notebook"):
        assert callable(getattr(case.module, name)), f"{case.module.__name__} lacks {name}()"
    assert isinstance(case.module.NAME, str)
    assert hasattr(case.module, "REMOTE") or isinstance(getattr(case.module, "REMOTES", None), dict)
    assert_public_api_documented(case.module, minimum=case.public_minimum)


@pytest.mark.parametrize("module", [datasets, *(case.module for case in CASES)], ids=lambda m: m.__name__)
def test_import_has_no_side_effects(module, tmp_path, monkeypatch):
    """Running a data module's top-level code creates no folder (neither DLMED_DATA nor ~/dlmed-data)."""
    assert_import_has_no_side_effects(module, "data_dir" if module is datasets else "make_synthetic", tmp_path, monkeypatch)


def test_no_data_module_downloads_by_itself():
    """One download mechanism: no data module uses urllib, requests, http or sockets itself."""
    for case in CASES:
        source = Path(case.module.__file__).read_text()
        for forbidden in ("urllib", "requests", "http.client", "socket", "urlopen"):
            assert forbidden not in source, f"{case.module.__name__} mentions {forbidden}"


# --- downloading -------------------------------------------------------------------------


@pytest.mark.parametrize("served", DOWNLOADABLE, ids=_ids(DOWNLOADABLE), indirect=True)
def test_download_when_absent(served, root):
    """With nothing present, fetch downloads into the data folder (DLMED_DATA) and leaves no temporary file."""
    case, published = served
    result = case.module.fetch(show_progress=False)  # root from DLMED_DATA
    assert result == case.module.find(root)
    case.check(result)
    for path in _downloaded(case, root):
        assert path.read_bytes() == (published / path.name).read_bytes()
    assert sorted(p.name for p in root.iterdir()) == sorted(case.after_download)


@pytest.mark.parametrize("served", DOWNLOADABLE, ids=_ids(DOWNLOADABLE), indirect=True)
def test_checksum_mismatch_leaves_nothing(served, root, monkeypatch):
    """A download with the wrong checksum raises ValueError naming both checksums, the file and what to do; no file is left."""
    case, published = served
    wrong = "0" * 32
    _replace_remotes(monkeypatch, case.module, lambda remote: dataclasses.replace(remote, checksum=f"md5:{wrong}"))
    with pytest.raises(ValueError) as caught:
        case.module.fetch(root, show_progress=False)
    message = str(caught.value)
    first = _downloaded(case, root)[0]  # the first file downloaded is the one refused
    assert wrong in message
    assert _md5(published / first.name) in message
    assert str(first) in message
    assert "again" in message
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("served", DOWNLOADABLE, ids=_ids(DOWNLOADABLE), indirect=True)
def test_cache_is_reused_without_network(served, root, monkeypatch, no_network):
    """What a first fetch put into the data folder is reused: no download, same path, file untouched."""
    case, _ = served
    first = case.module.fetch(root, show_progress=False)  # copied from the file:// address
    stamps = [path.stat().st_mtime_ns for path in _downloaded(case, root)]
    # From now on a download would go to the network, which no_network refuses.
    _replace_remotes(monkeypatch, case.module, lambda remote: dataclasses.replace(remote, url="https://example.invalid/x"))
    for allow in (True, False):
        assert case.module.fetch(root, allow_download=allow, show_progress=False) == first
    assert [path.stat().st_mtime_ns for path in _downloaded(case, root)] == stamps
    assert no_network == []


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_offline_error_is_one_short_error(case, root, offline):
    """Offline: one DataUnavailableError, no chained traceback; first what is missing, then the
    notebook's USE_SYNTHETIC_DATA switch and the DLMED_DATA folder, then how to get it by hand."""
    with pytest.raises(DataUnavailableError) as caught:
        case.module.fetch(root, show_progress=False)
    error = caught.value
    assert error.__cause__ is None and error.__suppress_context__ is True
    assert "During handling" not in "".join(traceback.format_exception(error))
    lines = str(error).splitlines()
    assert lines[0].startswith(f"{case.module.NAME} is not on this machine") and str(root) in lines[0]
    assert "USE_SYNTHETIC_DATA = True" in lines[1]
    after_switch = "\n".join(lines[2:6])
    assert "DLMED_DATA" in after_switch and str(root) in after_switch
    assert len(lines) <= 12, "the offline error should fit on a screen"
    remotes = _remotes(case.module)
    if not remotes or case.module in (mednist, chembl):
        assert f"{case.module.__name__}.make_synthetic" in str(error)  # for use outside a notebook
    if remotes:  # the first file that is missing: where to get it and its checksum
        assert remotes[0].url in str(error)
        if remotes[0].digest is not None:  # DSB2018's original release has no published checksum
            assert remotes[0].digest in str(error)
    else:
        assert mura.REGISTRATION_URL in str(error)
    assert not root.exists() or list(root.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("case", DOWNLOADABLE, ids=_ids(DOWNLOADABLE))
def test_lab_mode_offline_raises_instead_of_swapping(case, root, offline):
    """Lab mode without data or network raises the same error; no stand-in appears by itself."""
    with pytest.raises(DataUnavailableError) as caught:
        case.module.for_notebook(LAB, root)
    assert _remotes(case.module)[0].url in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_downloads_off_and_absent_raises_without_writing(case, root, no_network):
    """allow_download=False with nothing present raises with the instructions, creates nothing, uses no network."""
    with pytest.raises(DataUnavailableError) as caught:
        case.module.fetch(root, allow_download=False, show_progress=False)
    assert str(root) in str(caught.value)
    assert caught.value.__cause__ is None
    assert not root.exists()
    assert no_network == []


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_read_only_mirror_is_accepted(case, tmp_path, monkeypatch, no_network):
    """A read-only data folder (a shared offline mirror) that holds the data is used as it is:
    by find, fetch and grading mode, with nothing written there and no network."""
    mirror = tmp_path / "mirror"
    expected = case.place_real(mirror)
    for path in [mirror, *mirror.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # (root ignores these; the state check below does not)
    monkeypatch.setenv("DLMED_DATA", str(mirror))
    before = _folder_state(mirror)
    try:
        assert case.module.find() == expected
        assert case.module.fetch(show_progress=False) == expected
        case.check(expected)
        used = case.module.for_notebook(GRADING)
    finally:
        for path in [mirror, *mirror.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert used is not None
    assert _folder_state(mirror) == before
    assert no_network == []


# --- grading mode and stand-ins ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_grading_uses_stand_in_when_real_data_absent(case, root, no_network, capsys):
    """Grading mode without the data uses a synthetic stand-in in the data folder, never the network,
    and one line says so."""
    result = case.module.for_notebook(GRADING)  # root from DLMED_DATA
    case.check_grading_stand_in(result, root)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "SYNTHETIC" in lines[0]
    assert case.module.find(root) is None  # the stand-in is never taken for the real data
    assert no_network == []


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_grading_uses_real_data_when_present(case, root, no_network, capsys):
    """Grading mode uses the real data when it is there, and makes no stand-in."""
    real = case.place_real(root)
    before = sorted(p.name for p in root.iterdir())
    case.check_grading_real(case.module.for_notebook(GRADING, root), real)
    assert sorted(p.name for p in root.iterdir()) == before
    out = capsys.readouterr().out
    assert "SYNTHETIC" not in out
    if case.module is not mura:  # MURA is used silently: the notebook prints what it found
        assert f"real {case.module.NAME}" in out
    assert no_network == []


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_grading_never_downloads_even_if_allowed(case, root, no_network):
    """Even a grading config that claims downloads are allowed does not download."""
    permissive = RunConfig(mode="grading", images_per_class=8, allow_download=True, show_progress=False)
    case.check_grading_stand_in(case.module.for_notebook(permissive, root), root)
    assert case.module.find(root) is None
    assert no_network == []


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_stand_in_is_marked_synthetic_and_deterministic(case, tmp_path):
    """make_synthetic writes a stand-in that says it is synthetic; the same settings give the same bytes."""
    first, again = case.stand_in(tmp_path / "a"), case.stand_in(tmp_path / "b")
    is_folder = first.is_dir()
    assert is_synthetic(first) if is_folder else "synthetic" in first.name

    def content(path):
        if not is_folder:  # an .npz: compare the arrays (the zip records when it was written)
            with np.load(path) as arrays:
                return {key: arrays[key].tobytes() for key in arrays.files}
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".json")
        return [(str(p.relative_to(path)), p.read_bytes()) for p in files]

    assert content(first) == content(again)
    if is_folder:
        readme = (first / "README.txt").read_text()
        assert "SYNTHETIC" in readme and "dlmed" in readme


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_stand_ins_are_readable_by_other_users(case, tmp_path):
    """Stand-ins are staged in private temporary files but end up with the usual permissions (umask 022 here).

    Other users must read them: a JupyterHub's shared data folder, the class grader's sandboxed kernels.
    """
    previous = os.umask(0o022)
    try:
        made = case.stand_in(tmp_path)
    finally:
        os.umask(previous)
    expected = 0o755 if made.is_dir() else 0o644
    assert stat.S_IMODE(made.stat().st_mode) == expected, f"{made}: mode {oct(made.stat().st_mode)}"


@pytest.mark.parametrize("served", DOWNLOADABLE, ids=_ids(DOWNLOADABLE), indirect=True)
def test_downloads_are_readable_by_other_users(served, root):
    """A downloaded file gets the usual permissions too (pooch's temporary file is private)."""
    case, _ = served
    previous = os.umask(0o022)
    try:
        case.module.fetch(root, show_progress=False)
    finally:
        os.umask(previous)
    for path in _downloaded(case, root):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o644, f"{path}: {oct(mode)}"


# --- the data folder (dlmed.datasets.data_dir) ----------------------------------------------------------------------------


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
