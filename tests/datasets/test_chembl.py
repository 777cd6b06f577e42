"""Tests for dlmed.datasets.chembl beyond the shared ones (test_shared.py): sets by name, the
mirror's layout, content checks, the stand-in's molecules and grading's subsample."""

import hashlib

import pytest
from rdkit import Chem, RDLogger

from dlmed.config import RunConfig
from dlmed.datasets import chembl
from tests.conftest import PROJECT_ROOT
from tests.datasets.fakes import FAKE_CHEMBL_ROWS, write_fake_chembl_csv

GRADING = RunConfig(mode="grading", allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)
SHARED_MIRROR = PROJECT_ROOT.parent / "shared" / "data"


def test_every_set_has_an_address_and_checksum():
    """Each of the seven sets has its own pinned address, SHA256 and file name; unknown names are refused."""
    assert len(chembl.TARGETS) == 7 and set(chembl.PUBLISHED_MCC) == set(chembl.TARGETS)
    for target in chembl.TARGETS:
        where = chembl.remote(target)
        assert where.filename == f"{target}_cl.csv" and where.url.endswith(f"/{target}/{target}_cl.csv")
        assert where.algorithm == "sha256" and len(where.digest) == 64
    with pytest.raises(ValueError, match="CHEMBL219"):
        chembl.remote("CHEMBL1")


def test_mirror_layout_is_found(tmp_path, no_network):
    """A file in chembl-koutsoukas2017/ (the offline mirror's layout) is found and used by name."""
    path = write_fake_chembl_csv(tmp_path / chembl.MIRROR_FOLDER / "CHEMBL240_cl.csv")
    assert chembl.find(tmp_path, "CHEMBL240") == path
    assert chembl.find(tmp_path) is None  # the default set is not there
    table = chembl.for_notebook(GRADING, tmp_path, target="CHEMBL240")
    assert table.attrs == {"target": "CHEMBL240", "path": str(path), "synthetic": False}


@pytest.mark.parametrize("content, problem", [
    ('"CID","SMILES"\n"a","C"\n', "header"),
    ('"CID","SMILES","Activity"\n"a","C",2\n"b","CC",0\n', r"0 \(decoy\) and 1 \(active\)"),
    ('"CID","SMILES","Activity"\n"a","C",0\n"b","CC",0\n', "both actives"),
    ('"CID","SMILES","Activity"\n', "no molecules"),
])
def test_invalid_files_are_refused(tmp_path, content, problem):
    """read() names what is wrong with a file and what to do."""
    path = tmp_path / "CHEMBL219_cl.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as caught:
        chembl.read(path)
    assert "Delete it" in str(caught.value)


def test_file_with_other_checksum_but_valid_content_is_used(tmp_path, capsys, no_network):
    """A valid set whose checksum differs from the published one is used, with one line saying so."""
    path = write_fake_chembl_csv(tmp_path / chembl.REMOTE.filename)
    assert chembl.fetch(tmp_path, show_progress=False) == path
    assert "not the published file's" in capsys.readouterr().out
    assert len(chembl.load(tmp_path)) == len(FAKE_CHEMBL_ROWS)


def test_stand_in_molecules_parse_and_follow_the_rule():
    """The stand-in's SMILES all parse, and its made-up label is exactly the sulfonamide rule."""
    rule = Chem.MolFromSmarts("[NX3;!H0]S(=O)(=O)")
    RDLogger.DisableLog("rdApp.*")
    for name, smiles, label in chembl.STAND_IN_MOLECULES:
        molecule = Chem.MolFromSmiles(smiles)
        assert molecule is not None, name
        assert int(molecule.HasSubstructMatch(rule)) == label, name
    assert len({smiles for _, smiles, _ in chembl.STAND_IN_MOLECULES}) == len(chembl.STAND_IN_MOLECULES)


def test_grading_subsample_of_a_large_set(tmp_path, capsys):
    """Grading mode keeps at most GRADING_ACTIVES actives and GRADING_DECOYS decoys, the same every time."""
    rows = ['"CID","SMILES","Activity"'] + [f'"m{i}","{"C" * (i % 7 + 1)}O",{int(i % 11 == 0)}' for i in range(300)]
    (tmp_path / chembl.REMOTE.filename).write_text("\n".join(rows) + "\n")
    first, again = chembl.for_notebook(GRADING, tmp_path), chembl.for_notebook(GRADING, tmp_path)
    assert int(first["label"].sum()) == chembl.GRADING_ACTIVES
    assert int((first["label"] == 0).sum()) == chembl.GRADING_DECOYS
    assert first.equals(again)


def test_synthetic_in_lab_mode_on_request(tmp_path, capsys):
    """USE_SYNTHETIC_DATA gives the stand-in in lab mode too, and says so."""
    table = chembl.for_notebook(LAB, tmp_path, synthetic=True)
    assert table.attrs["synthetic"] and len(table) == len(chembl.STAND_IN_MOLECULES)
    assert "SYNTHETIC" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED_MIRROR / chembl.MIRROR_FOLDER).is_dir(), reason="the offline mirror ../shared/data is not here")
def test_offline_mirror_matches_published_checksums():
    """The read-only mirror's files are the published ones (SHA256 and molecule counts)."""
    for target, (digest, molecules, _) in chembl.TARGETS.items():
        path = chembl.find(SHARED_MIRROR, target)
        assert path is not None, target
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        assert len(chembl.read(path)) == molecules
