"""What only the DSB2018 module does: preparing BBBC038's stage1_train.zip, reading the course's zip."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlmed.config import RunConfig
from dlmed.datasets import dsb2018
from tests.datasets.fakes import FAKE_DSB2018_IDS, write_fake_dsb2018_96_zip, write_fake_stage1_train

SHARED_COPY = Path(__file__).resolve().parents[3] / "shared" / "data" / dsb2018.PREPARED_ZIP
GRADING = RunConfig(mode="grading", allow_download=False, show_progress=False)


def test_prepare_stage1_train_as_the_reference_does(tmp_path, no_network):
    """A hand-copied stage1_train.zip is prepared: 96x96 RGB (grey copied, alpha dropped), masks the union of the nuclei."""
    write_fake_stage1_train(tmp_path / dsb2018.REMOTE.filename)
    folder = dsb2018.fetch(tmp_path, allow_download=False, show_progress=False)
    assert folder == tmp_path / dsb2018.FOLDER
    data = dsb2018.load(tmp_path, allow_download=False, show_progress=False)
    assert data["ids"] == sorted(FAKE_DSB2018_IDS)
    assert data["images"].shape == (3, 96, 96, 3)
    grey = data["images"][data["ids"].index("c3f")]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    stored = np.asarray(Image.open(folder / "masks" / "0" / "c3f.png"))
    assert stored.dtype == np.uint8 and stored.shape == (96, 96) and 0 < (stored > 127).mean() < 0.5
    # Two 30x25 nuclei in a 120x100 image cover 12.5% of it; resizing keeps about that share.
    assert abs(data["masks"][data["ids"].index("c3f")].mean() - 2 * 30 * 25 / (120 * 100)) < 0.02
    assert no_network == []


def test_prepared_zip_with_another_checksum_is_used_after_a_check(tmp_path, capsys):
    """A dsb2018_96.zip that is not the course's copy but has the layout is used, and one line says so."""
    write_fake_dsb2018_96_zip(tmp_path / dsb2018.PREPARED_ZIP)
    assert dsb2018.fetch(tmp_path, allow_download=False) == tmp_path / dsb2018.PREPARED_ZIP
    assert "sha256 differs" in capsys.readouterr().out


def test_damaged_zip_raises_a_short_error(tmp_path):
    """A file named dsb2018_96.zip that is no zip gives one ValueError naming the file and what to do."""
    (tmp_path / dsb2018.PREPARED_ZIP).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Delete it") as caught:
        dsb2018.fetch(tmp_path, allow_download=False)
    assert caught.value.__cause__ is None


def test_grading_with_a_damaged_file_falls_back_to_the_stand_in(tmp_path, capsys):
    """Grading must not fail because a data file is damaged: the stand-in is used and the reason printed."""
    (tmp_path / dsb2018.PREPARED_ZIP).write_bytes(b"not a zip")
    data = dsb2018.for_notebook(GRADING, tmp_path)
    assert data["synthetic"] is True
    assert "SYNTHETIC" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_COPY.is_file(), reason=f"the offline copy {SHARED_COPY} is not on this machine")
def test_the_course_copy_has_the_published_counts():
    """The offline copy: 670 pairs, 562 grey images, nuclei on about 13.8% of the pixels; grading takes 24, repeatably."""
    data = dsb2018.load(SHARED_COPY.parent, allow_download=False, show_progress=False)
    assert len(data["ids"]) == 670 and data["ids"] == sorted(data["ids"])
    images = data["images"]
    grey = ((images[..., 0] == images[..., 1]) & (images[..., 1] == images[..., 2])).all(axis=(1, 2))
    assert int(grey.sum()) == 562
    assert abs(data["masks"].mean() - 0.138) < 0.001
    first, again = dsb2018.for_notebook(GRADING, SHARED_COPY.parent), dsb2018.for_notebook(GRADING, SHARED_COPY.parent)
    assert len(first["ids"]) == dsb2018.GRADING_IMAGES and first["ids"] == again["ids"] and first["synthetic"] is False
