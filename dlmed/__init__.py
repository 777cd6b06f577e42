"""Helpers shared by the workshop's notebooks.

Importing ``dlmed`` does nothing but make the submodules reachable; it does not import
torch, seed anything, create folders or download data. The submodules are:

- :mod:`dlmed.core`: ``device()`` and ``seed_everything()``.
- :mod:`dlmed.config`: lab mode versus grading mode (``run_config()``).
- :mod:`dlmed.data`: MedNIST download, cache and synthetic stand-in.
- :mod:`dlmed.medmnist`: PneumoniaMNIST download, cache and synthetic stand-in.
- :mod:`dlmed.mura`: MURA-v1.1 tables and datasets, and a synthetic MURA-like tree.
- :mod:`dlmed.models`: ResNet-18 with ImageNet weights when they are on the machine.
- :mod:`dlmed.train`: a training loop with a progress bar, evaluation, prediction.
- :mod:`dlmed.plots`: image grids, learning curves, confusion matrices.
- :mod:`dlmed.checks`: assertion helpers used by the notebooks' test cells.
- :mod:`dlmed.grading`, :mod:`dlmed.course`, :mod:`dlmed.cli`, :mod:`dlmed.pytest_plugin`:
  nbgrader configuration helpers, course build steps and the students' pytest self-check.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "device": "dlmed.core",
    "seed_everything": "dlmed.core",
    "run_config": "dlmed.config",
    "RunConfig": "dlmed.config",
    "is_grading": "dlmed.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    # Lazy so that `import dlmed` (e.g. by the pytest plugin) stays cheap and side-effect free.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dlmed' has no attribute {name!r}")
