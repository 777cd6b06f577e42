"""What only the MoleculeNet module does: its readers, the stand-in's molecules, the real tables."""

from pathlib import Path

import numpy as np
import pytest

from dlmed.config import RunConfig
from dlmed.datasets import moleculenet
from tests.datasets.fakes import place_real_looking_moleculenet

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
GRADING = RunConfig(mode="grading", allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)


def test_stand_in_molecules_are_valid_and_labels_partly_missing(tmp_path):
    """Every stand-in SMILES parses with RDKit; several ring scaffolds; Tox21 labels are 0, 1 or missing."""
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    tables = moleculenet.for_notebook(LAB, tmp_path, synthetic=True)
    smiles = tables["esol"]["smiles"].tolist()
    assert len(smiles) == 300 and len(set(smiles)) == 300
    assert all(Chem.MolFromSmiles(s) is not None for s in smiles)
    assert len({MurckoScaffold.MurckoScaffoldSmiles(smiles=s) for s in smiles}) >= 5
    labels = tables["tox21"][list(moleculenet.TOX21_TASKS)].to_numpy()
    assert np.isnan(labels).any() and set(np.unique(labels[~np.isnan(labels)])) == {0.0, 1.0}


def test_a_file_that_is_not_the_table_is_refused(tmp_path):
    """A file with the right name but not the table's columns: ValueError naming the table and what to do."""
    place_real_looking_moleculenet(tmp_path)
    (tmp_path / moleculenet.REMOTES["esol"].filename).write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not the esol table.*download it from"):
        moleculenet.fetch(tmp_path, allow_download=False, show_progress=False)


def test_grading_subsamples_each_table(tmp_path):
    """Grading mode cuts every table to at most GRADING_MOLECULES rows, the same rows every time."""
    place_real_looking_moleculenet(tmp_path)
    first = moleculenet.for_notebook(GRADING, tmp_path)
    again = moleculenet.for_notebook(GRADING, tmp_path)
    for table in moleculenet.TABLES:
        assert len(first[table]) == moleculenet.GRADING_MOLECULES
        assert first[table]["smiles"].tolist() == again[table]["smiles"].tolist()


@pytest.mark.skipif(moleculenet.find(MIRROR) is None, reason="no offline copy of ESOL, FreeSolv and Tox21 in ../shared/data")
def test_real_tables_counts():
    """The real tables: checksums match (no message), the published counts, SMILES stripped, Tox21's missing labels."""
    tables = moleculenet.load(MIRROR, allow_download=False, show_progress=False)
    assert {name: len(frame) for name, frame in tables.items()} == {"esol": 1128, "freesolv": 642, "tox21": 7831}
    assert not tables["esol"]["smiles"].str.contains(" ").any()  # one ESOL SMILES has a trailing space in the file
    labels = tables["tox21"][list(moleculenet.TOX21_TASKS)]
    assert int(labels.notna().sum().sum()) == 77946 and int(labels.isna().sum().sum()) == 16026
