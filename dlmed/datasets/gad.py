"""GAD gene-disease relations as prepared by BioBERT: download, checksums, reader, stand-in.

The GAD corpus (Bravo et al., BMC Bioinformatics 16:55, 2015; CC BY 4.0), built from the
Genetic Association Database, as BioBERT (Lee et al. 2020) prepared it for relation
extraction: one sentence per row, in which the gene is masked as ``@GENE$`` and the disease
as ``@DISEASE$``, and a label: 1 = the sentence asserts an association, 0 = it does not.
BioBERT cut the 5,330 sentences into 10 folds for cross-validation; fold ``k`` is a
``train.tsv`` (no header, columns sentence and label) and a ``test.tsv`` (header ``index
sentence label``), tab-separated, read without quoting.

Where the files come from: BioBERT's ``REdata`` archive is the origin; its copy in the GitHub
repository BioMedBERT/biomedbert (``datasets/RE/GAD/<fold>/``), pinned to one commit, is
byte-identical to the course's offline mirror, whose SHA256 checksums are in :data:`FOLDS`.
Files live in the data folder as ``gad-biobert/<fold>/train.tsv`` and ``test.tsv`` (the
mirror's layout).

The corpus repeats sentences: 1 to 28 identical sentences sit in both the train and the test
file of a fold. Nothing here removes them (the lab does, and says so), so the files are read
as published. Without the data :func:`make_synthetic` writes a small stand-in of MADE-UP
sentences (templates with the two masks), labelled by the template, NOT by any database.
Nothing happens on import.
"""

import csv
from pathlib import Path
from typing import Optional

import numpy as np

from dlmed.datasets import PathLike, data_dir, is_synthetic, stand_in_settings
from dlmed.datasets._download import Remote, by_hand, download, matches
from dlmed.datasets._standin import build_folder, subsample_per_label, write_marker

NAME = "GAD (BioBERT folds)"
#: The two masks every sentence holds.
GENE, DISEASE = "@GENE$", "@DISEASE$"
#: SHA256 of each fold's (train.tsv, test.tsv), as in the course's offline mirror.
FOLDS = {
    1: ("21e3765852a13cf03e6e759e201c5ad2d18b10d3ab05a8ac6bd7510f18f68fec",
        "68fe2b2bddefac2cd5d35b4bc8a13bceee95ee9a582a623632981e893cdb512e"),
    2: ("c920a8977d3963708be4115d440c4ad04f09de2d9facd3b3b64082287cc6e09a",
        "51600ff88ed405725e8860f11b8c2d17cbb38b420a8faa83eaaf44c21bbb89d4"),
    3: ("69993033b7d9717cac902d2108ce9e5cb65a294da5a342043cd7a76e9e459cac",
        "72058831d5c983b4b9a5db93011c851c02cd7be4c91df271502df3f2dccce50a"),
    4: ("980f3fe19676dac4e40595b0a6c76965161de341cd9a304ec493d8e003a61df4",
        "9bf6dd6986899367f8e028fa5a24f02b15dabb2621e344d6d8e4787c056f1de6"),
    5: ("25b2f6ff645839e6cf55f12526f3692bb689176e9f1bd757cfc52cb71ca8109d",
        "dbac9eba54f137ce01d3b29bc6dd4f61a2881ef0a2990193ff53b1d95f1a6e30"),
    6: ("5588e16c9e9698c8fbf73d26814202e0d1016721b5f5415c0d75e474159a552c",
        "7d6ec806d9152670bcfecb6f56703116756e51d438bc16e9aed272186f7af679"),
    7: ("f8e5b6b4498978d484d098da4168e91a54894d383ad5af75ea6f1fd96ef4a0bf",
        "32462105be3f2637d9b9aa452101812b329f0350a10de31dfff240aca4766b0e"),
    8: ("f4ad27106243e667c3e2fe6040393a9baf62cb4edee5ceada7105db6bd77141f",
        "e78c0eb47929002b99ff82534853a6261376c461e479759e50456a84be7c151f"),
    9: ("41c7f5b639a64058d5a09e698503463147369bb9b8c61f51da8bca582ca4464b",
        "5e673314a57edf65020d37fe3d36d59c39b878a79a36d30f44cef1344af0abf5"),
    10: ("0296153d9c30da60ab73727c85deaf7a6b0149e43b06b42316227419b257d03b",
         "d12df5d5418f91ff0170511593489b87e4046e9ca04e4a5cea14a5334a2982d2"),
}
#: The fold the lab uses: fold 1, the one BLURB's split of GAD appears to come from.
DEFAULT_FOLD = 1
#: Published results on GAD with pretrained models (percent). BioBERT v1.1: Lee et al.,
#: Bioinformatics 36(4):1234-1240 (2020), Table 7, mean over the 10 folds; as recorded in the
#: course's data README, where it is marked "not re-read here" (not checked against the paper).
PUBLISHED_BIOBERT = {"precision": 77.32, "recall": 82.68, "f1": 79.83}
#: The folder of the data folder that holds the folds (the offline mirror's layout).
FOLDER = "gad-biobert"
#: The folder :func:`make_synthetic` writes (it holds one fold, ``1/``).
SYNTHETIC_FOLDER = "gad-synthetic"
#: Grading mode keeps at most this many sentences of each label, per file (a fixed random choice).
GRADING_PER_LABEL = {"train": 24, "test": 12}
_REPOSITORY = ("https://raw.githubusercontent.com/BioMedBERT/biomedbert/"
               "9e5e1019d79d07c7aecc4eb49106203af1012663/datasets/RE/GAD")
