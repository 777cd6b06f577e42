"""``pytest`` on a lab notebook: the students' self-check.

``pytest release/lab1`` (or ``pytest path/to/notebook.ipynb``) executes each notebook once
in grading mode, as ``nbgrader validate`` would, and reports one test per autograded test
cell, named by its ``grade_id``, with the cell's assertion message when it fails. Only
notebooks with nbgrader test cells are collected; hidden tests are not in a student's
copy, so a pass here means the visible tests pass.
"""

import os
from pathlib import Path

import pytest

from dlmed.course.grading import CELL_TIMEOUT_SECONDS, cell_failure, graded_test_cells


def pytest_collect_file(parent, file_path):
    """Collect ``.ipynb`` files (outside ``.ipynb_checkpoints``) as notebooks to self-check."""
    if file_path.suffix == ".ipynb" and ".ipynb_checkpoints" not in file_path.parts:
        return GradedNotebook.from_parent(parent, path=file_path)
    return None


def execute_in_grading_mode(path: Path):
    """Execute the notebook at ``path`` in grading mode and return the executed notebook.

    Errors do not stop execution (every test cell gets its own verdict), like nbgrader.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        allow_errors=True,
        kernel_name=notebook.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
    )
    # The kernel inherits this process's environment: the same switch nbgrader sets.
    previous = os.environ.get("NBGRADER_EXECUTION")
    os.environ["NBGRADER_EXECUTION"] = "validate"
    try:
        client.execute()
    finally:
        if previous is None:
            del os.environ["NBGRADER_EXECUTION"]
        else:
            os.environ["NBGRADER_EXECUTION"] = previous
    return notebook


class GradedNotebook(pytest.File):
    """A notebook whose autograded test cells become test items."""

    def collect(self):
        """Yield one item per autograded test cell; nothing for notebooks without any."""
        import nbformat

        notebook = nbformat.read(self.path, as_version=4)
        for index in graded_test_cells(notebook):
            meta = notebook.cells[index].metadata["nbgrader"]
            yield GradedCell.from_parent(
                self, name=meta.get("grade_id", f"cell{index}"), cell_index=index, points=meta.get("points", 0)
            )

    def executed(self):
        """Return the executed notebook, running it on first use only."""
        if not hasattr(self, "_executed"):
            self._executed = execute_in_grading_mode(Path(self.path))
        return self._executed


class CellFailed(Exception):
    """A graded cell failed; the message is what nbgrader would count against it."""


class GradedCell(pytest.Item):
    """One autograded test cell of a notebook."""

    def __init__(self, *, cell_index, points, **kwargs):
        super().__init__(**kwargs)
        self.cell_index = cell_index
        self.points = points

    def runtest(self):
        """Pass when the executed cell has no error and no stderr output that nbgrader would count."""
        cell = self.parent.executed().cells[self.cell_index]
        failure = cell_failure(cell)
        if failure is not None:
            raise CellFailed(failure)

    def repr_failure(self, excinfo, style=None):
        """Show the cell's own traceback, not the plugin's."""
        if isinstance(excinfo.value, CellFailed):
            return f"{self.name} ({self.points:g} points) failed:\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        """Name the notebook and the graded cell in pytest's report."""
        return self.path, None, f"{self.name} ({self.points:g} points)"
