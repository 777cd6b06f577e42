"""Tests for dlmed.datasets.mura: the synthetic MURA-v1.1 tree, the image and study tables, the dataset.

MURA is never downloaded (it needs registration), so no test needs the network; the real
data is not on test machines, and every test works on the synthetic stand-in. What every
data module shares (offline error, mirror, grading mode) is tested in test_shared.py.
"""

import csv
import re

import pandas as pd
import pytest
import torch
from PIL import Image

from dlmed.config import RunConfig
from dlmed.datasets import DataUnavailableError, is_synthetic, mura
from dlmed.datasets.mura import BODY_PARTS, FOLDER, ImageDataset, find, for_notebook, image_table, make_synthetic, study_table

IMAGE_PATH = re.compile(
    r"MURA-v1\.1/(train|valid)/XR_([A-Z]+)/patient(\d{5})/study(\d+)_(positive|negative)/image(\d+)\.png"
)
STUDY_PATH = re.compile(r"MURA-v1\.1/(train|valid)/XR_([A-Z]+)/patient(\d{5})/study(\d+)_(positive|negative)/")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """A folder holding the default synthetic MURA-v1.1 tree (made once; tests only read it)."""
    root = tmp_path_factory.mktemp("mura")
    make_synthetic(root)
    return root


def _read_rows(path):
    with open(path, newline="") as file:
        return list(csv.reader(file))


# --- the synthetic tree ------------------------------------------------------------------


