"""The workshop's Python package. Its folders say who uses what:

- ``dlmed/`` (this level): what the notebooks import.
  :mod:`dlmed.core` (``device()``, ``seed_everything()``), :mod:`dlmed.config` (lab vs
  grading mode, ``run_config()``), :mod:`dlmed.train` (training loop, evaluation,
  prediction), :mod:`dlmed.plots` (image grids, learning curves, confusion matrices),
  :mod:`dlmed.checks` (assertions for test cells), :mod:`dlmed.models` (ResNet-18 with
  cached ImageNet weights).
- ``dlmed/datasets/``: one module per data set, each with the same surface (``find``,
  ``fetch``, ``make_synthetic``, ``for_notebook``), and the one download mechanism.
- ``dlmed/course/``: the course author's tooling: building the course, the nbgrader glue,
  the students' pytest self-check, the ``dlmed`` command.
- ``dlmed/grader/``: the class grader (``dlmed grade``): finding, repairing, sandboxing,
  recording and reporting submissions.

Importing ``dlmed`` does nothing but make the submodules reachable; it does not import
torch, seed anything, create folders or download data.
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
