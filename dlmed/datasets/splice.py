"""UCI splice junctions (primate DNA): download, checksum, reader, stand-in.

The UCI Machine Learning Repository's "Molecular Biology (Splice-junction Gene Sequences)"
(dataset 69; CC BY 4.0, DOI 10.24432/C5M888; donors G. Towell, M. Noordewier, J. Shavlik),
file ``splice.data``: 3,190 sequences of 60 nucleotides, positions -30..+30 around a
possible splice site in primate genes, each labelled ``EI`` (exon -> intron boundary, a
donor site), ``IE`` (intron -> exon, an acceptor site) or ``N`` (neither). Each line is
``class, instance name, sequence`` with padding spaces. Besides A, C, G and T, 15 sequences
hold IUPAC ambiguity codes (N, D, R, S). The file repeats sequences: only 3,005 are distinct,
and one appears with two labels, so deduplicate before splitting.

Where it comes from: UCI's address (:data:`REMOTE`). The checksum is that of the course's
offline mirror, assembled from two byte-identical public copies and not compared with UCI's
own download; a copy whose checksum differs is accepted once its content reads as the data set.
Without the data :func:`make_synthetic` writes a small stand-in: random sequences with the
splice consensus planted by a rule (GT after the exon for EI, AG before it for IE), NOT real
genes. Nothing happens on import.
"""

from pathlib import Path
from typing import Optional

import numpy as np

from dlmed.datasets import PathLike, data_dir, is_synthetic, stand_in_settings
from dlmed.datasets._download import Remote, by_hand, download, file_checksum, matches
from dlmed.datasets._standin import build_folder, subsample_per_label, write_marker

NAME = "UCI splice junctions"
#: The three classes, in the order the lab numbers them.
CLASSES = ("EI", "IE", "N")
#: Length of every sequence (positions -30..+30; there is no position 0).
LENGTH = 60
#: Where the file is published, its checksum (of the course's mirror copy) and its name here.
REMOTE = Remote(url="https://archive.ics.uci.edu/ml/machine-learning-databases/molecular-biology/"
                    "splice-junction-gene-sequences/splice.data",
                checksum="sha256:ebbae10c85d3c285e2a2489a37e42bc2ee8d91d15005e391a9962fa3389a114f",
                filename="uci-splice.data")
#: UCI ``splice.names``: error rates in % (Neither, EI, IE), 10-fold cross-validation on 1,000
#: of the examples (Noordewier, Towell & Shavlik, NIPS 3, 1991), as in the course's data README.
PUBLISHED_ERROR_RATES = {"KBANN": (4.62, 7.56, 8.47), "BACKPROP": (5.29, 5.74, 10.75), "PEBLS": (6.86, 8.18, 7.55)}
#: The folder :func:`make_synthetic` writes, and the file in it.
SYNTHETIC_FOLDER = "splice-synthetic"
SYNTHETIC_FILE = "synthetic-splice.data"
#: Grading mode keeps at most this many sequences of each class (a fixed random choice).
GRADING_PER_CLASS = 24
_LETTERS = set("ACGTNDRSYKMWBHV")


def read(path: PathLike):
    """Read a splice file into a table with columns ``label`` (str: EI, IE or N), ``name`` and ``sequence``.

    Fields are stripped and sequences upper-cased; rows keep the file's order (duplicates too).

    Raises:
        ValueError: the file is not in the data set's format (three comma-separated fields,
            known classes, 60 letters of A, C, G, T or IUPAC codes); the message says what.
    """
    import pandas as pd

    path = Path(path)
    rows, problem = [], None
    try:
        for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
            if not line.strip():
                continue
            fields = [field.strip() for field in line.split(",")]
            if len(fields) != 3:
                problem = f"line {number} has {len(fields)} fields, not 3 (class, name, sequence)"
                break
            label, name, sequence = fields[0], fields[1], fields[2].upper()
            if label not in CLASSES:
                problem = f"line {number} has the class {label[:20]!r}, not one of {CLASSES}"
                break
            if len(sequence) != LENGTH or not set(sequence) <= _LETTERS:
                problem = f"line {number}'s sequence is not {LENGTH} nucleotide letters"
                break
            rows.append((label, name, sequence))
        if problem is None and not rows:
            problem = "it holds no sequences"
    except (OSError, UnicodeDecodeError) as error:
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        raise ValueError(f"{path} is not the {NAME} file: {problem}. Delete it and run again to download it, "
                         f"or copy a good copy there (checksum: dlmed.datasets.splice.REMOTE).")
    return pd.DataFrame(rows, columns=["label", "name", "sequence"])


