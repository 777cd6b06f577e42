"""ChEMBL actives versus decoys (Koutsoukas et al. 2017): download, checksum, cache, stand-in.

Koutsoukas, Monaghan, Li & Huan, "Deep-learning: investigating deep neural networks
hyper-parameters and comparison of performance to shallow methods for modeling bioactivity
data", J Cheminform 9:42 (2017), doi 10.1186/s13321-017-0226-y, published seven activity-class
sets drawn from ChEMBL as its Additional file 1 (``13321_2017_226_MOESM1_ESM.zip``, CC BY 4.0;
the compounds come from ChEMBL, CC BY-SA 3.0). Each set is one CSV file with the quoted header
``"CID","SMILES","Activity"``: a ChEMBL compound id, a SMILES string, and 1 = active against
the target or 0 = decoy (other ChEMBL compounds, 10 per active).

Where the files come from: the article's archive is the origin, but its checksum could not
be checked here, so each set is downloaded on its own from a byte-identical copy pinned to
one commit of the GitHub repository kjetildyrland/Drug-Discovery (files added 2022-03-17 and
never changed), whose SHA256 checksums are listed in :data:`TARGETS`. A file is looked for in
the data folder (:func:`dlmed.datasets.data_dir`) as ``CHEMBL<target>_cl.csv`` and in the
sub-folder ``chembl-koutsoukas2017/`` (the layout of the course's offline mirror).

Without the data (offline, or while a notebook is graded without it) :func:`make_synthetic`
writes a small stand-in: 51 well-known drugs (real molecules, real SMILES) whose "activity"
is MADE UP by a rule (1 = has a primary or secondary sulfonamide, the group carbonic anhydrase
inhibitors share), NOT measured bioactivity. Nothing happens on import.
"""

import csv
import io
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from dlmed.datasets import PathLike, data_dir, is_synthetic
from dlmed.datasets._download import Remote, by_hand, download, file_checksum, matches
from dlmed.datasets._standin import build_folder, subsample_per_label, write_marker

NAME = "ChEMBL actives vs decoys (Koutsoukas 2017)"

#: The seven sets: {target: (SHA256 of CHEMBL<target>_cl.csv, molecules, what the target is)}.
TARGETS = {
    "CHEMBL219": ("500ca9eb673367562fd5c9adf68f6b9b509fd24291f50496f471fb1417e303bd", 5566, "dopamine D4 receptor"),
    "CHEMBL1978": ("31653a2b663020979bec5f8f00330b9d4a86d6196b7771bb4e7708cc65ef217f", 6831, "aromatase (CYP19A1)"),
    "CHEMBL240": ("26a3052c0c8cc05aa32da39630dbcc1c64e61cd375601c52baafdaed91bed0e6", 7700, "hERG"),
    "CHEMBL301": ("6c2d9cc86066eac456a2a8d9fe0b77040587b60d1c885edcf7b4170a796b6b26", 7755, "CDK2"),
    "CHEMBL244": ("e07386fb7eb6839ee07dc43c095f7137a5bc08c3a2ac05cab5f3192316e335b4", 12584, "coagulation factor X"),
    "CHEMBL205": ("01b980b47efd93d79423ed025da6c9b1603a550c4a3726dcefdc364949d47c7b", 17941, "carbonic anhydrase II"),
    "CHEMBL218": ("8f2f35ff02d009f035e49a73aa413ac7b8e15650a9bae3bd75152e7e3f651419", 20924, "cannabinoid CB1 receptor"),
}
#: Best test MCC per set as the seed notebook quotes Koutsoukas et al. 2017 (tuned DNN on
#: 1024-bit ECFP4, random split). Read from the seed notebook, not checked against the paper.
PUBLISHED_MCC = {
    "CHEMBL205": 0.862, "CHEMBL301": 0.926, "CHEMBL240": 0.884, "CHEMBL219": 0.887,
    "CHEMBL244": 0.983, "CHEMBL218": 0.941, "CHEMBL1978": 0.904,
}
#: The set the lab uses unless told otherwise: the smallest (5,566 molecules), fit for a CPU.
DEFAULT_TARGET = "CHEMBL219"
#: The sub-folder of the data folder that may hold the files (the offline mirror's layout).
MIRROR_FOLDER = "chembl-koutsoukas2017"
#: The folder :func:`make_synthetic` writes, and the CSV file in it.
SYNTHETIC_FOLDER = "chembl-synthetic"
SYNTHETIC_FILE = "synthetic_cl.csv"
#: Grading mode keeps at most this many actives and decoys of the real set (chosen at random).
GRADING_ACTIVES, GRADING_DECOYS = 8, 32

