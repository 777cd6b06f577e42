"""CiteSeer (Planetoid split): download, checksums, a safe reader, and a synthetic stand-in.

CiteSeer is a citation graph of 3,327 scientific publications (nodes) in six fields; an
edge means one paper cites the other (4,552 undirected edges), and each paper is described
by a 3,703-word binary bag of words. The Planetoid split (Yang, Cohen & Salakhutdinov 2016)
labels 120 training nodes (20 per class), 500 validation and 1,000 test nodes; 15 test-index
gaps are isolated papers without features or label. It is the split of Kipf & Welling's GCN
paper (ICLR 2017: 70.3% test accuracy).

The data are the eight files ``ind.citeseer.{x,y,tx,ty,allx,ally,graph,test.index}`` of the
planetoid repository (the ones PyTorch Geometric's ``Planetoid`` downloads), kept in the
folder :data:`FOLDER` of the data folder (:func:`dlmed.datasets.data_dir`). PyTorch
Geometric's own layout ``<root>/CiteSeer/raw/`` is found too. The files are Python pickles;
they are read with an unpickler that only admits the NumPy, SciPy-sparse and container
classes the format uses, so a tampered file cannot run code. :func:`load` returns a
``torch_geometric.data.Data`` built exactly as PyTorch Geometric builds it.

While a notebook is graded, :func:`for_notebook` uses a small synthetic stand-in graph when
the real files are not there; its "papers" are random bags of words, NOT real citations.
Nothing here runs on import.
"""

import collections
import itertools
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from dlmed.datasets import PathLike, data_dir, is_synthetic
from dlmed.datasets._download import Remote, download, matches
from dlmed.datasets._standin import build_folder, write_marker

NAME = "CiteSeer"
#: The folder of the data folder that holds the eight files (as in the offline mirror).
FOLDER = "planetoid-citeseer"
#: PyTorch Geometric's layout, found too: ``<root>/CiteSeer/raw/``.
PYG_FOLDER = ("CiteSeer", "raw")
#: The planetoid repository at a fixed commit (the canonical source PyG and Kipf's gcn use).
BASE_URL = "https://raw.githubusercontent.com/kimiyoung/planetoid/af6abf468a772cc055bec88c52e4d6f51b7c37e3/data/"
_SHA256 = {
    "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
}
#: The eight published files, by their part of the name: address, checksum, file name.
REMOTES = {
    part: Remote(url=f"{BASE_URL}ind.citeseer.{part}", checksum=f"sha256:{digest}", filename=f"ind.citeseer.{part}")
    for part, digest in _SHA256.items()
}
#: Class names in label order. The files carry no names: these follow from the class sizes
#: (249, 590, 668, 701, 596, 508 labelled papers), which match the LINQS CiteSeer classes one to one.
CLASSES = ("AI", "ML", "IR", "DB", "Agents", "HCI")
#: The folder :func:`make_synthetic` writes the stand-in to.
SYNTHETIC_FOLDER = "planetoid-citeseer-synthetic"
#: Validation nodes of the Planetoid format: the 500 nodes after the training nodes (fixed by the format).
NUM_VAL = 500

# The classes the Planetoid pickles use; nothing else may be loaded (a pickle can name any callable).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
    ("collections", "defaultdict"), ("__builtin__", "list"), ("builtins", "list"),
    ("__builtin__", "int"), ("builtins", "int"),
}


class _PlanetoidUnpickler(pickle.Unpickler):
    """An unpickler that admits only the classes of the Planetoid files."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the Planetoid format")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own, whatever its module is called
        if name == "scalar":
            return np.float64(0).__reduce__()[0]
        if name == "csr_matrix":  # the 2016 files name scipy.sparse.csr, which SciPy deprecates
            import scipy.sparse
            return scipy.sparse.csr_matrix
        return super().find_class(module, name)


def _files(folder: Path) -> dict:
    return {part: folder / remote.filename for part, remote in REMOTES.items()}


def _complete(folder: Path) -> bool:
    return all(path.is_file() for path in _files(folder).values())


def find(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return the folder holding the eight CiteSeer files if it is in ``root``, else ``None``.

    Looked for: ``root/planetoid-citeseer/`` (:data:`FOLDER`), then PyTorch Geometric's
    ``root/CiteSeer/raw/``. ``root`` defaults to :func:`~dlmed.datasets.data_dir`. A
    synthetic stand-in is never returned. Nothing is downloaded or created.
    """
    root = Path(root if root is not None else data_dir())
    for folder in (root / FOLDER, root.joinpath(*PYG_FOLDER)):
        if _complete(folder) and not is_synthetic(folder):
            return folder
    return None


