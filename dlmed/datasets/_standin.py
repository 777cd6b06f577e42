"""Writing a folder into the data folder atomically: synthetic stand-ins and extracted archives.

A folder is written under a temporary name next to its final place and renamed into place
when complete; the rename is atomic, so readers see the old folder or the new one, never
half of one, and two processes writing at once both end with a complete folder.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from dlmed.datasets import STAND_IN_MARKER, usual_permissions


def subsample_per_label(table, limits: Dict[Any, int], seed: int = 0):
    """At most ``limits[label]`` rows of each label of ``table`` (a DataFrame with a ``label``
    column), drawn at random in the order of ``limits``, kept in file order: grading mode's
    small sample of a real data set."""
    rng = np.random.default_rng(seed)
    keep = []
    for label, limit in limits.items():
        rows = np.flatnonzero(table["label"].to_numpy() == label)
        keep.extend(rng.permutation(rows)[:limit].tolist())
    return table.iloc[sorted(keep)].reset_index(drop=True)


def write_marker(folder: Path, settings: dict) -> None:
    """Mark ``folder`` as a stand-in made with ``settings``; write it last (it means "complete")."""
    with open(folder / STAND_IN_MARKER, "w", encoding="utf-8") as file:
        json.dump(settings, file, indent=2)


def move_into_place(staged: Path, final: Path, is_wanted: Callable[[Path], bool]) -> None:
    """Rename the finished ``staged`` folder to ``final``, replacing an unwanted old one.

    If another process puts a wanted folder there first, ours is simply discarded.
    """
    usual_permissions(staged)
    for _ in range(5):
        try:
            os.rename(staged, final)  # fails if ``final`` exists and is not empty
            return
        except OSError:
            if not final.exists():
                raise  # not a lost race: e.g. permissions; the message says which path
        if is_wanted(final):
            shutil.rmtree(staged, ignore_errors=True)
            return
        # Out of date or incomplete: move it aside (atomic) and delete it, then retry.
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
        try:
            os.rename(final, trash / final.name)
        except FileNotFoundError:
            pass  # another process moved it aside already
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    raise RuntimeError(
        f"Could not put {final} in place: other processes keep replacing it (for the "
        f"stand-in: with other settings). Let one program at a time write to {final.parent}, "
        f"or give each its own folder with DLMED_DATA, and try again."
    )


def build_folder(final: Path, is_wanted: Callable[[Path], bool], write: Callable[[Path], None]) -> Path:
    """Return ``final``, first writing it with ``write(folder)`` unless ``is_wanted(final)`` already.

    ``write`` gets an empty folder named like ``final`` inside a temporary folder next to it;
    whatever it leaves behind on failure is removed.
    """
    if is_wanted(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-building-", dir=final.parent))
    try:
        staged = staging / final.name
        staged.mkdir()
        write(staged)
        move_into_place(staged, final, is_wanted)
    finally:
        # Empty after a successful rename; holds a partial folder only if something failed.
        shutil.rmtree(staging, ignore_errors=True)
    return final
