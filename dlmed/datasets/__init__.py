"""The workshop's data sets: one module per data set, all with the same small surface.

Every data module (:mod:`~dlmed.datasets.mednist`, :mod:`~dlmed.datasets.pneumoniamnist`,
:mod:`~dlmed.datasets.mura`, :mod:`~dlmed.datasets.dsb2018`) offers

- ``find(root=None)``: the data if it is already in the data folder, else ``None`` (never
  downloads or writes);
- ``fetch(root=None, allow_download=True, show_progress=True)``: the data, downloaded into
  the data folder if needed (checksum checked, reused afterwards); offline it raises
  :class:`DataUnavailableError`;
- ``make_synthetic(root, ...)``: a small synthetic stand-in with the real layout (NOT
  medical data), for offline practice, grading and tests;
- ``for_notebook(config, root=None, synthetic=False)``: what a notebook uses, given its
  :class:`~dlmed.config.RunConfig`: in grading mode the real data if it is here, else the
  stand-in (never a download); in lab mode the real data (or the stand-in on request);

plus the constants ``NAME`` (what the data set is called), ``REMOTE`` (where it is
downloaded from and its checksum; ``None`` when it cannot be downloaded) and readers of
its own. The shared download mechanism lives in :mod:`dlmed.datasets._download`, the
writing of stand-ins in :mod:`dlmed.datasets._standin`; no data module has its own.

This module holds what all of them share: :func:`data_dir`, :class:`DataUnavailableError`,
:func:`is_synthetic`, :func:`subset_per_class` and :func:`usual_permissions`. Nothing
happens on import: folders are made and files downloaded only when a function needs them.
"""

import json
import os
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, os.PathLike]

#: The file that marks a folder as a synthetic stand-in and records how it was made.
STAND_IN_MARKER = "dlmed-synthetic.json"


class DataUnavailableError(RuntimeError):
    """A data set is not on this machine and cannot be downloaded (offline, or not allowed).

    The first line of the message says what is missing; the next ones how to go on (the
    notebook's ``USE_SYNTHETIC_DATA`` switch, the ``DLMED_DATA`` folder) and how to get
    the data by hand.
    """


def data_dir() -> Path:
    """Return the folder that holds the workshop's data sets.

    It is the environment variable ``DLMED_DATA`` (``~`` is expanded) when set, otherwise
    ``~/dlmed-data``. The folder is not created here; functions that write create it.
    """
    configured = os.environ.get("DLMED_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / "dlmed-data"


def stand_in_settings(folder: PathLike) -> Optional[dict]:
    """Return the settings a synthetic stand-in in ``folder`` was made with, or None if it is none.

    None also when the marker is unreadable: such a folder is rebuilt, never trusted.
    """
    try:
        with open(Path(folder) / STAND_IN_MARKER, encoding="utf-8") as file:
            marker = json.load(file)
    except (OSError, ValueError):  # missing, unreadable, or not JSON
        return None
    return marker if isinstance(marker, dict) else None


def is_synthetic(folder: PathLike) -> bool:
    """Return True if ``folder`` is a synthetic stand-in written by one of the data modules."""
    settings = stand_in_settings(folder)
    return bool(settings and settings.get("synthetic") is True)


def usual_permissions(path: PathLike) -> None:
    """Give ``path`` the permissions a normally created file or folder would have (umask applied).

    Temporary files and folders are private (0600 / 0700); a data folder shared by several
    users (a JupyterHub, the class grader's sandboxed kernels) must stay readable by them.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def subset_per_class(dataset, images_per_class: Optional[int], seed: int = 0):
    """Keep at most ``images_per_class`` randomly chosen images of each class.

    ``dataset`` needs a ``targets`` list of class indices, as ``torchvision``'s
    ``ImageFolder`` has. The choice is repeatable for a ``seed``, and the kept indices are
    in ascending order. Returns a ``torch.utils.data.Subset``, or ``dataset`` itself when
    ``images_per_class`` is ``None``.
    """
    import torch  # here, so that importing dlmed.datasets stays cheap (the class grader does)

    if images_per_class is None:
        return dataset
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ValueError(f"images_per_class must be a positive integer or None, got {images_per_class!r}")
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(
            f"subset_per_class needs a dataset with a .targets list of class indices (such as "
            f"torchvision.datasets.ImageFolder); got {type(dataset).__name__} without one"
        )
    targets = torch.as_tensor(targets)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(targets).tolist():
        indices = torch.nonzero(targets == label).flatten()
        shuffled = indices[torch.randperm(len(indices), generator=generator)]
        chosen.extend(shuffled[:images_per_class].tolist())
    return torch.utils.data.Subset(dataset, sorted(chosen))