def _how_to_get(folder: Path, missing: Remote) -> str:
    return (
        f"  To get it by hand: on a machine with internet, download the eight files ind.citeseer.*\n"
        f"  (x, y, tx, ty, allx, ally, graph, test.index) from {BASE_URL}\n"
        f"  (first missing: {missing.url}, SHA256 {missing.digest}) into {folder}"
    )


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> Path:
    """Return the folder holding the eight CiteSeer files, downloading the missing ones.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`; files are looked for as in
    :func:`find` and downloaded into ``root/planetoid-citeseer/`` from :data:`REMOTES`
    (checksums checked). Files already there are used as they are, so ``root`` may be a
    read-only folder that holds them; one whose checksum differs is accepted if it reads as
    Planetoid data (one line says so), otherwise ValueError.

    Raises:
        DataUnavailableError: files are missing and may not, or cannot, be downloaded.
        ValueError: a file here is not valid Planetoid data, or a download had the wrong checksum.
    """
    root = Path(root if root is not None else data_dir())
    folder = find(root)
    if folder is None:
        folder = root / FOLDER
        for remote in REMOTES.values():
            if not (folder / remote.filename).is_file():
                try:
                    download(NAME, remote, folder, _how_to_get(folder, remote), allow_download, show_progress)
                except Exception:
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()  # leave nothing half-made behind
                    raise
    differing = [part for part, remote in REMOTES.items() if not matches(remote, folder / remote.filename)]
    if differing:
        _read(folder)  # raises ValueError naming the problem
        print(f"dlmed: the CiteSeer file(s) {', '.join(differing)} in {folder} differ from the published "
              f"checksums, but they read as valid Planetoid data; using them.")
    return folder


def _unpickle(path: Path):
    with open(path, "rb") as file:
        return _PlanetoidUnpickler(file, encoding="latin1").load()


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, dtype=np.float32)


def _read(folder: Path):
    """Read the eight files in ``folder`` as PyTorch Geometric does; return a ``Data`` graph.

    Raises:
        ValueError: a file is missing, cannot be unpickled, or has the wrong shape.
    """
    import torch
    from torch_geometric.data import Data
    from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

    files = _files(folder)
    try:
        items = {part: _unpickle(files[part]) for part in ("x", "y", "tx", "ty", "allx", "ally", "graph")}
        test_index = torch.tensor([int(line) for line in files["test.index"].read_text().split()], dtype=torch.long)
        x, tx, allx = (torch.from_numpy(_dense(items[part])) for part in ("x", "tx", "allx"))
        y, ty, ally = (torch.from_numpy(np.asarray(items[part], dtype=np.float32)) for part in ("y", "ty", "ally"))
        graph = items["graph"]
        if not isinstance(graph, dict) or tx.shape[0] != len(test_index) or ty.shape[0] != len(test_index) \
                or allx.shape[0] != ally.shape[0] or x.shape[0] != y.shape[0]:
            raise ValueError("the feature, label and index files do not fit together")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(
            f"{folder} does not hold valid Planetoid CiteSeer files ({type(error).__name__}: {error}). "
            f"Delete the folder and run again to download them from {BASE_URL}."
        ) from None

    sorted_test_index = test_index.sort()[0]
    # CiteSeer's test indices have gaps (isolated papers): pad them with zero rows, as PyG does.
    span = int(sorted_test_index[-1] - sorted_test_index[0]) + 1
    tx_full, ty_full = tx.new_zeros(span, tx.shape[1]), ty.new_zeros(span, ty.shape[1])
    tx_full[sorted_test_index - sorted_test_index[0]] = tx
    ty_full[sorted_test_index - sorted_test_index[0]] = ty
    features = torch.cat([allx, tx_full], dim=0)
    labels = torch.cat([ally, ty_full], dim=0).max(dim=1)[1]
    features[test_index] = features[sorted_test_index]
    labels[test_index] = labels[sorted_test_index]
    num_nodes = features.shape[0]

    def mask(index):
        result = torch.zeros(num_nodes, dtype=torch.bool)
        result[index] = True
        return result

    num_train = y.shape[0]
    rows = list(itertools.chain.from_iterable(itertools.repeat(int(key), len(value)) for key, value in graph.items()))
    cols = [int(node) for value in graph.values() for node in value]
    edge_index = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    edge_index, _ = remove_self_loops(edge_index)
    # Both directions of every edge (the files list most twice), sorted by target node as PyG's loader does.
    edge_index = coalesce(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes, sort_by_row=False)
    return Data(x=features, edge_index=edge_index, y=labels,
                train_mask=mask(torch.arange(num_train)),
                val_mask=mask(torch.arange(num_train, min(num_train + NUM_VAL, num_nodes))),
                test_mask=mask(test_index))


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True):
    """Return CiteSeer as one ``torch_geometric.data.Data`` graph.

    Attributes: ``x`` float (N, F) bag-of-words features, ``edge_index`` long (2, E) with
    both directions of every edge and no self-loops, ``y`` long (N,) class indices (see
    :data:`CLASSES`), and boolean masks ``train_mask``, ``val_mask``, ``test_mask`` (N,).
    For the real data N = 3327, F = 3703, E = 9104, and the masks hold 120 / 500 / 1000
    nodes. The files are found or downloaded by :func:`fetch`, which takes the same arguments.
    """
    return _read(fetch(root, allow_download, show_progress))


# --- The synthetic stand-in --------------------------------------------------------------