def test_synthetic_tree_has_muras_layout(synthetic_root):
    """The four CSVs have MURA's exact format (no header) and every listed image exists as a PNG."""
    folder = synthetic_root / FOLDER
    assert find(synthetic_root) == folder
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["train", "valid"]
    for split in ("train", "valid"):
        images = _read_rows(folder / f"{split}_image_paths.csv")
        studies = _read_rows(folder / f"{split}_labeled_studies.csv")
        assert all(len(row) == 1 and IMAGE_PATH.fullmatch(row[0]) for row in images)
        assert all(len(row) == 2 and STUDY_PATH.fullmatch(row[0]) and row[1] in ("0", "1") for row in studies)
        assert {IMAGE_PATH.fullmatch(row[0])[1] for row in images} == {split}
        # A study's label in the CSV agrees with its folder name.
        assert all((row[1] == "1") == row[0].endswith("_positive/") for row in studies)
        # Every image lies in a listed study, and every study has an image.
        study_of = {row[0].rsplit("/", 1)[0] + "/" for row in images}
        assert study_of == {row[0] for row in studies}
        body_parts = {IMAGE_PATH.fullmatch(row[0])[2] for row in images}
        assert body_parts == set(BODY_PARTS)
        for row in images[:5]:
            with Image.open(synthetic_root / row[0]) as image:
                assert image.format == "PNG" and image.size == (64, 64)
    # Exactly the listed PNGs are on disk.
    listed = {row[0] for split in ("train", "valid") for row in _read_rows(folder / f"{split}_image_paths.csv")}
    on_disk = {str(p.relative_to(synthetic_root)) for p in folder.rglob("*.png")}
    assert listed == on_disk
    readme = (folder / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "not medical" in readme.lower()
    assert is_synthetic(folder)


def test_synthetic_counts_follow_settings(synthetic_root):
    """3 patients per body part and split, 1 or 2 studies each (both occur), 1 to 3 images per study."""
    studies = pd.concat([study_table(synthetic_root, split) for split in ("train", "valid")])
    per_patient = studies.groupby("patient").size()
    assert len(per_patient) == 2 * 3 * len(BODY_PARTS)
    assert set(per_patient) == {1, 2}
    images = image_table(synthetic_root, "train")
    per_study = images.groupby("study").size()
    assert per_study.between(1, 3).all()
    assert per_study.nunique() > 1
    # Both labels in every body part of each split.
    assert (studies.groupby("body_part")["label"].nunique() == 2).all()


def test_synthetic_is_deterministic(tmp_path):
    """The same settings give byte-identical trees; another seed gives other images."""

    def contents(root, seed):
        folder = make_synthetic(root, patients_per_part=1, seed=seed)
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    first = contents(tmp_path / "a", seed=0)
    again = contents(tmp_path / "b", seed=0)
    other = contents(tmp_path / "c", seed=1)
    assert first == again
    assert first != other


def test_synthetic_is_reused_and_rebuilt(tmp_path):
    """Same settings reuse the tree; other settings replace it; no staging folders are left."""
    folder = make_synthetic(tmp_path, patients_per_part=1)
    marker_mtime = (folder / "dlmed-synthetic.json").stat().st_mtime_ns
    assert make_synthetic(tmp_path, patients_per_part=1) == folder
    assert (folder / "dlmed-synthetic.json").stat().st_mtime_ns == marker_mtime
    make_synthetic(tmp_path, patients_per_part=2)
    assert study_table(tmp_path)["patient"].nunique() == 2 * len(BODY_PARTS)
    assert [p.name for p in tmp_path.iterdir()] == [FOLDER]


def test_synthetic_never_replaces_real_data(tmp_path):
    """A MURA-v1.1 folder without the synthetic marker (real data) is left alone."""
    real = tmp_path / FOLDER
    real.mkdir()
    (real / "train_image_paths.csv").write_text("keep me\n")
    with pytest.raises(ValueError, match="refusing"):
        make_synthetic(tmp_path)
    assert (real / "train_image_paths.csv").read_text() == "keep me\n"
    assert [p.name for p in tmp_path.iterdir()] == [FOLDER]


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"patients_per_part": 0}, "patients_per_part"),
        ({"studies_per_patient": (2, 1)}, "studies_per_patient"),
        ({"images_per_study": (0, 2)}, "images_per_study"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_synthetic_rejects_bad_settings(tmp_path, settings, name):
    """Nonsense settings fail with a message naming the setting, before anything is written."""
    with pytest.raises(ValueError, match=name):
        make_synthetic(tmp_path, **settings)
    assert list(tmp_path.iterdir()) == []


# --- the tables --------------------------------------------------------------------------


def test_image_table_columns_and_values(synthetic_root):
    """One row per CSV line, with absolute paths and the parts of each path, labels int64."""
    table = image_table(synthetic_root, "valid")
    assert list(table.columns) == ["path", "split", "body_part", "patient", "study", "label"]
    rows = _read_rows(synthetic_root / FOLDER / "valid_image_paths.csv")
    assert len(table) == len(rows)
    assert table["label"].dtype == "int64"
    for column in ["path", "split", "body_part", "patient", "study"]:
        assert pd.api.types.is_string_dtype(table[column])
    first = table.iloc[0]
    match = IMAGE_PATH.fullmatch(rows[0][0])
    assert first["path"] == str((synthetic_root / rows[0][0]).resolve())
    assert first["split"] == "valid"
    assert first["body_part"] == match[2]
    assert first["patient"] == f"patient{match[3]}"
    assert first["study"] == f"patient{match[3]}/study{match[4]}"
    assert first["label"] == (match[5] == "positive")
    assert set(table["body_part"]) == set(BODY_PARTS)
    assert set(table["label"]) == {0, 1}


def test_parser_examples():
    """The private parser splits the documented example image and study paths."""
    expected = {
        "split": "train",
        "body_part": "WRIST",
        "patient": "patient00001",
        "study": "patient00001/study1",
        "label": 1,
    }
    assert mura._parse_mura_path("MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png") == expected
    assert mura._parse_mura_path("MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/") == expected
    assert mura._parse_mura_path("MURA-v1.1/valid/XR_HAND/patient11200/study3_negative/image2.png")["label"] == 0
    with pytest.raises(ValueError, match="MURA"):
        mura._parse_mura_path("MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png")
    with pytest.raises(ValueError, match="MURA"):
        mura._parse_mura_path("train/XR_WRIST/image1.png")


def test_study_table_agrees_with_image_table(synthetic_root):
    """Study IDs, body parts, patients and labels match between the two tables of each split."""
    for split in ("train", "valid"):
        studies = study_table(synthetic_root, split)
        assert list(studies.columns) == ["study", "body_part", "patient", "label"]
        assert studies["label"].dtype == "int64"
        assert studies["study"].is_unique
        images = image_table(synthetic_root, split)
        per_study = images.groupby("study")[["body_part", "patient", "label"]].first()
        merged = studies.merge(per_study.reset_index(), on="study", how="outer", suffixes=("", "_image"))
        assert len(merged) == len(studies)
        assert (merged["label"] == merged["label_image"]).all()
        assert (merged["body_part"] == merged["body_part_image"]).all()
        assert (merged["patient"] == merged["patient_image"]).all()
        # One label per study among its images.
        assert (images.groupby("study")["label"].nunique() == 1).all()


def test_tables_say_when_data_is_synthetic(synthetic_root, capsys):
    """Reading the stand-in prints a line saying it is SYNTHETIC, so it never passes for MURA."""
    study_table(synthetic_root)
    assert "SYNTHETIC" in capsys.readouterr().out


def test_absent_data_raises_with_registration_instructions(root):
    """Without MURA, both tables raise DataUnavailableError with the URL, the folder and DLMED_DATA."""
    for read in (image_table, study_table):
        with pytest.raises(DataUnavailableError) as caught:
            read()  # root from DLMED_DATA
        message = str(caught.value)
        assert "https://stanfordmlgroup.github.io/competitions/mura/" in message
        assert str(root) in message and FOLDER in message and "DLMED_DATA" in message
    assert find(root) is None
    assert not root.exists()


def test_incomplete_folder_is_not_mura(tmp_path):
    """A MURA-v1.1 folder missing one of the four CSVs is not found."""
    folder = make_synthetic(tmp_path, patients_per_part=1)
    (folder / "valid_labeled_studies.csv").unlink()
    assert find(tmp_path) is None
    with pytest.raises(DataUnavailableError):
        image_table(tmp_path)


def test_unknown_split_is_rejected(synthetic_root):
    """Only train and valid exist (the test set is hidden); others get a clear ValueError."""
    with pytest.raises(ValueError, match="valid"):
        image_table(synthetic_root, "test")


# --- ImageDataset ------------------------------------------------------------------------


def test_dataset_items_are_grayscale_tensors(synthetic_root):
    """Items are float (1, H, W) tensors in [0, 1] with int labels; targets matches the table."""
    table = image_table(synthetic_root, "valid")
    dataset = ImageDataset(table)
    assert len(dataset) == len(table)
    image, label = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (1, 64, 64)
    assert 0.0 <= image.min().item() and image.max().item() <= 1.0
    assert type(label) is int and label == table["label"].iloc[0]
    assert list(dataset.targets) == table["label"].tolist()


def test_dataset_converts_rgb_and_applies_transform(synthetic_root, tmp_path):
    """An RGB PNG is converted to grayscale, and the transform receives that PIL image."""
    path = tmp_path / "rgb.png"
    Image.new("RGB", (40, 30), color=(255, 0, 0)).save(path)
    table = pd.DataFrame({"path": [str(path)], "label": [1]})
    seen = []
    dataset = ImageDataset(table, transform=lambda image: seen.append(image) or image.size)
    assert dataset[0] == ((40, 30), 1)
    assert seen[0].mode == "L"
    assert ImageDataset(table)[0][0].shape == (1, 30, 40)


def test_dataset_needs_path_and_label(synthetic_root):
    """A table without the needed columns fails with a message saying how to make one."""
    with pytest.raises(ValueError, match="image_table"):
        ImageDataset(pd.DataFrame({"file": ["x.png"]}))


def test_image_level_random_split_leaks_patients(synthetic_root):
    """Why Lab 2 splits by patient: a random split by image puts patients on both sides."""
    table = image_table(synthetic_root, "train")
    assert table.groupby("patient").size().max() > 1, "the synthetic tree should have patients with several images"
    leaks = []
    for seed in range(5):
        validation = table.sample(frac=0.3, random_state=seed)
        training = table.drop(validation.index)
        leaks.append(len(set(training["patient"]) & set(validation["patient"])))
    assert min(leaks) > 0, f"patients on both sides of 5 image-level splits: expected some each time, got {leaks}"
    by_patient = set(table["patient"].drop_duplicates().sample(frac=0.3, random_state=0))
    validation = table[table["patient"].isin(by_patient)]
    training = table[~table["patient"].isin(by_patient)]
    assert not set(training["patient"]) & set(validation["patient"]), "a split by patient must not leak"


# --- for_notebook ------------------------------------------------------------------------


def test_for_notebook_uses_real_mura_or_a_stand_in(tmp_path, no_network, capsys):
    """Without MURA (in lab and grading mode alike: it is never downloaded) the notebook gets a
    synthetic tree in mura-synthetic/; with MURA there, the data folder itself; synthetic=True
    (USE_SYNTHETIC_DATA) asks for the stand-in even then."""
    lab = RunConfig(mode="lab", show_progress=False)
    stand_in = for_notebook(lab, tmp_path)
    assert stand_in == tmp_path / mura.SYNTHETIC_ROOT and is_synthetic(stand_in / FOLDER)
    assert "SYNTHETIC" in capsys.readouterr().out
    real = make_synthetic(tmp_path / "real", patients_per_part=1)
    (real / "dlmed-synthetic.json").unlink()  # now it passes for the real MURA
    assert for_notebook(lab, real.parent) == real.parent
    assert for_notebook(lab, real.parent, synthetic=True) == real.parent / mura.SYNTHETIC_ROOT
    assert no_network == []
