"""What only the GAD module does: its two file formats, the folds, the stand-in, the real fold 1."""

from pathlib import Path

import pytest

from dlmed.config import RunConfig
from dlmed.datasets import gad
from tests.datasets.fakes import FAKE_GAD_TEST, place_real_looking_gad

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
GRADING = RunConfig(mode="grading", allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)


def test_every_fold_has_a_pinned_address_and_an_unknown_fold_is_refused():
    """Folds 1 to 10 come from one pinned commit with their own SHA256; fold 11 is a ValueError."""
    for fold in range(1, 11):
        remotes = gad.remotes(fold)
        assert [remote.filename for remote in remotes.values()] == ["train.tsv", "test.tsv"]
        assert all(f"/GAD/{fold}/" in remote.url and remote.checksum.startswith("sha256:") for remote in remotes.values())
    with pytest.raises(ValueError, match="folds 1 to 10"):
        gad.remotes(11)


def test_test_file_header_is_read_and_a_broken_file_refused(tmp_path):
    """test.tsv's header is not a sentence; a file without the masks is refused with what to do."""
    folder = place_real_looking_gad(tmp_path)
    test = gad.read(folder / "test.tsv", "test")
    assert test["sentence"].tolist() == [s for s, _ in FAKE_GAD_TEST] and str(test["label"].dtype) == "int64"
    (folder / "train.tsv").write_text("a sentence without masks\t1\n")
    with pytest.raises(ValueError, match="lack @GENE. or @DISEASE.*download it"):
        gad.fetch(tmp_path, allow_download=False, show_progress=False)


def test_stand_in_has_both_labels_and_both_masks(tmp_path):
    """The lab-mode stand-in: 800 / 200 made-up sentences, half positive, every one with both masks."""
    tables = gad.for_notebook(LAB, tmp_path, synthetic=True)
    assert [len(tables["train"]), len(tables["test"])] == [800, 200]
    for table in tables.values():
        assert table.attrs["synthetic"] is True and table["label"].mean() == 0.5
        assert table["sentence"].str.contains("@GENE$", regex=False).all()
        assert table["sentence"].str.contains("@DISEASE$", regex=False).all()


@pytest.mark.skipif(not (MIRROR / gad.FOLDER / "1" / "train.tsv").is_file(), reason="the offline mirror of GAD is not here")
def test_real_fold_1_counts_and_repeats():
    """Fold 1 as published: 4,796 / 534 sentences, and sentences repeated across train and test (the lab removes them)."""
    tables = gad.load(MIRROR, allow_download=False, show_progress=False)
    assert [len(tables["train"]), len(tables["test"])] == [4796, 534]
    assert int(tables["train"]["label"].sum()) == 2520 and int(tables["test"]["label"].sum()) == 281
    assert tables["test"]["sentence"].isin(set(tables["train"]["sentence"])).sum() > 0
    graded = gad.for_notebook(GRADING, MIRROR)
    assert [len(graded["train"]), len(graded["test"])] == [48, 24]
