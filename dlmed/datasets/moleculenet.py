"""ESOL, FreeSolv and Tox21 (MoleculeNet): download, checksums, readers and a synthetic stand-in.

Three small molecular property tables, one molecule (a SMILES string) per row:

- **ESOL** (Delaney 2004, as processed by MoleculeNet): 1,128 molecules and their measured
  water solubility, log10(mol/L) (column :data:`ESOL_TARGET`); regression.
- **FreeSolv** (Mobley & Guthrie 2014): 642 molecules and their experimental hydration free
  energy in kcal/mol (column :data:`FREESOLV_TARGET`); regression.
- **Tox21** (Tox21 Data Challenge 2014, as in MoleculeNet): 7,831 molecules and 12 binary
  toxicity assays (:data:`TOX21_TASKS`); an empty cell means "not measured" (NaN here).

Each table is one CSV file in the data folder (:func:`dlmed.datasets.data_dir`), named as in
the course's offline mirror (:data:`REMOTES`). Readers strip the SMILES (ESOL's file has a
trailing space in one) and return pandas DataFrames. While a notebook is graded,
:func:`for_notebook` uses a few dozen rows of the real tables when they are there, else a
small synthetic stand-in: real, simple molecules with MADE-UP property values. Nothing here
runs on import.
"""

from pathlib import Path
from typing import Optional

import numpy as np

from dlmed.datasets import PathLike, data_dir, stand_in_settings
from dlmed.datasets._download import Remote, by_hand, download, matches
from dlmed.datasets._standin import build_folder, write_marker

NAME = "MoleculeNet"
#: Column of ESOL's measured log solubility (log10 mol/L).
ESOL_TARGET = "measured log solubility in mols per litre"
#: Column of FreeSolv's experimental hydration free energy (kcal/mol).
FREESOLV_TARGET = "expt"
#: Tox21's twelve assays, in the file's column order.
TOX21_TASKS = ("NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
               "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53")
#: The three tables in the order :func:`load` returns them.
TABLES = ("esol", "freesolv", "tox21")
#: Where each table is published and its checksum. ESOL and FreeSolv: DeepChem's MoleculeNet
#: files; the checksums are those of the course's mirror copies, which were not compared
#: with DeepChem's download (a differing copy is accepted once its columns are checked).
#: Tox21: the AttentiveFP repository's copy at a fixed commit (DeepChem publishes it gzipped).
REMOTES = {
    "esol": Remote(url="https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/delaney-processed.csv",
                   checksum="sha256:e91dc7027cbaeec3872a45b2522c46676e483c123b1c97172839d858a2f26d9c",
                   filename="esol-delaney-processed.csv"),
    "freesolv": Remote(url="https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/SAMPL.csv",
                       checksum="sha256:a82c5da54d7615f02d77d327a602e152fb3ed604fc093c49fb806bff2fd2149d",
                       filename="freesolv-sampl.csv"),
    "tox21": Remote(url="https://raw.githubusercontent.com/OpenDrugAI/AttentiveFP/"
                        "dda6708342ffe255ded73c459ad64214a4615542/data/tox21.csv",
                    checksum="sha256:7d7e7facd853a63e79ddce4e9c3fcb7a0d83a1c300b603031c0f2c64fbe77761",
                    filename="tox21-moleculenet.csv"),
}
_COLUMNS = {"esol": ("smiles", ESOL_TARGET), "freesolv": ("smiles", FREESOLV_TARGET),
            "tox21": ("smiles", "mol_id", *TOX21_TASKS)}
#: The folder :func:`make_synthetic` writes the stand-in to.
SYNTHETIC_FOLDER = "moleculenet-synthetic"
#: While grading, each table is cut to at most this many molecules (a fixed random choice).
GRADING_MOLECULES = 40


def find(root: Optional[PathLike] = None) -> Optional[dict]:
    """Return ``{table: path}`` of the three CSV files if all are in ``root``, else ``None``.

    Contents are not checked here (:func:`fetch` does). ``root`` defaults to
    :func:`~dlmed.datasets.data_dir`. Nothing is downloaded or created.
    """
    root = Path(root if root is not None else data_dir())
    paths = {table: root / remote.filename for table, remote in REMOTES.items()}
    return paths if all(path.is_file() for path in paths.values()) else None