_REPOSITORY = ("https://raw.githubusercontent.com/kjetildyrland/Drug-Discovery/"
               "537d1e55696de6520197e5d99befcb7e1a0f27e4/dataset/13321_2017_226_MOESM1_ESM")
_HEADER = ["CID", "SMILES", "Activity"]


def _remote_for(target: str) -> Remote:
    digest = TARGETS[target][0]
    return Remote(url=f"{_REPOSITORY}/{target}/{target}_cl.csv", checksum=f"sha256:{digest}",
                  filename=f"{target}_cl.csv")


#: The default set's file: address, checksum and name in the data folder.
REMOTE = _remote_for(DEFAULT_TARGET)


def remote(target: str = DEFAULT_TARGET) -> Remote:
    """Return where the set ``target`` (e.g. ``"CHEMBL219"``) is downloaded from and its checksum.

    Raises:
        ValueError: ``target`` is not one of the seven sets (:data:`TARGETS`).
    """
    if target not in TARGETS:
        raise ValueError(f"Unknown ChEMBL set {target!r}; the sets are {', '.join(TARGETS)}")
    return REMOTE if target == DEFAULT_TARGET else _remote_for(target)


# --- the stand-in's molecules: (name, SMILES, made-up label) --------------------------------

#: Well-known drugs; label 1 = has a primary or secondary sulfonamide (a rule, NOT bioactivity).
STAND_IN_MOLECULES = (
    ("acetazolamide", "CC(=O)Nc1nnc(s1)S(N)(=O)=O", 1),
    ("methazolamide", "CC(=O)N=c1sc(S(N)(=O)=O)nn1C", 1),
    ("sulfanilamide", "Nc1ccc(cc1)S(N)(=O)=O", 1),
    ("sulfamethoxazole", "Cc1cc(NS(=O)(=O)c2ccc(N)cc2)no1", 1),
    ("sulfadiazine", "Nc1ccc(cc1)S(=O)(=O)Nc1ncccn1", 1),
    ("hydrochlorothiazide", "NS(=O)(=O)c1cc2c(cc1Cl)NCNS2(=O)=O", 1),
    ("furosemide", "NS(=O)(=O)c1cc(C(=O)O)c(NCc2ccco2)cc1Cl", 1),
    ("celecoxib", "Cc1ccc(cc1)-c1cc(nn1-c1ccc(cc1)S(N)(=O)=O)C(F)(F)F", 1),
    ("dorzolamide", "CCN[C@H]1C[C@H](C)S(=O)(=O)c2sc(cc12)S(N)(=O)=O", 1),
    ("zonisamide", "NS(=O)(=O)Cc1noc2ccccc12", 1),
    ("topiramate", "CC1(C)O[C@@H]2CO[C@@]3(COS(N)(=O)=O)OC(C)(C)O[C@H]3[C@@H]2O1", 1),
    ("indapamide", "CC1Cc2ccccc2N1NC(=O)c1ccc(Cl)c(c1)S(N)(=O)=O", 1),
    ("chlorthalidone", "NS(=O)(=O)c1cc(ccc1Cl)C1(O)NC(=O)c2ccccc12", 1),
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O", 0),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", 0),
    ("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", 0),
    ("paracetamol", "CC(=O)Nc1ccc(O)cc1", 0),
    ("naproxen", "COc1ccc2cc(ccc2c1)[C@H](C)C(=O)O", 0),
    ("diclofenac", "OC(=O)Cc1ccccc1Nc1c(Cl)cccc1Cl", 0),
    ("metformin", "CN(C)C(=N)N=C(N)N", 0),
    ("nicotine", "CN1CCC[C@H]1c1cccnc1", 0),
    ("diazepam", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12", 0),
    ("propranolol", "CC(C)NCC(O)COc1cccc2ccccc12", 0),
    ("atenolol", "CC(C)NCC(O)COc1ccc(CC(N)=O)cc1", 0),
    ("lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C", 0),
    ("warfarin", "CC(=O)CC(c1ccccc1)c1c(O)c2ccccc2oc1=O", 0),
    ("haloperidol", "OC1(CCN(CCCC(=O)c2ccc(F)cc2)CC1)c1ccc(Cl)cc1", 0),
    ("fluoxetine", "CNCCC(Oc1ccc(cc1)C(F)(F)F)c1ccccc1", 0),
    ("carbamazepine", "NC(=O)N1c2ccccc2C=Cc2ccccc12", 0),
    ("theophylline", "Cn1c2nc[nH]c2c(=O)n(C)c1=O", 0),
    ("salbutamol", "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1", 0),
    ("ciprofloxacin", "OC(=O)c1cn(C2CC2)c2cc(N3CCNCC3)c(F)cc2c1=O", 0),
    ("metoprolol", "COCCc1ccc(OCC(O)CNC(C)C)cc1", 0),
    ("omeprazole", "COc1ccc2[nH]c(nc2c1)S(=O)Cc1ncc(C)c(OC)c1C", 0),
    ("ketoprofen", "CC(C(=O)O)c1cccc(c1)C(=O)c1ccccc1", 0),
    ("probenecid", "CCCN(CCC)S(=O)(=O)c1ccc(cc1)C(=O)O", 0),
    ("chlorpromazine", "CN(C)CCCN1c2ccccc2Sc2ccc(Cl)cc12", 0),
    ("imipramine", "CN(C)CCCN1c2ccccc2CCc2ccccc12", 0),
    ("amlodipine", "CCOC(=O)C1=C(COCCN)NC(C)=C(C1c1ccccc1Cl)C(=O)OC", 0),
    ("losartan", "CCCCc1nc(Cl)c(CO)n1Cc1ccc(cc1)-c1ccccc1-c1nn[nH]n1", 0),
    ("sildenafil", "CCCc1nn(C)c2c1nc([nH]c2=O)-c1cc(ccc1OCC)S(=O)(=O)N1CCN(C)CC1", 0),
    ("tamoxifen", "CC/C(=C(\\c1ccccc1)c1ccc(OCCN(C)C)cc1)c1ccccc1", 0),
    ("testosterone", "C[C@]12CC[C@H]3[C@@H](CCC4=CC(=O)CC[C@@]34C)[C@@H]1CC[C@@H]2O", 0),
    ("morphine", "CN1CC[C@]23c4c5ccc(O)c4O[C@H]2[C@@H](O)C=C[C@H]3[C@H]1C5", 0),
    ("quinine", "COc1ccc2nccc([C@@H](O)[C@@H]3C[C@@H]4CCN3C[C@@H]4C=C)c2c1", 0),
    ("benzylpenicillin", "CC1(C)S[C@@H]2[C@H](NC(=O)Cc3ccccc3)C(=O)N2[C@H]1C(=O)O", 0),
    ("glucose", "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O", 0),
    ("valproic acid", "CCCC(CCC)C(=O)O", 0),
    ("gabapentin", "NCC1(CC(=O)O)CCCCC1", 0),
    ("letrozole", "N#Cc1ccc(cc1)C(c1ccc(cc1)C#N)n1cncn1", 0),
    ("anastrozole", "CC(C)(C#N)c1cc(cc(c1)C(C)(C)C#N)Cn1cncn1", 0),
)