_PARTS = ("train", "test")


def remotes(fold: int = DEFAULT_FOLD) -> dict:
    """Return ``{"train": Remote, "test": Remote}`` of fold ``fold`` (1 to 10).

    Raises:
        ValueError: ``fold`` is not one of the ten folds.
    """
    if fold not in FOLDS:
        raise ValueError(f"GAD has folds 1 to 10, not {fold!r}")
    return {part: Remote(url=f"{_REPOSITORY}/{fold}/{part}.tsv", checksum=f"sha256:{digest}", filename=f"{part}.tsv")
            for part, digest in zip(_PARTS, FOLDS[fold])}


#: The default fold's two files (the shared data tests check these).
REMOTES = remotes(DEFAULT_FOLD)


def _wanted(fold: int) -> dict:
    """The Remotes of ``fold``: :data:`REMOTES` for the default fold (so a course may point it elsewhere)."""
    return dict(REMOTES) if fold == DEFAULT_FOLD else remotes(fold)


def read(path: PathLike, part: str):
    """Read one file of a fold into a table with columns ``sentence`` (str) and ``label`` (int64).

    ``part`` is ``"train"`` (no header) or ``"test"`` (a header ``index sentence label``).
    Rows keep the file's order.

    Raises:
        ValueError: the file is not a GAD file (columns, labels 0/1, both masks in every
            sentence); the message names the problem and what to do.
    """
    import pandas as pd

    path = Path(path)
    try:
        if part == "train":
            raw = pd.read_csv(path, sep="\t", header=None, names=["sentence", "label"], quoting=csv.QUOTE_NONE,
                              dtype={"sentence": str}, keep_default_na=False)
        elif part == "test":
            raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype={"sentence": str}, keep_default_na=False)
        else:
            raise KeyError(f"part must be 'train' or 'test', not {part!r}")
        labels = pd.to_numeric(raw["label"], errors="raise")
        table = pd.DataFrame({"sentence": raw["sentence"].astype(str), "label": labels.astype("int64")})
        problem = None
        if len(table) == 0:
            problem = "it holds no sentences"
        elif not set(table["label"].tolist()) <= {0, 1}:
            problem = f"its labels are {sorted(set(table['label'].tolist()))[:5]}, not 0 and 1"
        elif not (table["sentence"].str.contains(GENE, regex=False)
                  & table["sentence"].str.contains(DISEASE, regex=False)).all():
            problem = f"some sentences lack {GENE} or {DISEASE}"
    except (OSError, UnicodeDecodeError, ValueError, KeyError, pd.errors.ParserError) as error:
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        raise ValueError(f"{path} is not a GAD {part} file: {problem}. Delete it and run again to download it, "
                         f"or copy a good copy there (checksums: dlmed.datasets.gad.FOLDS).")
    return table


