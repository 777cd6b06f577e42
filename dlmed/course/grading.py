"""What nbgrader and the pytest self-check share, so both grade a notebook the same way.

- :data:`CELL_TIMEOUT_SECONDS`: how long one cell may run.
- :data:`IGNORED_STDERR_PATTERN`: stderr output that does not fail a graded cell.
- :func:`graded_test_cells` / :func:`cell_failure`: which cells are graded and why one failed.
- :class:`HideHiddenTests`: an nbgrader preprocessor for solutions and feedback.
- :class:`StripSolutionMarkers`: an nbgrader preprocessor that tidies the solutions.
- :class:`SanitizeStudentContent`: an nbgrader preprocessor that makes a submission's outputs
  and written answers inert before any browser shows them (:mod:`dlmed.grader.sanitize`).

Importing this module does not import nbgrader; the preprocessors are built on first use
(nbgrader_config.py asks for them by name).
"""

import builtins
import re
from typing import List, Optional, Tuple

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
        preprocessor removes the ``### BEGIN/END HIDDEN TESTS`` regions of test cells and, in cells that
        had one, shortens error tracebacks to their last line (``AssertionError: message``)
        because a traceback quotes the source lines around the failing assert. A student's
        later cell could also print hidden test code it dug out of the kernel (the class
        grader scrubs the kernel, this is the second line of defence): every output line
        that contains a hidden-test line of the notebook (15 characters or more, and not
        also in a visible cell) is replaced by a note.

        A failure of the hidden tests (``HiddenTestFailed``, recorded by the class grader,
        :mod:`dlmed.grader.executor`) becomes a fixed text: its message was produced by student
        code while the hidden tests ran and could carry what they contain. Only the
        exception's class is kept, and only when it is a builtin one (``AssertionError``).
        """

        def preprocess(self, nb, resources):
            secret = _hidden_lines(nb)
            nb, resources = super().preprocess(nb, resources)
            if secret:
                for cell in nb.cells:
                    for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                        _scrub_output(output, secret)
            return nb, resources

        def preprocess_cell(self, cell, resources, cell_index):
            # Hidden tests live only in autograded test cells (nbgrader refuses them elsewhere when
            # it generates the lab). Anywhere else the marker text is a student's own writing: left
            # alone, it can neither cut their answer nor stop feedback ("No end hidden tests
            # statement found", which nbgrader raises for a begin marker without an end).
            if not is_graded_test_cell(cell):
                return cell, resources
            removed = self._remove_hidden_test_region(cell)
            if cell.cell_type == "code":
                for output in cell.get("outputs", []):
                    if output.get("output_type") != "error":
                        continue
                    if output.get("ename") == HIDDEN_FAILED:
                        output["evalue"] = hidden_failure_text(output.get("evalue", ""))
                    if removed or output.get("ename") == HIDDEN_FAILED:
                        output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
            return cell, resources

    return HideHiddenTests


_SCRUBBED = "[a line of hidden test code was removed by the grader]"

#: ``ename`` of a test cell's error output when its hidden part failed (set by dlmed.grader.executor).
HIDDEN_FAILED = "HiddenTestFailed"
_BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                       if isinstance(value, type) and issubclass(value, BaseException)}


def hidden_failure_text(evalue: str) -> str:
    """What a student's feedback says for a failed hidden test whose error was ``"<class>: <message>"``.

    A fixed text; the exception's class only when it is a builtin exception (a student's
    code chooses the message and could choose a class name of its own).
    """
    name = evalue.split(":", 1)[0].strip()
    return "the hidden tests failed" + (f" ({name})" if name in _BUILTIN_EXCEPTIONS else "")


def split_hidden_tests(source: str) -> Tuple[str, str]:
    """(visible part, hidden part) of a cell's source; the marker lines belong to neither.

    The visible part is what students receive (nbgrader's ClearHiddenTests keeps the same lines).
    """
    visible, hidden, inside = [], [], False
    for line in source.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "END HIDDEN TESTS" in line:
            inside = False
        else:
            (hidden if inside else visible).append(line)
    return "\n".join(visible), "\n".join(hidden)


def _hidden_lines(nb) -> List[str]:
    """Hidden-test lines of ``nb`` worth scrubbing: 15+ characters and in no visible code."""
    hidden, visible = set(), []
    for cell in nb.cells:
        if not is_graded_test_cell(cell):
            visible.append(cell.source)
            continue
        shown, region = split_hidden_tests(cell.source)
        hidden.update(line.strip() for line in region.splitlines() if len(line.strip()) >= 15)
        visible.append(shown)
    visible_text = "\n".join(visible)
    return [line for line in hidden if line not in visible_text]


def _scrub_text(text, secret: List[str]):
    if isinstance(text, list):
        text = "".join(text)
    if not isinstance(text, str) or not any(line in text for line in secret):
        return text
    return "\n".join(_SCRUBBED if any(line in row for line in secret) else row for row in text.split("\n"))


def _scrub_output(output, secret: List[str]):
    """Replace output lines that quote hidden test code (streams, results, errors)."""
    if "text" in output:
        output["text"] = _scrub_text(output["text"], secret)
    for key, value in list(output.get("data", {}).items()):
        if key.startswith("text/"):
            output["data"][key] = _scrub_text(value, secret)
    if output.get("output_type") == "error":
        output["evalue"] = _scrub_text(output.get("evalue", ""), secret)
        output["traceback"] = [_scrub_text(strip_ansi(line), secret) for line in output.get("traceback", [])]


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


def _sanitize_student_content_class():
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool

    from dlmed.grader.sanitize import sanitize_notebook

    class SanitizeStudentContent(Preprocessor):
        """Make everything a student controls inert HTML: outputs, written answers, metadata.

        Configured in ``nbgrader_config.py`` for ``autograde`` (so autograded/ holds clean
        notebooks for the Formgrader and every later viewer), for ``generate_feedback`` and
        for the Formgrader's own HTML exporter (a second layer). See :mod:`dlmed.grader.sanitize`.
        """

        # nbgrader registers the preprocessors it is given without enabling them, and
        # nbconvert skips a disabled one silently: this one is on wherever it is listed.
        enabled = Bool(True).tag(config=True)

        def preprocess(self, nb, resources):
            notes = sanitize_notebook(nb)
            if notes:
                self.log.warning("Made student content inert: %s", "; ".join(sorted(set(notes))))
            return nb, resources

    return SanitizeStudentContent


_CANVAS = re.compile(r"(?P<student_id>[^_]+)_(?:LATE_)?(?P<user_id>\d+)_(?P<submission_id>\d+)_"
                     r"(?P<file_id>.+?)(?:-\d+)?(?P<ext>\.ipynb)$")
_MOODLE_FOLDER = re.compile(r"(?P<student_id>.+?)_(?P<participant>\d+)_assignsubmission_file_?$")


def lms_identity(path: str) -> Optional[dict]:
    """Who submitted a file extracted from a learning platform's zip export, or None when unknown.

    Returns ``student_id`` (the nbgrader id, as :func:`lms_submission` gives it), ``file_id``,
    ``platform`` (``canvas``, ``moodle`` or ``folder``), ``platform_id`` (Canvas: the user id
    its gradebook import matches in the ``ID`` column; Moodle: the participant number its
    grading worksheet matches as ``Participant <n>``; a folder: the folder name) and ``name``
    (the name as the platform wrote it: Canvas's login-like name, Moodle's full name). The
    name comes from the platform and is shown or exported only escaped.
    """
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    canvas = _CANVAS.match(name)
    moodle = _MOODLE_FOLDER.match(parts[-2]) if len(parts) >= 2 else None
    if canvas:
        found = {"student_id": canvas["student_id"], "file_id": canvas["file_id"] + canvas["ext"],
                 "platform": "canvas", "platform_id": canvas["user_id"], "name": canvas["student_id"]}
    elif moodle:
        found = {"student_id": moodle["student_id"], "file_id": name, "platform": "moodle",
                 "platform_id": moodle["participant"], "name": moodle["student_id"]}
    elif "extracted" in parts and len(parts) - parts.index("extracted") >= 4:
        found = {"student_id": parts[-2], "file_id": name, "platform": "folder",  # extracted/<zip>/<student>/<file>
                 "platform_id": parts[-2], "name": parts[-2]}
    else:
        return None
    found["student_id"] = re.sub(r"[^A-Za-z0-9_.-]", "", found["student_id"].replace(" ", "_"))
    return found if found["student_id"] else None


def lms_submission(path: str) -> Optional[dict]:
    """Student id and file id of a file extracted from a learning platform's zip export, or None.

    Recognised, in this order: Canvas file names (``<login>_[LATE_]<id>_<id>_<file>.ipynb``,
    resubmissions ending in ``-1``), Moodle folders (``<Full Name>_<id>_assignsubmission_file_/<file>``)
    and a folder per student inside the zip (``<zip>/<student>/<file>``). Student ids keep
    only letters, digits, ``.``, ``_`` and ``-`` (spaces become ``_``). :func:`lms_identity`
    also gives the platform's own id.
    """
    found = lms_identity(path)
    return {"student_id": found["student_id"], "file_id": found["file_id"]} if found else None


def _lms_collector_class():
    from nbgrader.plugins import FileNameCollectorPlugin

    class LmsCollector(FileNameCollectorPlugin):
        """``nbgrader zip_collect`` plugin for the zip exports of Canvas, Moodle and similar platforms.

        With ``FileNameCollectorPlugin.named_regexp`` configured, that regular expression is
        used as nbgrader documents; otherwise :func:`lms_submission` reads the file's path.
        """

        def collect(self, submitted_file):
            if self.named_regexp:
                return super().collect(submitted_file)
            if not submitted_file.endswith(tuple(self.valid_ext)):
                return None
            found = lms_submission(submitted_file)
            if found is None:
                self.log.warning("Not a file of a known learning-platform export, skipped: %s", submitted_file)
            return found

    return LmsCollector


_LAZY_PREPROCESSORS = {
    "HideHiddenTests": _hide_hidden_tests_class,
    "StripSolutionMarkers": _strip_solution_markers_class,
    "SanitizeStudentContent": _sanitize_student_content_class,
    "LmsCollector": _lms_collector_class,
}


def __getattr__(name):
    # Built lazily so that importing dlmed.course.grading does not import nbgrader.
    if name in _LAZY_PREPROCESSORS:
        cls = _LAZY_PREPROCESSORS[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module 'dlmed.course.grading' has no attribute {name!r}")