def find(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return the path of ``uci-splice.data`` if it is in the data folder, else ``None``.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. Nothing is checked, downloaded or created.
    """
    root = Path(root if root is not None else data_dir())
    path = root / REMOTE.filename
    return path if path.is_file() else None


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> Path:
    """Return the path of ``uci-splice.data``, downloading it if needed.

    A file already in ``root`` (default :func:`~dlmed.datasets.data_dir`) is used as it is,
    so ``root`` may be a read-only mirror; one whose checksum differs is accepted if its
    content reads as the data set (one line says so), otherwise ValueError.

    Raises:
        DataUnavailableError: the file is not here and may not, or cannot, be downloaded.
        ValueError: the file here is not the data set, or a download had the wrong checksum.
    """
    root = Path(root if root is not None else data_dir())
    path = find(root)
    if path is None:
        how = f"{by_hand(REMOTE, root)}\n  Outside a notebook, the stand-in is dlmed.datasets.splice.make_synthetic()."
        return download(NAME, REMOTE, root, how, allow_download, show_progress)
    if not matches(REMOTE, path):
        read(path)  # raises ValueError naming the problem
        print(f"dlmed: {path} has SHA256 {file_checksum(path, 'sha256')}, not the course copy's "
              f"{REMOTE.digest}, but reads as the {NAME} file; using it.")
    return path


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True):
    """Return the data set as a table (columns ``label``, ``name``, ``sequence``; see :func:`read`)."""
    return read(fetch(root, allow_download, show_progress))


# --- the stand-in ------------------------------------------------------------------------

def _synthetic_sequence(label: str, rng) -> str:
    bases = np.array(list("ACGT"))
    sequence = list(bases[rng.integers(4, size=LENGTH)])
    if label == "EI":  # exon ...AG | GTRAGT intron: the donor consensus
        sequence[28:36] = list("AG") + list("GT") + [str(rng.choice(list("AG")))] + list("AGT")
    elif label == "IE":  # intron ...pyrimidines ... AG | G exon: the acceptor consensus
        sequence[14:28] = list(rng.choice(list("CT"), size=14))
        sequence[28:31] = list("AGG")
    else:  # neither: make sure no consensus sits at the site by chance
        sequence[30] = "C"
        sequence[29] = "T"
    return "".join(sequence)


def make_synthetic(root: PathLike, per_class: int = 20, seed: int = 0) -> Path:
    """Write a synthetic stand-in into ``root/splice-synthetic`` and return that folder.

    :data:`SYNTHETIC_FILE` in the real file's format holds ``per_class`` sequences of each
    class plus a few of the real file's quirks (repeated sequences, one with two labels, an
    ambiguity code). The sequences are random with the consensus planted by a rule (GT at
    positions 31-32 for EI, AG at 29-30 for IE), NOT genes. Marked synthetic; the same
    settings give the same file and a stand-in made with them is reused.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 4:
        raise ValueError(f"per_class must be an integer of at least 4, got {per_class!r}")
    settings = {"synthetic": True, "dataset": NAME, "per_class": per_class, "seed": seed}
    final = Path(root) / SYNTHETIC_FOLDER

    def is_wanted(folder: Path) -> bool:
        return stand_in_settings(folder) == settings and (folder / SYNTHETIC_FILE).is_file()

    def write(folder: Path) -> None:
        rng = np.random.default_rng(seed)
        rows = [(label, _synthetic_sequence(label, rng)) for _ in range(per_class) for label in CLASSES]
        rows.append(rows[0])  # a repeat, as in the real file
        rows.append(("N", rows[1][1]))  # the same sequence with another label
        rows.append((rows[2][0], rows[2][1][:5] + "N" + rows[2][1][6:]))  # an ambiguity code
        lines = [f"{label},{' ' * 8}SYN-{index:04d},{' ' * 8}{sequence}" for index, (label, sequence) in enumerate(rows)]
        (folder / SYNTHETIC_FILE).write_text("\n".join(lines) + "\n", encoding="ascii")
        (folder / "README.txt").write_text(
            "SYNTHETIC stand-in for the UCI splice-junction data, made by dlmed.datasets.splice.make_synthetic.\n"
            "Random sequences with the splice consensus planted by a rule; NOT real genes.\n")
        write_marker(folder, settings)

    return build_folder(final, is_wanted, write)


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False):
    """Return the sequences a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    A table as from :func:`read` (duplicates as in the file); ``table.attrs["synthetic"]``
    says whether it is the stand-in.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the stand-in (300 per class
      in lab mode), for offline practice.
    - Grading mode: the real file if it is in ``root`` (read-only is fine), cut to at most
      :data:`GRADING_PER_CLASS` sequences of each class; else the small stand-in. Never
      downloads. Prints one line saying which data is used.
    - Lab mode: the real file, downloaded if needed and ``config.allow_download``; never a
      stand-in by itself (:class:`~dlmed.datasets.DataUnavailableError` says what to do).

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    table = None
    if not config.grading:
        if synthetic:
            table = read(make_synthetic(root, per_class=300) / SYNTHETIC_FILE)
        else:
            table = load(root, allow_download=config.allow_download, show_progress=config.show_progress)
        table.attrs["synthetic"] = synthetic
        return table
    reason = "as asked" if synthetic else f"{REMOTE.filename} is not in {root}"
    path = None if synthetic else find(root)
    if path is not None:
        try:
            table = subsample_per_label(read(path), dict.fromkeys(CLASSES, GRADING_PER_CLASS))
            print(f"dlmed: using the real {NAME} file {path} (subsampled for grading)")
        except ValueError as error:
            reason = str(error)  # grading must not fail because of a damaged data file
    if table is None:
        folder = make_synthetic(root)
        table = read(folder / SYNTHETIC_FILE)
        print(f"dlmed: using the SYNTHETIC stand-in (random sequences, planted consensus) in {folder} ({reason})")
        table.attrs["synthetic"] = is_synthetic(folder)
    else:
        table.attrs["synthetic"] = False
    return table