def find(root: Optional[PathLike] = None, fold: int = DEFAULT_FOLD, folder_name: str = FOLDER) -> Optional[Path]:
    """Return the folder ``root/gad-biobert/<fold>`` if it holds ``train.tsv`` and ``test.tsv``, else ``None``.

    (``folder_name`` replaces ``gad-biobert``, e.g. to find the stand-in's fold.)
    Contents are not checked here (:func:`fetch` does). ``root`` defaults to
    :func:`~dlmed.datasets.data_dir`. Nothing is downloaded or created.
    """
    root = Path(root if root is not None else data_dir())
    folder = root / folder_name / str(fold)
    wanted = _wanted(fold)
    return folder if all((folder / remote.filename).is_file() for remote in wanted.values()) else None


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True,
          fold: int = DEFAULT_FOLD) -> Path:
    """Return the folder holding fold ``fold``'s ``train.tsv`` and ``test.tsv``, downloading missing files.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`; files go to ``root/gad-biobert/<fold>/``
    and are checked against their SHA256. Files already there are used as they are (``root``
    may be a read-only mirror); one whose checksum differs is accepted if it reads as a GAD
    file (one line says so), otherwise ValueError.

    Raises:
        DataUnavailableError: a file is missing and may not, or cannot, be downloaded.
        ValueError: a file here is not a GAD file, or a download had the wrong checksum.
    """
    root = Path(root if root is not None else data_dir())
    wanted = _wanted(fold)
    folder = root / FOLDER / str(fold)
    for part, remote in wanted.items():
        path = folder / remote.filename
        if not path.is_file():
            how = (f"{by_hand(remote, folder)}\n"
                   f"  Outside a notebook, the stand-in is dlmed.datasets.gad.make_synthetic().")
            try:
                download(NAME, remote, folder, how, allow_download, show_progress)
            except Exception:
                for empty in (folder, folder.parent):  # leave no empty folders behind
                    if empty.is_dir() and not any(empty.iterdir()):
                        empty.rmdir()
                raise
        elif not matches(remote, path):
            read(path, part)  # raises ValueError naming the problem
            print(f"dlmed: {path} differs from the published checksum but reads as a GAD {part} file; using it.")
    return folder


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True,
         fold: int = DEFAULT_FOLD) -> dict:
    """Return ``{"train": table, "test": table}`` of fold ``fold`` (see :func:`read`), as published (duplicates kept)."""
    folder = fetch(root, allow_download, show_progress, fold)
    return {part: read(folder / f"{part}.tsv", part) for part in _PARTS}


# --- the stand-in ------------------------------------------------------------------------

_POSITIVE = (
    "the {v} polymorphism of {g} was associated with {d} in {p} patients .",
    "{g} variants increase the risk of {d} among {p} subjects .",
    "carriers of the {v} allele of {g} had a higher risk of {d} .",
    "a significant association between {g} and {d} was found in {p} cases .",
    "{g} genotype was linked to susceptibility to {d} .",
)
_NEGATIVE = (
    "no association between the {v} polymorphism of {g} and {d} was found in {p} patients .",
    "{g} variants did not affect the risk of {d} among {p} subjects .",
    "the {v} allele of {g} was not associated with {d} .",
    "we found no evidence that {g} contributes to {d} in {p} cases .",
    "{g} genotype frequencies did not differ between {d} patients and controls .",
)
_FILLERS = {"v": ("C677T", "R72P", "A1298C", "G308A", "I105V", "insertion", "deletion", "promoter"),
            "p": ("Chinese", "Caucasian", "Japanese", "elderly", "young", "female", "male", "Korean")}


def _synthetic_rows(count: int, rng) -> list:
    rows = []
    for index in range(count):
        label = index % 2
        template = (_POSITIVE if label else _NEGATIVE)[rng.integers(5)]
        sentence = template.format(g=GENE, d=DISEASE, **{key: values[rng.integers(len(values))]
                                                          for key, values in _FILLERS.items()})
        rows.append((sentence, label))
    return rows


