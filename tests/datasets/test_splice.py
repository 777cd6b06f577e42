"""What only the splice module does: its reader, the stand-in's consensus and quirks, the real file."""

from pathlib import Path

import pytest

from dlmed.config import RunConfig
from dlmed.datasets import splice
from tests.datasets.fakes import place_real_looking_splice

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
GRADING = RunConfig(mode="grading", allow_download=False, show_progress=False)
LAB = RunConfig(mode="lab", show_progress=False)


def test_fields_are_stripped_and_a_wrong_line_refused(tmp_path):
    """Padding spaces are stripped; a line with an unknown class is refused naming the line."""
    path = place_real_looking_splice(tmp_path)
    table = splice.read(path)
    assert table["name"].tolist()[0] == "FAKE-1" and (table["sequence"].str.len() == 60).all()
    path.write_text(path.read_text() + "XX, FAKE-9, " + "A" * 60 + "\n")
    with pytest.raises(ValueError, match="line 7 has the class 'XX'.*download it"):
        splice.fetch(tmp_path, allow_download=False, show_progress=False)


def test_stand_in_has_the_consensus_and_the_real_quirks(tmp_path):
    """The stand-in: GT at +1, +2 in every EI, AG at -2, -1 in every IE; a repeat, a conflict and an N."""
    table = splice.for_notebook(LAB, tmp_path, synthetic=True)
    assert table.attrs["synthetic"] is True and len(table) == 3 * 300 + 3
    donors, acceptors = table[table["label"] == "EI"], table[table["label"] == "IE"]
    assert (donors["sequence"].str[30:32] == "GT").all() and (acceptors["sequence"].str[28:30] == "AG").all()
    assert table["sequence"].duplicated().sum() == 2
    assert table.groupby("sequence")["label"].nunique().max() == 2
    assert table["sequence"].str.contains("N").sum() == 1


@pytest.mark.skipif(not (MIRROR / splice.REMOTE.filename).is_file(), reason="the offline mirror of the splice data is not here")
def test_real_file_counts():
    """3,190 sequences (EI 767, IE 768, N 1,655), 3,005 distinct, 15 with ambiguity codes, as UCI's splice.names."""
    table = splice.load(MIRROR, allow_download=False, show_progress=False)
    assert table["label"].value_counts().to_dict() == {"N": 1655, "IE": 768, "EI": 767}
    assert table["sequence"].nunique() == 3005
    assert int((~table["sequence"].str.fullmatch("[ACGT]+")).sum()) == 15
    assert len(splice.for_notebook(GRADING, MIRROR)) == 3 * splice.GRADING_PER_CLASS
