"""Transitional: the class grader's old import path for two data-folder helpers.

``dlmed.classgrade`` and ``dlmed.sandbox`` still import :func:`data_dir` and
:func:`usual_permissions` from here; they move into ``dlmed/grader/`` next and will then
import them from :mod:`dlmed.datasets`. Everything else, notebooks included, uses
:mod:`dlmed.datasets`. Delete this module with that move.
"""

from dlmed.datasets import data_dir, usual_permissions

__all__ = ["data_dir", "usual_permissions"]