def make_synthetic(root: PathLike, num_train: int = 48, num_test: int = 24, seed: int = 0) -> Path:
    """Write a synthetic stand-in into ``root/gad-synthetic`` (one fold, ``1/``) and return that folder.

    ``train.tsv`` and ``test.tsv`` in the real files' formats, with ``num_train`` and
    ``num_test`` MADE-UP sentences (templates with ``@GENE$`` and ``@DISEASE$``), half labelled
    1 ("associated" templates) and half 0 ("no association" templates): a rule, NOT the
    Genetic Association Database. Marked synthetic; the same settings give the same files and
    a stand-in made with them is reused.
    """
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 4:
            raise ValueError(f"{name} must be an integer of at least 4, got {value!r}")
    settings = {"synthetic": True, "dataset": NAME, "num_train": num_train, "num_test": num_test, "seed": seed}
    final = Path(root) / SYNTHETIC_FOLDER

    def is_wanted(folder: Path) -> bool:
        return stand_in_settings(folder) == settings and find(folder.parent, 1, folder.name) is not None

    def write(folder: Path) -> None:
        rng = np.random.default_rng(seed)
        fold = folder / "1"
        fold.mkdir()
        train = _synthetic_rows(num_train, rng)
        test = _synthetic_rows(num_test, rng)
        (fold / "train.tsv").write_text("".join(f"{s}\t{label}\n" for s, label in train), encoding="utf-8")
        (fold / "test.tsv").write_text("index\tsentence\tlabel\n" + "".join(
            f"{i}\t{s}\t{label}\n" for i, (s, label) in enumerate(test)), encoding="utf-8")
        (folder / "README.txt").write_text(
            "SYNTHETIC stand-in for GAD (BioBERT folds), made by dlmed.datasets.gad.make_synthetic.\n"
            "The sentences are MADE UP from templates; their labels follow the template, not any database.\n")
        write_marker(folder, settings)

    return build_folder(final, is_wanted, write)


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False,
                 fold: int = DEFAULT_FOLD) -> dict:
    """Return ``{"train": table, "test": table}`` a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    Each table has columns ``sentence`` and ``label`` (see :func:`read`), duplicates as
    published; ``table.attrs["synthetic"]`` says whether it is the stand-in.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the stand-in (800 training,
      200 test sentences in lab mode), for offline practice.
    - Grading mode: the real fold if it is in ``root`` (read-only is fine), cut to at most
      :data:`GRADING_PER_LABEL` sentences of each label; else the small stand-in. Never
      downloads. Prints one line saying which data is used.
    - Lab mode: the real fold, downloaded if needed and ``config.allow_download``; never a
      stand-in by itself (:class:`~dlmed.datasets.DataUnavailableError` says what to do).

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    remotes(fold)  # an unknown fold fails here
    tables = None
    if not config.grading:
        if synthetic:
            folder = make_synthetic(root, num_train=800, num_test=200) / "1"
            tables = {part: read(folder / f"{part}.tsv", part) for part in _PARTS}
        else:
            tables = load(root, allow_download=config.allow_download, show_progress=config.show_progress, fold=fold)
        for table in tables.values():
            table.attrs["synthetic"] = synthetic
        return tables
    reason = "as asked" if synthetic else f"fold {fold} is not in {root / FOLDER}"
    folder = None if synthetic else find(root, fold)
    if folder is not None:
        try:
            tables = {part: subsample_per_label(read(folder / f"{part}.tsv", part), dict.fromkeys((0, 1), GRADING_PER_LABEL[part]))
                      for part in _PARTS}
            print(f"dlmed: using the real {NAME} fold {fold} in {folder} (subsampled for grading)")
        except ValueError as error:
            reason = str(error)  # grading must not fail because of a damaged data file
            tables = None
    if tables is None:
        folder = make_synthetic(root) / "1"
        tables = {part: read(folder / f"{part}.tsv", part) for part in _PARTS}
        print(f"dlmed: using the SYNTHETIC stand-in (made-up sentences) in {folder.parent} ({reason})")
    for table in tables.values():
        table.attrs["synthetic"] = is_synthetic(folder.parent)
    return tables
