"""What nbgrader and the pytest self-check share, so both grade a notebook the same way.

- :data:`CELL_TIMEOUT_SECONDS`: how long one cell may run.
- :data:`IGNORED_STDERR_PATTERN`: stderr output that does not fail a graded cell.
- :func:`graded_test_cells` / :func:`cell_failure`: which cells are graded and why one failed.
- :class:`HideHiddenTests`: an nbgrader preprocessor for solutions and feedback.
- :class:`StripSolutionMarkers`: an nbgrader preprocessor that tidies the solutions.

Importing this module does not import nbgrader; the preprocessors are built on first use
(nbgrader_config.py asks for them by name).
"""

import re
from typing import List, Optional

#: Seconds one cell may run. Lab cells in grading mode take seconds; the margin is for slow
#: laptops and a cold first import of torch.
CELL_TIMEOUT_SECONDS = 300

#: A graded cell that writes to stderr scores 0 in nbgrader. Library warnings and progress
#: bars (tqdm writes to stderr) are not a student's mistake, so outputs matching this are
#: dropped before grading. nbgrader drops a whole stderr output when the pattern matches.
IGNORED_STDERR_PATTERN = (
    r"(Warning|warnings\.warn|"  # UserWarning, DeprecationWarning, ... from any library
    r"\d+/\d+ \[|it/s\]|s/it\]|"  # tqdm progress bars
    r"Matplotlib is building the font cache)"
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes from ``text`` (tracebacks from a kernel carry them)."""
    return _ANSI.sub("", text)


def is_graded_test_cell(cell) -> bool:
    """True for an autograded test cell: a code cell marked ``grade`` but not ``solution``."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def graded_test_cells(notebook) -> List[int]:
    """Return the indices of a notebook's autograded test cells, in order."""
    return [index for index, cell in enumerate(notebook.cells) if is_graded_test_cell(cell)]


def cell_failure(cell) -> Optional[str]:
    """Return why an executed graded cell scores 0 in nbgrader, or None when it passes.

    Mirrors nbgrader's rule: an error output, or stderr output not matching
    :data:`IGNORED_STDERR_PATTERN`, fails the cell.
    """
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            traceback = strip_ansi("\n".join(output.get("traceback", [])))
            return traceback or f"{output.get('ename')}: {output.get('evalue')}"
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            text = output.get("text", "")
            if not re.search(IGNORED_STDERR_PATTERN, text):
                return "the cell wrote to stderr, which nbgrader counts as a failure:\n" + text
    return None


def _hide_hidden_tests_class():
    from nbgrader.preprocessors import ClearHiddenTests

    class HideHiddenTests(ClearHiddenTests):
        """Remove hidden tests from a notebook students will see (solutions, feedback).

        nbgrader's ``generate_solution`` and ``generate_feedback`` keep hidden tests. This
        preprocessor removes the ``### BEGIN/END HIDDEN TESTS`` regions and, in cells that
        had one, shortens error tracebacks to their last line (``AssertionError: message``)
        because a traceback quotes the source lines around the failing assert.
        """

        def preprocess_cell(self, cell, resources, cell_index):
            removed = self._remove_hidden_test_region(cell)
            if removed and cell.cell_type == "code":
                for output in cell.get("outputs", []):
                    if output.get("output_type") == "error":
                        output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
            return cell, resources

    return HideHiddenTests


def _strip_solution_markers_class():
    from nbgrader.preprocessors import NbGraderPreprocessor

    class StripSolutionMarkers(NbGraderPreprocessor):
        """Remove the ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines, keeping the code between them.

        nbgrader's ``generate_solution`` leaves the markers in; students reading the
        solutions after the workshop need only the code and the model answers.
        """

        def preprocess_cell(self, cell, resources, cell_index):
            lines = cell.source.split("\n")
            cell.source = "\n".join(line for line in lines if not _SOLUTION_MARKER.match(line))
            return cell, resources

    return StripSolutionMarkers


_LAZY_PREPROCESSORS = {
    "HideHiddenTests": _hide_hidden_tests_class,
    "StripSolutionMarkers": _strip_solution_markers_class,
}


def __getattr__(name):
    # Built lazily so that importing dlmed.grading does not import nbgrader.
    if name in _LAZY_PREPROCESSORS:
        cls = _LAZY_PREPROCESSORS[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module 'dlmed.grading' has no attribute {name!r}")
