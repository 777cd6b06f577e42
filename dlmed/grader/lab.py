"""The lab as the gradebook knows it: its tracked cells, their points, and a fingerprint.

``nbgrader generate_assignment`` records every cell nbgrader tracks (answer, test,
read-only and task cells) in the gradebook; the grader repairs and scores submissions
against that record (:func:`load_lab`).
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional

import nbformat

from dlmed import course


@dataclasses.dataclass
class LabCell:
    """A cell nbgrader tracks (answer, test, read-only or task cell), from the gradebook."""

    name: str
    cell_type: str
    locked: bool
    checksum: Optional[str]
    source: str
    grade: bool
    solution: bool
    task: bool
    points: Optional[float]

    def metadata(self) -> dict:
        """The nbgrader metadata this cell has in the released notebook."""
        meta = {"grade": self.grade, "grade_id": self.name, "locked": self.locked,
                "schema_version": 3, "solution": self.solution, "task": self.task}
        if self.grade or self.task:
            meta["points"] = self.points
        return meta


@dataclasses.dataclass
class LabInfo:
    """What the grader needs to know about a lab."""

    lab: str
    notebook_name: str  # file name, e.g. lab1_mednist_from_scratch.ipynb
    cells: Dict[str, LabCell]  # by grade_id
    order: List[str]  # grade_ids in notebook order
    kernelspec: Optional[dict]
    fingerprint: str

    @property
    def test_cells(self) -> Dict[str, float]:
        """Autograded test cells: {grade_id: points}, in notebook order."""
        return {name: self.cells[name].points for name in self.order
                if self.cells[name].grade and not self.cells[name].solution and self.cells[name].cell_type == "code"}


def load_lab(db_url: str, root: Path, lab: str) -> LabInfo:
    """Read a lab's cells from the gradebook (``nbgrader generate_assignment`` put them there)."""
    from nbgrader.api import Gradebook, MissingEntry

    name = course.lab_notebook_name(root, lab)
    notebook_id = Path(name).stem
    with Gradebook(db_url) as gradebook:
        try:
            notebook = gradebook.find_notebook(notebook_id, lab)
        except MissingEntry:
            raise course.CourseError(
                f"the gradebook has no notebook {notebook_id} in assignment {lab}: run "
                f"`nbgrader generate_assignment {lab}` (or `dlmed build`) in the course folder first"
            ) from None
        grades = {cell.name: cell.max_score for cell in notebook.grade_cells}
        solutions = {cell.name for cell in notebook.solution_cells}
        tasks = {cell.name: cell.max_score for cell in notebook.task_cells}
        cells = {
            cell.name: LabCell(cell.name, cell.cell_type, bool(cell.locked), cell.checksum, cell.source or "",
                               cell.name in grades, cell.name in solutions, cell.name in tasks,
                               grades.get(cell.name, tasks.get(cell.name)))
            for cell in notebook.source_cells
        }
        kernelspec = json.loads(notebook.kernelspec) if notebook.kernelspec else None
    source = nbformat.read(str(root / "source" / lab / name), as_version=4)
    order = [cell.metadata["nbgrader"]["grade_id"] for cell in source.cells
             if cell.metadata.get("nbgrader", {}).get("grade_id") in cells]
    digest = hashlib.sha256()
    for cell_name in order:
        cell = cells[cell_name]
        digest.update(f"{cell_name}|{cell.checksum}|{cell.points}|{cell.locked}\n".encode())
    return LabInfo(lab, name, cells, order, kernelspec, digest.hexdigest())
