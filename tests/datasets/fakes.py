"""Small files shaped like each data set, for the data-set tests (never real data)."""

import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from dlmed import datasets
from dlmed.datasets import chembl, citeseer, dsb2018, gad, mednist, moleculenet, mura, pneumoniamnist, splice


def jpeg_bytes(value: int) -> bytes:
    """A 64x64 grayscale JPEG of one brightness."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), color=value).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tar(path: Path, members) -> Path:
    """Write a .tar.gz holding ``members``: (name, bytes) pairs for files, (name, None) for folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
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


def fake_mednist_members(per_class: int = 2) -> list:
    """The members of a small archive with MedNIST's layout."""
    members = [(".", None), (mednist.FOLDER, None)]  # "tar -C dir ." archives start with "."
    for index, name in enumerate(mednist.CLASSES):
        members.append((f"{mednist.FOLDER}/{name}", None))
        for number in range(per_class):
            members.append((f"{mednist.FOLDER}/{name}/{number:06d}.jpeg", jpeg_bytes(40 * index)))
    return members


def write_fake_mednist_archive(path: Path, per_class: int = 2) -> Path:
    """A small .tar.gz with MedNIST's layout."""
    return write_tar(path, fake_mednist_members(per_class))


def extract_fake_mednist(root: Path, per_class: int = 2) -> Path:
    """An extracted MedNIST-shaped folder in ``root``; returns ``root/MedNIST``."""
    archive = write_fake_mednist_archive(root.parent / "real.tar.gz", per_class)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / mednist.FOLDER


def valid_pneumonia_arrays(sizes=(60, 12, 20), seed: int = 0) -> dict:
    """Arrays with PneumoniaMNIST's keys, dtypes and shapes (random pixels, labels 0/1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in zip(pneumoniamnist.SPLITS, sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        labels = np.arange(size) % 4 != 0  # 1 normal in 4, like the real set
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    return arrays


def write_pneumonia_npz(path: Path, arrays: Optional[dict] = None) -> Path:
    """An .npz with ``arrays`` (default: :func:`valid_pneumonia_arrays`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **(arrays if arrays is not None else valid_pneumonia_arrays()))
    return path


def place_real_looking_mura(root: Path) -> Path:
    """A MURA tree that passes for the real one: the stand-in's layout without its "synthetic" marker."""
    folder = mura.make_synthetic(root, patients_per_part=1)
    (folder / datasets.STAND_IN_MARKER).unlink()
    return folder