# --- reading ---------------------------------------------------------------------------


def _content_problem(table: pd.DataFrame) -> Optional[str]:
    """Say what is wrong with a would-be set (columns already renamed), or None if nothing."""
    if len(table) == 0:
        return "it holds no molecules"
    if table["smiles"].isna().any() or (table["smiles"].astype(str).str.strip() == "").any():
        return "some SMILES are empty"
    unexpected = sorted(set(table["label"].tolist()) - {0, 1})
    if unexpected:
        return f"the Activity column holds {unexpected}, but the only values are 0 (decoy) and 1 (active)"
    if set(table["label"].tolist()) != {0, 1}:
        return "it does not hold both actives (1) and decoys (0)"
    return None


def read(path: PathLike) -> pd.DataFrame:
    """Read a set's CSV file into a table with columns ``cid`` (str), ``smiles`` (str), ``label`` (int64).

    ``label`` is 1 for an active and 0 for a decoy; the rows keep the file's order.

    Raises:
        ValueError: the file is not a valid set (header ``"CID","SMILES","Activity"``, labels
            0/1, both present, no empty SMILES); the message names the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        header = next(csv.reader(io.StringIO(text)), [])
        if header != _HEADER:
            raise ValueError(f"its header is {header!r}, not {_HEADER!r}")
        raw = pd.read_csv(io.StringIO(text), dtype={"CID": str, "SMILES": str})
        activity = pd.to_numeric(raw["Activity"], errors="raise")
        if not np.all(np.asarray(activity) == np.round(np.asarray(activity))):
            raise ValueError("the Activity column holds values that are not 0 or 1")
        table = pd.DataFrame({"cid": raw["CID"].astype(str), "smiles": raw["SMILES"],
                              "label": np.asarray(activity).astype(np.int64)})
        problem = _content_problem(table)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, pd.errors.ParserError) as error:
        problem = str(error)
    if problem is not None:
        raise ValueError(
            f"{path} is not a valid {NAME} set: {problem}. Delete it and run again to download it, "
            f"or copy a good copy there (see dlmed.datasets.chembl.TARGETS for the checksums)."
        )
    return table


def find(root: Optional[PathLike] = None, target: str = DEFAULT_TARGET) -> Optional[Path]:
    """Return the path of the set ``target`` if it is in the data folder, else ``None``.

    Looks for ``root/CHEMBL<target>_cl.csv``, then ``root/chembl-koutsoukas2017/CHEMBL<target>_cl.csv``
    (the offline mirror's layout). Its content is not checked here (:func:`fetch` does).
    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. Nothing is downloaded or created.
    """
    root = Path(root if root is not None else data_dir())
    filename = remote(target).filename
    for path in (root / filename, root / MIRROR_FOLDER / filename):
        if path.is_file():
            return path
    return None


def _how_to_get(target: str, root: Path) -> str:
    return (f"{by_hand(remote(target), root)}\n"
            f"  Outside a notebook, the stand-in is dlmed.datasets.chembl.make_synthetic().")


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True,
          target: str = DEFAULT_TARGET) -> Path:
    """Return the path of the set ``target``'s CSV file, downloading it if needed.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. A file found by :func:`find` with the
    published checksum is used as it is; one with another checksum is used if its content is
    a valid set (one line says so), else ValueError. Otherwise the file is downloaded from
    :func:`remote` when ``allow_download`` and checked against its SHA256. Nothing is written
    unless a download is needed, so ``root`` may be a read-only mirror.

    Raises:
        DataUnavailableError: the file is not here and may not, or cannot, be downloaded.
        ValueError: the file here is not a valid set, or a download had the wrong checksum.
    """
    root = Path(root if root is not None else data_dir())
    where = remote(target)
    path = find(root, target)
    if path is None:
        return download(NAME, where, root, _how_to_get(target, root), allow_download, show_progress)
    if not matches(where, path):
        read(path)  # raises ValueError naming the problem
        print(f"dlmed: {path} has {where.algorithm.upper()} {file_checksum(path, where.algorithm)}, not the "
              f"published file's {where.digest}, but its content is a valid set; using it.")
    return path


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True,
         target: str = DEFAULT_TARGET) -> pd.DataFrame:
    """Return the set ``target`` as a table (columns ``cid``, ``smiles``, ``label``; see :func:`read`)."""
    return read(fetch(root, allow_download, show_progress, target))


# --- the stand-in ------------------------------------------------------------------------


def _stand_in_csv() -> str:
    lines = ['"CID","SMILES","Activity"']
    for index, (_, smiles, label) in enumerate(STAND_IN_MOLECULES):
        lines.append(f'"SYNTHETIC{index:03d}","{smiles}",{label}')
    return "\n".join(lines) + "\n"


_README = """SYNTHETIC stand-in for the ChEMBL actives-vs-decoys sets, written by dlmed.

The molecules are real, well-known drugs, but their "Activity" is MADE UP by a rule
(1 = the molecule has a primary or secondary sulfonamide group), NOT measured bioactivity.
It lets the notebook run offline and be graded quickly. The real sets (Koutsoukas et al.,
J Cheminform 2017) are downloaded by dlmed.datasets.chembl.fetch().
"""


def _is_current_stand_in(folder: Path) -> bool:
    csv_path = folder / SYNTHETIC_FILE
    return (is_synthetic(folder) and csv_path.is_file()
            and csv_path.read_text(encoding="utf-8") == _stand_in_csv())


def make_synthetic(root: PathLike, seed: int = 0) -> Path:
    """Write the synthetic stand-in into ``root/chembl-synthetic`` and return that folder.

    The folder holds :data:`SYNTHETIC_FILE` in the real files' format (header
    ``"CID","SMILES","Activity"``) with the 51 molecules of :data:`STAND_IN_MOLECULES` (13
    "actives"), a README.txt and the marker that says it is synthetic. The labels are MADE UP
    (a sulfonamide rule), NOT bioactivity. ``seed`` is recorded only: the content is fixed.
    A current stand-in is left alone; the folder appears complete or not at all.
    """
    final = Path(root) / SYNTHETIC_FOLDER

    def write(folder: Path) -> None:
        (folder / SYNTHETIC_FILE).write_text(_stand_in_csv(), encoding="utf-8")
        (folder / "README.txt").write_text(_README, encoding="utf-8")
        write_marker(folder, {"synthetic": True, "dataset": NAME, "molecules": len(STAND_IN_MOLECULES),
                              "seed": seed})

    return build_folder(final, _is_current_stand_in, write)


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False,
                 target: str = DEFAULT_TARGET) -> pd.DataFrame:
    """Return the molecules a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    The result is a table with columns ``cid``, ``smiles`` and ``label`` (1 active, 0 decoy);
    ``table.attrs`` holds ``"target"``, ``"path"`` (the file read) and ``"synthetic"``.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the stand-in of
      :func:`make_synthetic` (51 drugs, made-up labels).
    - Grading mode: the real set if it is in ``root`` (read-only is fine), cut to at most
      :data:`GRADING_ACTIVES` actives and :data:`GRADING_DECOYS` decoys; else the stand-in.
      Never downloads. Prints one line saying which data is used.
    - Lab mode: the whole real set, downloaded if needed and ``config.allow_download``; if it
      cannot be had, :class:`~dlmed.datasets.DataUnavailableError` says what to do.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`; ``target`` is one of :data:`TARGETS`.
    """
    root = Path(root if root is not None else data_dir())
    remote(target)  # an unknown set fails here, with the list of sets
    table, path = None, None
    if synthetic:
        reason = "as asked"
    elif not config.grading:
        path = fetch(root, allow_download=config.allow_download, show_progress=config.show_progress, target=target)
        table = read(path)
    else:
        reason = f"{remote(target).filename} is not in {root}"
        path = find(root, target)
        if path is not None:
            try:
                table = subsample_per_label(read(path), {1: GRADING_ACTIVES, 0: GRADING_DECOYS})
                print(f"dlmed: using the real {NAME} set {target} in {path} (subsampled for grading)")
            except ValueError as error:
                reason = str(error)  # grading must not fail because of a damaged data file
    if table is None:
        path = make_synthetic(root) / SYNTHETIC_FILE
        table = read(path)
        if config.grading or synthetic:
            print(f"dlmed: using the SYNTHETIC stand-in (real drugs, MADE-UP labels) in {path.parent} ({reason})")
    table.attrs.update(target=target if not is_synthetic(path.parent) else "synthetic", path=str(path),
                       synthetic=is_synthetic(path.parent))
    return table