def _synthetic_arrays(num_features: int, train_per_class: int, num_test: int, seed: int):
    """A planted-partition graph: papers cite mostly within their class, whose words they share."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    num_classes = len(CLASSES)
    num_train = train_per_class * num_classes
    num_nodes = num_train + NUM_VAL + num_test
    labels = np.concatenate([np.repeat(np.arange(num_classes), train_per_class),
                             rng.integers(0, num_classes, num_nodes - num_train)])
    # Each class prefers its own block of words; every paper has a few words of other blocks too.
    block = num_features // num_classes
    preferred = np.zeros((num_nodes, num_features), dtype=bool)
    for node, label in enumerate(labels):
        preferred[node, label * block:(label + 1) * block] = True
    probability = np.where(preferred, 0.18, 0.02)
    features = (rng.random((num_nodes, num_features)) < probability).astype(np.float32)
    graph = collections.defaultdict(list)
    for source in range(num_nodes):
        same = np.flatnonzero(labels == labels[source])
        targets = list(rng.choice(same, size=2)) + list(rng.integers(0, num_nodes, size=1))
        for target in targets:
            if int(target) != source:
                graph[source].append(int(target))
                graph[int(target)].append(source)
    one_hot = np.eye(num_classes, dtype=np.int64)[labels]
    test_nodes = np.arange(num_train + NUM_VAL, num_nodes)
    test_order = rng.permutation(test_nodes)  # the real file lists test nodes unsorted
    csr = scipy.sparse.csr_matrix
    return {
        "x": csr(features[:num_train]), "y": one_hot[:num_train],
        "allx": csr(features[:num_train + NUM_VAL]), "ally": one_hot[:num_train + NUM_VAL],
        "tx": csr(features[np.sort(test_order)]), "ty": one_hot[np.sort(test_order)],
        "graph": dict(graph), "test.index": test_order,
    }


def make_synthetic(root: PathLike, num_features: int = 60, train_per_class: int = 4, num_test: int = 60,
                   seed: int = 0) -> Path:
    """Write a small synthetic stand-in for CiteSeer in ``root`` and return its folder.

    The folder :data:`SYNTHETIC_FOLDER` holds the eight files in the Planetoid format
    (readable by :func:`load`'s reader and by PyTorch Geometric), marked synthetic, with six
    classes, ``train_per_class`` labelled training nodes per class, the format's
    :data:`NUM_VAL` validation nodes and ``num_test`` test nodes. Papers of a class share a
    block of ``num_features`` words and cite mostly papers of their class, so a GCN can learn
    it. THEY ARE NOT REAL PAPERS. The same settings give the same files; an existing stand-in
    made with the same settings is reused.
    """
    for name, value, least in (("num_features", num_features, len(CLASSES)), ("train_per_class", train_per_class, 1),
                               ("num_test", num_test, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    settings = {"synthetic": True, "dataset": NAME, "num_features": num_features,
                "train_per_class": train_per_class, "num_test": num_test, "seed": seed}
    final = Path(root) / SYNTHETIC_FOLDER

    def is_wanted(folder: Path) -> bool:
        from dlmed.datasets import stand_in_settings
        return stand_in_settings(folder) == settings and _complete(folder)

    def write(folder: Path) -> None:
        arrays = _synthetic_arrays(num_features, train_per_class, num_test, seed)
        for part, remote in REMOTES.items():
            path = folder / remote.filename
            if part == "test.index":
                path.write_text("".join(f"{node}\n" for node in arrays[part]))
            else:
                with open(path, "wb") as file:
                    pickle.dump(arrays[part], file, protocol=4)
        (folder / "README.txt").write_text(
            "SYNTHETIC stand-in for CiteSeer (Planetoid format), made by dlmed.datasets.citeseer.make_synthetic.\n"
            "Random bags of words on a planted-partition graph: NOT real papers or citations.\n")
        write_marker(folder, settings)

    return build_folder(final, is_wanted, write)


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False):
    """Return the CiteSeer graph a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    The result is a ``torch_geometric.data.Data`` as from :func:`load`.

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the synthetic stand-in
      made in ``root``, for offline practice.
    - Grading mode: the real files if they are in ``root`` (read-only is fine), else the
      stand-in; never downloads. Prints one line saying which data is used.
    - Lab mode: the real data, downloaded if needed and ``config.allow_download``; never a
      stand-in by itself (:class:`~dlmed.datasets.DataUnavailableError` says what to do).

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if not config.grading:
        if synthetic:
            return _read(make_synthetic(root, num_features=300, train_per_class=20, num_test=400))
        return load(root, allow_download=config.allow_download, show_progress=config.show_progress)
    reason = "as asked" if synthetic else f"the CiteSeer files are not in {root / FOLDER}"
    folder = None if synthetic else find(root)
    if folder is not None:
        try:
            graph = _read(folder)
            print(f"dlmed: using the real CiteSeer in {folder}")
            return graph
        except ValueError as error:
            reason = str(error)  # grading must not fail because of a damaged data file
    folder = make_synthetic(root)
    print(f"dlmed: using the SYNTHETIC stand-in (random graph, not real papers) in {folder} ({reason})")
    return _read(folder)