#: Real molecules in the ChEMBL sets' format: (CID, SMILES, Activity); 2 "actives", 10 "decoys".
FAKE_CHEMBL_ROWS = (
    ("CHEMBL25", "CC(=O)Oc1ccccc1C(=O)O", 0),
    ("CHEMBL113", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", 0),
    ("CHEMBL521", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", 0),
    ("CHEMBL112", "CC(=O)Nc1ccc(O)cc1", 0),
    ("CHEMBL154", "COc1ccc2cc(ccc2c1)[C@H](C)C(=O)O", 0),
    ("CHEMBL139", "OC(=O)Cc1ccccc1Nc1c(Cl)cccc1Cl", 0),
    ("CHEMBL1431", "CN(C)C(=N)N=C(N)N", 0),
    ("CHEMBL3", "CN1CCC[C@H]1c1cccnc1", 0),
    ("CHEMBL12", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12", 0),
    ("CHEMBL27", "CC(C)NCC(O)COc1cccc2ccccc12", 0),
    ("CHEMBL20", "CC(=O)Nc1nnc(s1)S(N)(=O)=O", 1),
    ("CHEMBL21", "Nc1ccc(cc1)S(N)(=O)=O", 1),
)


def write_fake_chembl_csv(path: Path) -> Path:
    """A small CSV in the format of the ChEMBL sets (quoted header "CID","SMILES","Activity")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['"CID","SMILES","Activity"'] + [f'"{cid}","{smiles}",{label}' for cid, smiles, label in FAKE_CHEMBL_ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def place_fake_chembl(root: Path) -> Path:
    """The default ChEMBL set's file (fake content) in a data folder; returns its path."""
    return write_fake_chembl_csv(root / chembl.REMOTE.filename)


def _copy_stand_in_files(stand_in: Path, folder: Path) -> Path:
    """Copy the data files of a stand-in (not its marker or README) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in stand_in.iterdir():
        if path.name not in (datasets.STAND_IN_MARKER, "README.txt"):
            shutil.copyfile(path, folder / path.name)
    return folder


def write_fake_citeseer_files(folder: Path) -> Path:
    """The eight Planetoid files (a small random graph) as published, in ``folder``."""
    return _copy_stand_in_files(citeseer.make_synthetic(folder.parent / "citeseer-made"), folder)


def place_real_looking_citeseer(root: Path) -> Path:
    """A ``root/planetoid-citeseer`` folder that passes for the real one (not marked synthetic)."""
    return write_fake_citeseer_files(root / citeseer.FOLDER)


def write_fake_moleculenet_files(folder: Path) -> Path:
    """The three MoleculeNet tables (made-up values) as published, in ``folder``."""
    return _copy_stand_in_files(moleculenet.make_synthetic(folder.parent / "moleculenet-made"), folder)


def place_real_looking_moleculenet(root: Path) -> dict:
    """The three tables in the data folder ``root``, as ``find`` returns them."""
    write_fake_moleculenet_files(root)
    return moleculenet.find(root)


def png_bytes(array: np.ndarray) -> bytes:
    """A PNG of a uint8 array (H, W), (H, W, 3) or (H, W, 4)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


#: The image ids of the fake DSB2018 files (not sorted here on purpose: the module sorts them).
FAKE_DSB2018_IDS = ("c3f", "0a1", "b27")


def write_fake_stage1_train(path: Path) -> Path:
    """A small zip with the layout of BBBC038's stage1_train.zip: per id, an image (grey, RGB or RGBA,
    not 96x96) and two nucleus masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = {"c3f": (120, 100), "0a1": (100, 130, 3), "b27": (110, 90, 4)}
    with zipfile.ZipFile(path, "w") as archive:
        for image_id in FAKE_DSB2018_IDS:
            shape = shapes[image_id]
            archive.writestr(f"{image_id}/images/{image_id}.png",
                             png_bytes(rng.integers(0, 256, size=shape, dtype=np.uint8)))
            for number, (top, left) in enumerate([(10, 10), (50, 40)]):
                mask = np.zeros(shape[:2], dtype=np.uint8)
                mask[top:top + 30, left:left + 25] = 255
                archive.writestr(f"{image_id}/masks/m{number}.png", png_bytes(mask))
    return path


def write_fake_dsb2018_96_zip(path: Path) -> Path:
    """A small zip with the prepared 96x96 layout of the course's dsb2018_96.zip (random pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as archive:
        for image_id in FAKE_DSB2018_IDS:
            archive.writestr(f"{dsb2018.FOLDER}/images/{image_id}.png",
                             png_bytes(rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)))
            mask = np.zeros((96, 96), dtype=np.uint8)
            mask[20:50, 30:70] = 255
            archive.writestr(f"{dsb2018.FOLDER}/masks/0/{image_id}.png", png_bytes(mask))
    return path


#: Sentences of the fake GAD fold (made up; the repeat across train and test is deliberate, as in GAD).
FAKE_GAD_TRAIN = (("@GENE$ was associated with @DISEASE$ .", 1), ("no link between @GENE$ and @DISEASE$ .", 0),
                  ("@GENE$ raises the risk of @DISEASE$ .", 1), ("@GENE$ did not affect @DISEASE$ .", 0),
                  ("@GENE$ was associated with @DISEASE$ .", 1))
FAKE_GAD_TEST = (("@GENE$ was associated with @DISEASE$ .", 1), ("@GENE$ and @DISEASE$ were unrelated .", 0),
                 ("@GENE$ predisposes to @DISEASE$ .", 1))


def write_fake_gad_files(folder: Path) -> Path:
    """A fold's ``train.tsv`` (no header) and ``test.tsv`` (header) in GAD's format, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("".join(f"{s}\t{label}\n" for s, label in FAKE_GAD_TRAIN), encoding="utf-8")
    (folder / "test.tsv").write_text("index\tsentence\tlabel\n" + "".join(
        f"{i}\t{s}\t{label}\n" for i, (s, label) in enumerate(FAKE_GAD_TEST)), encoding="utf-8")
    return folder


def place_real_looking_gad(root: Path) -> Path:
    """Fold 1 of GAD (fake content) at ``root/gad-biobert/1``; returns that folder."""
    return write_fake_gad_files(root / gad.FOLDER / str(gad.DEFAULT_FOLD))


#: Rows of the fake splice file: (class, name, sequence of 60 letters); one ambiguity code, one repeat.
FAKE_SPLICE_ROWS = (("EI", "FAKE-1", "CAGGTAAGT" * 6 + "ACGTAC"), ("IE", "FAKE-2", "TTTCCCTAG" * 6 + "GATCCA"),
                    ("N", "FAKE-3", "ACGTTGCA" * 7 + "ACGT"), ("N", "FAKE-4", "ACGTTGCA" * 7 + "ACGT"),
                    ("EI", "FAKE-5", "CAGGTRAGT" * 6 + "ACGTAC"), ("IE", "FAKE-6", "TTCCTTCAG" * 6 + "GGATCC"))


def write_fake_splice_file(path: Path) -> Path:
    """A small file in the format of UCI's splice.data (padding spaces and all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label},{' ' * 6}{name},{' ' * 6}{seq}\n" for label, name, seq in FAKE_SPLICE_ROWS),
                    encoding="ascii")
    return path


def place_real_looking_splice(root: Path) -> Path:
    """The splice file (fake content) in a data folder; returns its path."""
    return write_fake_splice_file(root / splice.REMOTE.filename)
