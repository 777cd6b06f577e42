"""Staging a submission: what nbgrader cannot read is repaired, and every repair is a note.

A notebook saved under another name is graded under the right one; corrupt JSON or a
missing notebook makes the submission ungradable (it scores 0, with the reason);
duplicated or renamed cells and changed nbgrader metadata are put back from the gradebook;
deleted test and read-only cells are put back (:func:`repair_notebook`). :func:`stage`
copies the repaired submission to where nbgrader's converter reads it.
"""

import json
import shutil
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import nbformat

from dlmed.course.grading import split_hidden_tests
from dlmed.grader.lab import LabCell, LabInfo

#: A submitted notebook larger than this is not read (a notebook with outputs is a few MB).
MAX_NOTEBOOK_BYTES = 100 * 2**20
#: Other files of a submission copied for the kernel, in total.
MAX_EXTRA_BYTES = 100 * 2**20


class UngradableSubmission(Exception):
    """The submission cannot be executed at all (no notebook, corrupt JSON, ...); it scores 0."""


_KEPT_CELL_METADATA = ("nbgrader", "tags", "deletable", "editable", "jupyter", "collapsed", "scrolled")


def _clean_cell(raw) -> Optional[nbformat.NotebookNode]:
    """A well-formed copy of a submitted cell without outputs, or None if it is not a cell at all."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_raw_cell

    if not isinstance(raw, dict):
        return None
    source = raw.get("source", "")
    if isinstance(source, list):
        source = "".join(str(part) for part in source)
    source = str(source)
    makers = {"code": new_code_cell, "markdown": new_markdown_cell, "raw": new_raw_cell}
    if raw.get("cell_type") not in makers:
        return None
    cell = makers[raw["cell_type"]](source)
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    cell.metadata.update({key: metadata[key] for key in _KEPT_CELL_METADATA if key in metadata})
    if raw["cell_type"] == "markdown" and isinstance(raw.get("attachments"), dict):
        cell.attachments = raw["attachments"]  # pictures in written answers
    return cell


def _was_edited(cell, original: LabCell) -> bool:
    """True when a read-only cell's source is neither the released one nor the instructor's."""
    ours = cell.source.rstrip()
    return ours not in (split_hidden_tests(original.source)[0].rstrip(), original.source.rstrip())


def repair_notebook(text: str, lab: LabInfo) -> Tuple[nbformat.NotebookNode, List[str]]:
    """Return a notebook nbgrader can grade made from a submitted one, and notes on what was repaired.

    Raises :class:`UngradableSubmission` when ``text`` is not a notebook at all. Outputs are
    dropped (nbgrader clears them anyway). Cells nbgrader tracks get the metadata they have
    in the released notebook: a cell with an unknown ``grade_id`` runs as an ordinary cell,
    of duplicated cells the last copy counts (as in nbgrader), and test, read-only and task
    cells that are missing are put back where they belong.
    """
    from nbformat.v4 import new_notebook

    try:
        data = json.loads(text)
    except ValueError as error:
        raise UngradableSubmission(f"the notebook file is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise UngradableSubmission("the file is JSON but not a Jupyter notebook (no list of cells)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate or missing cell ids: nbformat fixes them, we report what matters
            upgraded = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises many kinds of errors for damaged files
        raise UngradableSubmission(f"the notebook could not be read ({type(error).__name__}: {error})") from None
    notes = []
    cells = []
    for raw in upgraded.get("cells", []):
        cell = _clean_cell(raw)
        if cell is None:
            notes.append("a damaged cell (no valid cell type) was left out")
        else:
            cells.append(cell)

    known = {}
    for index, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader")
        if isinstance(meta, dict) and meta.get("grade_id") in lab.cells:
            known[meta["grade_id"]] = index  # the last copy counts
    for index, cell in enumerate(cells):
        if "nbgrader" not in cell.metadata:
            continue
        meta = cell.metadata["nbgrader"]
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id not in lab.cells:
            if isinstance(meta, dict) and any(meta.get(key) for key in ("grade", "solution", "locked", "task")):
                notes.append(f"a cell had the unknown grade_id {grade_id!r} (changed or invented): it ran as an ordinary cell")
            del cell.metadata["nbgrader"]
            continue
        if known[grade_id] != index:
            notes.append(f"cell {grade_id!r} appeared more than once: the last copy was graded, the others ran as ordinary cells")
            del cell.metadata["nbgrader"]
            continue
        original = lab.cells[grade_id]
        canonical = original.metadata()
        changed = [key for key in ("grade", "solution", "locked", "task", "points")
                   if key in canonical and str(meta.get(key)) != str(canonical[key])
                   and not (key == "points" and _same_number(meta.get(key), canonical[key]))]
        if changed:
            notes.append(f"the nbgrader settings of {grade_id!r} were changed ({', '.join(changed)}): put back")
        if cell.cell_type != original.cell_type:
            notes.append(f"{grade_id!r} was made a {cell.cell_type} cell: put back as {original.cell_type}")
        elif original.locked and _was_edited(cell, original):
            notes.append(f"the read-only cell {grade_id!r} was edited: the original was graded")
        cell.metadata["nbgrader"] = canonical

    present = set(known)
    for position, grade_id in enumerate(lab.order):
        original = lab.cells[grade_id]
        if grade_id in present or not (original.locked or original.grade or original.task):
            continue
        kind = "test" if original.grade and not original.solution else "read-only" if original.locked else "answer"
        notes.append(f"the {kind} cell {grade_id!r} was deleted: put back")
        restored = _clean_cell({"cell_type": original.cell_type, "source": original.source,
                                "metadata": {"nbgrader": original.metadata()}})
        earlier = [i for i, c in enumerate(cells)
                   if c.metadata.get("nbgrader", {}).get("grade_id") in lab.order[:position]]
        cells.insert(earlier[-1] + 1 if earlier else 0, restored)
        present.add(grade_id)

    kernel = upgraded.metadata.get("kernelspec", {}) if isinstance(upgraded.metadata.get("kernelspec"), dict) else {}
    expected_kernel = (lab.kernelspec or {}).get("name", "python3")
    if kernel.get("name", expected_kernel) != expected_kernel:
        notes.append(f"the notebook asked for the kernel {kernel.get('name')!r}: graded with {expected_kernel!r}")
    notebook = new_notebook(cells=cells)
    notebook.metadata = {key: upgraded.metadata[key] for key in ("kernelspec", "language_info") if key in upgraded.metadata}
    return notebook, notes


def _same_number(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def stage(source: Path, target: Path, lab: LabInfo) -> List[str]:
    """Copy a repaired version of the submission in ``source`` to ``target``; return the repair notes.

    ``target`` (``grading/<lab>/staged/<student>/<lab>``) is emptied first, together with
    its parent. Raises :class:`UngradableSubmission` when there is no notebook to grade.
    """
    shutil.rmtree(target.parent, ignore_errors=True)
    target.mkdir(parents=True)
    expected = lab.notebook_name
    notebooks = sorted(p for p in source.glob("*.ipynb") if p.is_file() and not p.is_symlink())
    notes = []
    if (source / expected).is_file() and not (source / expected).is_symlink():
        chosen = source / expected
    elif len(notebooks) == 1:
        chosen = notebooks[0]
        notes.append(f"the notebook was submitted as {chosen.name!r}: graded as {expected!r}")
    else:
        found = ", ".join(p.name for p in notebooks) or "none"
        raise UngradableSubmission(f"no notebook named {expected!r} (notebooks found: {found})")
    if chosen.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise UngradableSubmission(f"the notebook is {chosen.stat().st_size / 2**20:.0f} MB, more than "
                                   f"{MAX_NOTEBOOK_BYTES / 2**20:.0f} MB; clear its outputs and submit again")
    notebook, repairs = repair_notebook(chosen.read_text(encoding="utf-8", errors="replace"), lab)
    notes += repairs
    nbformat.write(notebook, str(target / expected))
    copied = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path == chosen or path.suffix == ".ipynb" or ".ipynb_checkpoints" in relative.parts:
            continue
        if path.is_symlink():
            notes.append(f"the symbolic link {str(relative)!r} was ignored")
        elif path.is_file():
            copied += path.stat().st_size
            if copied > MAX_EXTRA_BYTES:
                notes.append(f"{str(relative)!r} was not copied: the submission's files exceed "
                             f"{MAX_EXTRA_BYTES / 2**20:.0f} MB")
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
    return notes
