"""What only the CiteSeer module does: the Planetoid reader, its safety, PyG's layout, the real files."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from dlmed.config import RunConfig
from dlmed.datasets import citeseer, is_synthetic
from tests.datasets.fakes import place_real_looking_citeseer

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
GRADING = RunConfig(mode="grading", allow_download=False, show_progress=False)
_KEYS = ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask")


def test_stand_in_reads_as_pyg_reads_it(tmp_path):
    """The stand-in is valid Planetoid data: PyTorch Geometric's own reader gives the same graph."""
    from torch_geometric.io import read_planetoid_data

    folder = citeseer.make_synthetic(tmp_path)
    ours = citeseer._read(folder)
    theirs = read_planetoid_data(str(folder), "citeseer")
    for key in _KEYS:
        assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
    assert is_synthetic(folder) and citeseer.find(tmp_path) is None


def test_pyg_layout_is_found(tmp_path):
    """Files in PyG's <root>/CiteSeer/raw/ are found, so a PyG download can be reused."""
    folder = place_real_looking_citeseer(tmp_path / "elsewhere")
    raw = tmp_path / "root" / "CiteSeer" / "raw"
    shutil.copytree(folder, raw)
    assert citeseer.find(tmp_path / "root") == raw


def test_tampered_pickle_cannot_run_code(tmp_path, capsys):
    """A file that unpickles to a call of anything but the Planetoid classes is refused: ValueError, nothing runs."""
    folder = place_real_looking_citeseer(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("PAYLOAD RAN",))

    (folder / "ind.citeseer.graph").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        citeseer.fetch(tmp_path, allow_download=False, show_progress=False)
    assert "PAYLOAD RAN" not in capsys.readouterr().out


def test_damaged_file_in_grading_falls_back_to_stand_in(tmp_path, capsys):
    """Grading does not fail on a damaged data file: it says why and uses the stand-in."""
    folder = place_real_looking_citeseer(tmp_path)
    (folder / "ind.citeseer.x").write_bytes(b"not a pickle")
    graph = citeseer.for_notebook(GRADING, tmp_path)
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "does not hold valid Planetoid" in out
    assert graph.num_nodes > 0


@pytest.mark.skipif(not (MIRROR / citeseer.FOLDER).is_dir(), reason="no offline copy of CiteSeer in ../shared/data")
def test_real_citeseer_counts_and_pyg_equality():
    """The real files: checksums match, the published counts, and the same graph as PyG's Planetoid reader."""
    from torch_geometric.io import read_planetoid_data

    folder = citeseer.fetch(MIRROR, allow_download=False, show_progress=False)
    graph = citeseer.load(MIRROR, allow_download=False, show_progress=False)
    assert (graph.num_nodes, graph.num_features, graph.num_edges) == (3327, 3703, 9104)
    assert [int(graph.train_mask.sum()), int(graph.val_mask.sum()), int(graph.test_mask.sum())] == [120, 500, 1000]
    labelled = graph.x.sum(dim=1) > 0
    assert torch.bincount(graph.y[labelled]).tolist() == [249, 590, 668, 701, 596, 508]
    assert graph.is_undirected() and not graph.has_self_loops()
    theirs = read_planetoid_data(str(folder), "citeseer")
    for key in _KEYS:
        assert torch.equal(getattr(graph, key), getattr(theirs, key)), key