def _read_table(table: str, path: Path):
    """Read one table; strip SMILES; ValueError naming the problem if it is not the expected file."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:  # pandas' ParserError is a ValueError
        raise ValueError(f"{path} cannot be read as a CSV file ({type(error).__name__}: {error})") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in _COLUMNS[table] if column not in frame.columns]
    if missing or len(frame) == 0:
        raise ValueError(
            f"{path} is not the {table} table: it lacks the column(s) {missing} or has no rows. Delete it and "
            f"run again to download it from {REMOTES[table].url}.")
    frame["smiles"] = frame["smiles"].astype(str).str.strip()
    for column in _COLUMNS[table][1:]:
        if column != "mol_id":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")  # Tox21: empty -> NaN
    return frame


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> dict:
    """Return ``{table: path}`` of the ESOL, FreeSolv and Tox21 CSV files, downloading missing ones.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. A file already there is used as
    it is (so ``root`` may be a read-only mirror); one whose checksum differs is accepted
    when it has the table's columns (one line says so), otherwise ValueError. Missing files
    are downloaded from :data:`REMOTES` and checked.

    Raises:
        DataUnavailableError: a file is missing and may not, or cannot, be downloaded.
        ValueError: a file here is not the expected table, or a download had the wrong checksum.
    """
    root = Path(root if root is not None else data_dir())
    paths = {}
    for table, remote in REMOTES.items():
        path = root / remote.filename
        if not path.is_file():
            path = download(NAME, remote, root, by_hand(remote, root), allow_download, show_progress)
        elif not matches(remote, path):
            _read_table(table, path)  # raises ValueError naming the problem
            print(f"dlmed: {path} differs from the published checksum but has the {table} columns; using it.")
        paths[table] = path
    return paths


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> dict:
    """Return ``{"esol": DataFrame, "freesolv": DataFrame, "tox21": DataFrame}``.

    Every frame has a ``smiles`` column (stripped strings) and its targets as floats:
    :data:`ESOL_TARGET`, :data:`FREESOLV_TARGET`, or the twelve :data:`TOX21_TASKS` (NaN where
    an assay was not measured) and ``mol_id``. Other columns of the files are kept. Files
    are found or downloaded by :func:`fetch`, which takes the same arguments.
    """
    return {table: _read_table(table, path) for table, path in fetch(root, allow_download, show_progress).items()}


# --- The synthetic stand-in --------------------------------------------------------------

# Ring systems (scaffolds) with one attachment point "*", and substituents: simple, valid molecules.
_SCAFFOLDS = ("c1ccc(*)cc1", "c1ccc(*)nc1", "C1CCC(*)CC1", "c1ccc(*)s1", "c1ccc(*)o1", "c1ccc2cc(*)ccc2c1",
              "C1CCN(*)CC1", "c1cnc(*)nc1", "*")
_SUBSTITUENTS = ("C", "CC", "CCC", "O", "CO", "N", "Cl", "F", "C(=O)O", "OC", "C#N", "C(=O)N", "CCO", "Br",
                 "C(F)(F)F", "S(C)(=O)=O")
_CHAINS = ("C", "CC", "CCC", "CO", "N", "CCO")


def _synthetic_smiles(count: int, seed: int) -> list:
    """``count`` distinct SMILES: a scaffold with one or two substituents, or a chain."""
    rng = np.random.default_rng(seed)
    made, tries = [], 0
    while len(made) < count and tries < 100 * count:
        tries += 1
        scaffold = _SCAFFOLDS[rng.integers(len(_SCAFFOLDS))]
        first, second = (_SUBSTITUENTS[i] for i in rng.integers(len(_SUBSTITUENTS), size=2))
        # A chain may carry a second group; other groups end in an atom that takes no more bonds.
        group = f"{first}{second}" if first in _CHAINS and rng.random() < 0.5 else first
        smiles = f"C{group}" if scaffold == "*" else scaffold.replace("*", group)
        if smiles not in made:
            made.append(smiles)
    return made


def make_synthetic(root: PathLike, num_molecules: int = 48, seed: int = 0) -> Path:
    """Write a synthetic stand-in for the three tables into ``root`` and return its folder.

    The folder :data:`SYNTHETIC_FOLDER` holds ``esol-delaney-processed.csv``,
    ``freesolv-sampl.csv`` and ``tox21-moleculenet.csv`` with the real files' key columns and
    ``num_molecules`` simple, valid molecules (ring scaffolds with substituents), and is marked
    synthetic. The property values are MADE UP from the molecules' Crippen logP and size (so a
    model can learn something), NOT measurements. Tox21's labels have missing cells, as the
    real ones. The same settings give the same files; an existing stand-in made with them is reused.
    """
    if isinstance(num_molecules, bool) or not isinstance(num_molecules, int) or num_molecules < 8:
        raise ValueError(f"num_molecules must be an integer of at least 8, got {num_molecules!r}")
    settings = {"synthetic": True, "dataset": NAME, "num_molecules": num_molecules, "seed": seed}
    final = Path(root) / SYNTHETIC_FOLDER

    def is_wanted(folder: Path) -> bool:
        return stand_in_settings(folder) == settings and find(folder) is not None

    def write(folder: Path) -> None:
        import pandas as pd
        from rdkit import Chem
        from rdkit.Chem import Crippen

        smiles = _synthetic_smiles(num_molecules, seed)
        rng = np.random.default_rng(seed + 1)
        molecules = [Chem.MolFromSmiles(s) for s in smiles]
        logp = np.array([Crippen.MolLogP(m) for m in molecules])
        atoms = np.array([m.GetNumHeavyAtoms() for m in molecules], dtype=float)
        noise = rng.normal(0, 0.3, size=(3, len(smiles)))
        pd.DataFrame({"Compound ID": [f"synthetic-{i}" for i in range(len(smiles))],
                      ESOL_TARGET: np.round(0.5 - 1.0 * logp - 0.05 * atoms + noise[0], 3),
                      "smiles": smiles}).to_csv(folder / REMOTES["esol"].filename, index=False)
        pd.DataFrame({"iupac": [f"synthetic-{i}" for i in range(len(smiles))], "smiles": smiles,
                      FREESOLV_TARGET: np.round(-1.0 - 0.8 * (3 - logp) + noise[1], 3),
                      "calc": np.round(-1.0 - 0.8 * (3 - logp), 3)}).to_csv(folder / REMOTES["freesolv"].filename,
                                                                           index=False)
        tox = {}
        for index, task in enumerate(TOX21_TASKS):
            labels = ((logp + noise[2] * (index + 1) / 4) > np.median(logp)).astype(float)
            labels[rng.random(len(smiles)) < 0.17] = np.nan  # about 17% missing, as in Tox21
            tox[task] = labels
        frame = pd.DataFrame(tox)
        frame["mol_id"] = [f"SYN{i}" for i in range(len(smiles))]
        frame["smiles"] = smiles
        frame.to_csv(folder / REMOTES["tox21"].filename, index=False, float_format="%.0f")
        (folder / "README.txt").write_text(
            "SYNTHETIC stand-in for ESOL, FreeSolv and Tox21, made by dlmed.datasets.moleculenet.make_synthetic.\n"
            "The molecules are simple real structures; their property values are MADE UP, not measured.\n")
        write_marker(folder, settings)

    return build_folder(final, is_wanted, write)


def _subsample(frame, size: int, seed: int = 0):
    if len(frame) <= size:
        return frame.reset_index(drop=True)
    return frame.sample(n=size, random_state=seed).sort_index().reset_index(drop=True)


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False) -> dict:
    """Return the tables a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    The result is ``{"esol": DataFrame, "freesolv": DataFrame, "tox21": DataFrame}`` as from
    :func:`load`.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the synthetic stand-in made
      in ``root`` (300 molecules in lab mode), for offline practice.
    - Grading mode: the real files if they are in ``root`` (read-only is fine), else the
      stand-in; never downloads; each table cut to :data:`GRADING_MOLECULES` molecules.
      Prints one line saying which data is used.
    - Lab mode: the real tables, downloaded if needed and ``config.allow_download``; never a
      stand-in by itself (:class:`~dlmed.datasets.DataUnavailableError` says what to do).

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if not config.grading:
        if synthetic:
            return {table: _read_table(table, path) for table, path in
                    find(make_synthetic(root, num_molecules=300)).items()}
        return load(root, allow_download=config.allow_download, show_progress=config.show_progress)
    tables = None
    reason = "as asked" if synthetic else f"the files are not all in {root}"
    if not synthetic and find(root) is not None:
        try:
            tables = {table: _read_table(table, path) for table, path in find(root).items()}
            print(f"dlmed: using the real {NAME} tables (ESOL, FreeSolv, Tox21) in {root} (subsampled for grading)")
        except ValueError as error:
            reason = str(error)  # grading must not fail because of a damaged data file
    if tables is None:
        folder = make_synthetic(root)
        tables = {table: _read_table(table, path) for table, path in find(folder).items()}
        print(f"dlmed: using the SYNTHETIC stand-in (made-up property values) in {folder} ({reason})")
    return {table: _subsample(frame, GRADING_MOLECULES) for table, frame in tables.items()}
