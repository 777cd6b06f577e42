"""Grade a whole class: ``dlmed grade LAB`` (README, "Grading a class").

For every submission in ``submitted/<student>/<lab>/`` (or in the zip export of a learning
platform, imported with nbgrader's ``zip_collect``) the grader

1. repairs what nbgrader cannot read (:func:`repair_notebook`): corrupt JSON is reported, a
   notebook saved under another name is graded under the right one, duplicated or renamed
   cells and changed nbgrader metadata are put back from the gradebook, deleted test and
   read-only cells are put back; each repair is a note for the instructor;
2. lets nbgrader's own ``Autograde`` converter sanitize it (restore locked cells from the
   gradebook by checksum, kernel, ids), which also creates the submission in the gradebook;
3. executes it in a sandbox (:mod:`dlmed.sandbox`), in parallel over the machine's cores;
4. lets the same converter score it (``SaveAutoGrades`` and the rest of nbgrader's
   autograde preprocessors, without ``Execute``) into the gradebook (SQLite or Postgres,
   whatever ``CourseDirectory.db_url`` says) and ``autograded/``, so ``nbgrader export``,
   the formgrader and ``generate_feedback`` work as after ``nbgrader autograde``.

The main process is the only one that writes the gradebook. Each finished student is
recorded at once and noted in ``grading/<lab>/results/<student>.json`` with a fingerprint
of the submission, the lab and the limits: a rerun skips what is up to date (``--force``
grades everything again), so an interrupted run continues where it stopped. Then feedback
(``nbgrader generate_feedback``) and the class report (:mod:`dlmed.report`).
"""

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import queue
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat

from dlmed import course, sandbox
from dlmed.executor import cell_annotations
from dlmed.grading import cell_failure, graded_test_cells, split_hidden_tests
from dlmed.sanitize import sanitize_notebook

#: Instructor-only working folder of the grader, in the course root (never in git).
GRADING_FOLDER = "grading"
#: A submitted notebook larger than this is not read (a notebook with outputs is a few MB).
MAX_NOTEBOOK_BYTES = 100 * 2**20
#: Other files of a submission copied for the kernel, in total.
MAX_EXTRA_BYTES = 100 * 2**20
#: Bump when a change of the grader can change scores: results of older versions are regraded.
GRADER_VERSION = "1"

Scores = Dict[str, Tuple[Optional[float], float]]  # one student: {grade_id: (score, max score)}


class UngradableSubmission(Exception):
    """The submission cannot be executed at all (no notebook, corrupt JSON, ...); it scores 0."""


@dataclasses.dataclass
class GradeSettings:
    """How ``dlmed grade`` runs (the command's options)."""

    lab: str
    jobs: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    limits: sandbox.Limits = dataclasses.field(default_factory=sandbox.Limits)
    isolation: str = "auto"
    force: bool = False
    zips: Sequence[Path] = ()
    feedback: bool = True
    check_reference: bool = True
    data_dir: Optional[Path] = None
    students: Optional[Sequence[str]] = None
    progress: bool = True
    hide: Sequence[Path] = ()


@dataclasses.dataclass
class StudentResult:
    """One student's outcome, as the report and the journal keep it."""

    student: str
    status: str  # "graded", "not gradable", "grader error"
    scores: Scores = dataclasses.field(default_factory=dict)
    reason: str = ""
    notes: List[str] = dataclasses.field(default_factory=list)
    events: List[dict] = dataclasses.field(default_factory=list)
    failures: Dict[str, str] = dataclasses.field(default_factory=dict)  # test cell -> last line of its error
    seconds: float = 0.0
    hidden_seconds: List[float] = dataclasses.field(default_factory=list)  # each hidden-test part's sealed run
    peak_memory: int = 0
    fingerprint: str = ""
    reused: bool = False  # up to date from an earlier run

    @property
    def points(self) -> float:
        """Autograded points."""
        return sum(score or 0.0 for score, _ in self.scores.values() if score is not None)

    def to_json(self) -> dict:
        """The journal entry."""
        data = dataclasses.asdict(self)
        data.pop("reused")
        data["scores"] = {name: list(value) for name, value in self.scores.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> "StudentResult":
        """Read a journal entry."""
        data = dict(data)
        data["scores"] = {name: tuple(value) for name, value in data.get("scores", {}).items()}
        return cls(**data)


# --- the lab as the gradebook knows it ------------------------------------------------------


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


# --- repairing a submitted notebook ---------------------------------------------------------

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


def _was_edited(cell, original: "LabCell") -> bool:
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


# --- nbgrader's Autograde, split around the sandbox -----------------------------------------


def _staged_autograde_class():
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import Autograde
    from nbgrader.converters.base import BaseConverter
    from nbgrader.preprocessors import Execute

    class StagedAutograde(Autograde):
        """nbgrader's Autograde in two steps, so the execution in between can happen elsewhere.

        :meth:`sanitize` does what ``nbgrader autograde`` does before executing (create the
        submission in the gradebook, copy files, run the sanitize preprocessors) and
        :meth:`score` what it does after (the autograde preprocessors except ``Execute``).
        """

        def _setup_writers(self):
            self.writer = FilesWriter(parent=self, config=self.config)
            self.exporter = self.exporter_class(parent=self, config=self.config)

        def sanitize(self, student: str) -> Path:
            """Sanitize ``student``'s staged submission into autograded/; return the notebook's path."""
            self.coursedir.student_id = student
            self._sanitizing = True
            self.init_notebooks()
            self._setup_writers()
            [(folder, notebooks)] = self.assignments.items()
            self.notebooks = sorted(notebooks)
            lab = self.coursedir.assignment_id
            self.init_destination(lab, student)
            self.run_pre_convert_hook()
            self.init_assignment(lab, student)
            self._init_preprocessors()
            for notebook in self.notebooks:
                BaseConverter.convert_single_notebook(self, notebook)
            return Path(self._format_dest(lab, student)) / Path(self.notebooks[0]).name

        def score(self, student: str, notebook: Path):
            """Score the executed notebook at ``notebook`` (in autograded/) into the gradebook."""
            from nbgrader.utils import setenv

            self.coursedir.student_id = student
            self._sanitizing = False
            self._setup_writers()
            self._init_preprocessors()
            with setenv(NBGRADER_EXECUTION="autograde"):
                BaseConverter.convert_single_notebook(self, str(notebook))
            self.set_permissions(self.coursedir.assignment_id, student)
            self.run_post_convert_hook()

        def _init_preprocessors(self):
            super()._init_preprocessors()
            self.exporter._preprocessors = [p for p in self.exporter._preprocessors if not isinstance(p, Execute)]

    return StagedAutograde


def test_failures(notebook) -> Dict[str, str]:
    """{test grade_id: why it scores 0} for the failing test cells of an executed notebook.

    The reason is the first error's name and the first line of its message (an assert's
    "what was checked: expected vs got"), or the first line written to stderr.
    """
    failures = {}
    for index in graded_test_cells(notebook):
        cell = notebook.cells[index]
        if not cell_failure(cell):
            continue
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            message = (errors[0].get("evalue") or "").strip().split("\n")[0]
            failures[cell.metadata["nbgrader"]["grade_id"]] = f"{errors[0].get('ename')}: {message}".rstrip(": ")
        else:
            stderr = next(o for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stderr")
            failures[cell.metadata["nbgrader"]["grade_id"]] = "wrote to stderr: " + stderr.get("text", "").strip().split("\n")[0]
    return failures


# --- the grader ------------------------------------------------------------------------------


class ClassGrader:
    """Grades every submission of one lab; see the module's docstring. Use :func:`grade_class`."""

    def __init__(self, root: Path, settings: GradeSettings):
        self.root = Path(root).resolve()
        self.settings = settings
        self.lab = settings.lab
        self.folder = self.root / GRADING_FOLDER / self.lab
        self.results_folder = self.folder / "results"
        self.staged_folder = self.folder / "staged"

    # -- set-up ---------------------------------------------------------------------------

    def _open_nbgrader(self):
        from nbgrader.apps import AutogradeApp
        from sqlalchemy.exc import SAWarning

        # nbgrader 0.9's gradebook code triggers these with SQLAlchemy 2 ("not in session,
        # add operation ... will not proceed"); harmless, and `nbgrader autograde` shows them
        # only in its log. Keep the instructor's terminal readable.
        warnings.filterwarnings("ignore", category=SAWarning)

        self.app = AutogradeApp()
        self.app.initialize([], root=str(self.root))
        self.coursedir = self.app.coursedir
        self.coursedir.assignment_id = self.lab
        self.db_url = self.coursedir.db_url
        handler = logging.FileHandler(self.folder / "nbgrader.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(name)s %(levelname)s] %(message)s"))
        self.app.log.handlers = [handler]
        self.app.log.propagate = False
        self.converter = _staged_autograde_class()(coursedir=self.coursedir, parent=self.app)
        self.converter.force = True
        self.submitted_folder = Path(self.coursedir.format_path(self.coursedir.submitted_directory, ".", ".")).resolve()
        # The converter reads the repaired copies, never the students' own files.
        self.coursedir.submitted_directory = str(self.staged_folder.relative_to(self.root))

    def _log(self, message: str):
        with open(self.folder / "grade.log", "a", encoding="utf-8") as log:
            log.write(f"{datetime.datetime.now().isoformat(timespec='seconds')} {message}\n")

    def _isolation(self) -> Tuple[str, str]:
        """(isolation, why it was chosen); an explicitly asked-for isolation that cannot work here is an error."""
        if self.settings.isolation == "auto":
            return sandbox.choose_isolation()
        asked = self.settings.isolation
        problem = sandbox.isolation_problem(asked)
        if problem:
            advice = sandbox.userns_advice() + "\n" if asked == "bubblewrap" else ""
            raise course.CourseError(f"--isolation {asked} does not work here: {problem}.\n{advice}"
                                     f"Or leave --isolation out: the grader then uses the strongest isolation that works.")
        return asked, "asked for with --isolation" + (f". {sandbox.BASIC_WARNING}" if asked == "basic" else "")

    def _data_dir(self) -> Path:
        from dlmed.data import data_dir

        folder = Path(self.settings.data_dir) if self.settings.data_dir else data_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder.resolve()

    def _sandbox_layout(self):
        hidden = [self.root, Path.home(), "/root", "/home", *self.settings.hide]
        if self.db_url.startswith("sqlite:///"):
            hidden.append(Path(self.db_url[len("sqlite:///"):]).resolve().parent)
        exchange_root = self.app.config.get("Exchange", {}).get("root", "/srv/nbgrader/exchange")
        hidden.append(exchange_root)
        keep = sandbox.python_paths()
        if _torch_home():
            keep.append(str(_torch_home()))
        return sandbox.plan_paths([str(p) for p in hidden], keep)

    def _kernel_env(self) -> Dict[str, str]:
        threads = str(max(1, (os.cpu_count() or 1) // max(1, self.settings.jobs)))
        python_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": os.pathsep.join([python_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "NBGRADER_EXECUTION": "autograde",
            # One kernel per core: more threads per kernel would only fight over the cores.
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
        }
        if _torch_home():
            env["TORCH_HOME"] = str(_torch_home())
        return env

    def _font_cache(self) -> Optional[str]:
        import matplotlib

        import matplotlib.font_manager  # noqa: F401  (builds the cache once, here, not in every kernel)

        caches = sorted(Path(matplotlib.get_cachedir()).glob("fontlist-*.json"))
        return str(caches[-1]) if caches else None

    def _job_base(self) -> dict:
        hide, keep = self.layout
        return {
            "isolation": self.isolation, "hide": hide, "keep": keep, "data_dir": str(self.data_dir),
            "data_writable": False, "limits": dataclasses.asdict(self.settings.limits),
            "env": self.kernel_env, "font_cache": self.font_cache,
        }

    # -- collecting submissions ----------------------------------------------------------

    def import_zips(self):
        """Put LMS zip exports where ``nbgrader zip_collect`` looks and run it."""
        archive = self.root / "downloaded" / self.lab / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        for zip_path in self.settings.zips:
            zip_path = Path(zip_path)
            if not zip_path.is_file():
                raise course.CourseError(f"no such zip file: {zip_path}")
            _check_zip(zip_path)
            shutil.copy2(zip_path, archive / zip_path.name)
        course.run_nbgrader(["zip_collect", self.lab, "--force"], self.root, log_name=str(self.folder / "zip_collect.log"))

    def students(self) -> List[str]:
        """Student ids with a folder for this lab in submitted/."""
        found = sorted(p.parent.name for p in self.submitted_folder.glob(f"*/{self.lab}") if p.is_dir())
        if self.settings.students:
            wanted = set(self.settings.students)
            found = [s for s in found if s in wanted]
        return found

    # -- one student ----------------------------------------------------------------------

    def _fingerprint(self, student: str) -> str:
        digest = hashlib.sha256()
        digest.update(f"{GRADER_VERSION}|{self.lab_info.fingerprint}|{self.settings.limits}\n".encode())
        folder = self.submitted_folder / student / self.lab
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                digest.update(str(path.relative_to(folder)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def _journal_path(self, student: str) -> Path:
        return self.results_folder / f"{student}.json"

    def _up_to_date(self, student: str, fingerprint: str) -> Optional[StudentResult]:
        path = self._journal_path(student)
        if self.settings.force or not path.is_file():
            return None
        try:
            result = StudentResult.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None
        autograded = Path(self.coursedir.format_path(self.coursedir.autograded_directory, student, self.lab))
        if result.fingerprint != fingerprint or result.status == "grader error" or student not in self.in_gradebook:
            return None
        if result.status == "graded" and not (autograded / self.lab_info.notebook_name).is_file():
            return None
        result.reused = True
        return result

    def _stage(self, student: str) -> List[str]:
        """Copy a repaired version of the submission to grading/<lab>/staged/; return repair notes."""
        source = self.submitted_folder / student / self.lab
        target = self.staged_folder / student / self.lab
        shutil.rmtree(target.parent, ignore_errors=True)
        target.mkdir(parents=True)
        expected = self.lab_info.notebook_name
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
        notebook, repairs = repair_notebook(chosen.read_text(encoding="utf-8", errors="replace"), self.lab_info)
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

    def prepare(self, student: str):
        """Stage and sanitize one submission; return (job, notes, fingerprint) or a StudentResult when done already."""
        fingerprint = self._fingerprint(student)
        reused = self._up_to_date(student, fingerprint)
        if reused is not None:
            return reused
        notes = []
        try:
            notes = self._stage(student)
            sanitized_path = self.converter.sanitize(student)
        except UngradableSubmission as problem:
            return self.record_ungradable(student, str(problem), notes, fingerprint)
        except Exception as problem:  # nbgrader refused the notebook: zero, with the reason
            return self.record_ungradable(student, f"nbgrader could not prepare it: {type(problem).__name__}: {problem}",
                                          notes, fingerprint)
        notebook = nbformat.read(str(sanitized_path), as_version=4)
        job = dict(self.job_base, notebook=notebook, copy_from=str(sanitized_path.parent),
                   annotations=cell_annotations(notebook))
        return job, notes, fingerprint, sanitized_path

    def run_job(self, job: dict) -> sandbox.SandboxResult:
        """Execute a job in a sandbox with a free slot's user id (called from worker threads)."""
        uid = self.uids.get()
        try:
            return sandbox.run_notebook(dict(job, uid=uid), self.settings.limits)
        finally:
            self.uids.put(uid)

    def record(self, student: str, prepared, result: sandbox.SandboxResult) -> StudentResult:
        """Score an executed notebook into the gradebook and the journal."""
        job, notes, fingerprint, sanitized_path = prepared
        if result.error or result.notebook is None:
            outcome = StudentResult(student, "grader error", reason=result.error or "no notebook came back",
                                    notes=notes, seconds=result.seconds, fingerprint=fingerprint)
            self._log(f"{student}: GRADER ERROR {outcome.reason}")
            self._write_journal(outcome)
            return outcome
        if sanitized_path.exists():
            os.chmod(sanitized_path, 0o644)
        executed = nbformat.from_dict(result.notebook)
        # Outputs and written answers reach the instructor's browser (Formgrader, feedback):
        # inert from here on. nbgrader's scoring runs the same step again (nbgrader_config.py).
        notes = notes + [f"made inert for the browser: {note}" for note in sanitize_notebook(executed)]
        nbformat.write(executed, str(sanitized_path))
        try:
            self.converter.score(student, sanitized_path)
        except Exception as problem:
            return self.record_ungradable(student, f"nbgrader could not score it: {type(problem).__name__}: {problem}",
                                          notes, fingerprint)
        failures = test_failures(executed)
        outcome = StudentResult(student, "graded", scores=self.read_scores(student), reason=result.stop_reason or "",
                                notes=notes, events=result.events, failures=failures, seconds=result.seconds,
                                hidden_seconds=result.hidden_seconds, peak_memory=result.peak_memory,
                                fingerprint=fingerprint)
        self._log(f"{student}: {outcome.points:g} points in {result.seconds:.1f} s"
                  + (f"; stopped: {result.stop_reason}" if result.stop_reason else ""))
        self._write_journal(outcome)
        return outcome

    def record_ungradable(self, student: str, reason: str, notes: List[str], fingerprint: str) -> StudentResult:
        """Give every cell of the submission 0 in the gradebook (as nbgrader does for a missing notebook)."""
        from nbgrader.api import Gradebook

        autograded = Path(self.coursedir.format_path(self.coursedir.autograded_directory, student, self.lab))
        shutil.rmtree(autograded, ignore_errors=True)  # no stale notebook from an earlier run
        timestamp = self.coursedir.get_existing_timestamp(str(self.submitted_folder / student / self.lab))
        with Gradebook(self.db_url, self.coursedir.course_id) as gradebook:
            gradebook.update_or_create_student(student)
            kwargs = {"timestamp": timestamp} if timestamp else {}
            submission = gradebook.update_or_create_submission(self.lab, student, **kwargs)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
            gradebook.db.commit()
        outcome = StudentResult(student, "not gradable", scores=self.read_scores(student), reason=reason,
                                notes=notes, fingerprint=fingerprint)
        self._log(f"{student}: NOT GRADABLE ({reason})")
        self._write_journal(outcome)
        return outcome

    def _students_in_gradebook(self) -> set:
        """Students the gradebook has a submission of this lab for (a journal entry alone is not enough)."""
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url, self.coursedir.course_id) as gradebook:
            return {submission.student.id for submission in gradebook.find_assignment(self.lab).submissions}

    def read_scores(self, student: str) -> Scores:
        """{grade_id: (autograded score or None for hand-graded cells, max score)} from the gradebook."""
        scores = course.read_scores(self.root, self.lab, self.lab_info.notebook_name, [student], db_url=self.db_url)
        return scores[student]

    def _write_journal(self, outcome: StudentResult):
        path = self._journal_path(outcome.student)
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(outcome.to_json(), indent=1), encoding="utf-8")
        os.replace(partial, path)

    # -- the reference check --------------------------------------------------------------

    def check_reference(self):
        """Execute the instructor's solution in a sandbox: every test must pass, or grading stops.

        This run (trusted code) also makes the data stand-ins the students' kernels then read.
        """
        source = self.root / "source" / self.lab / self.lab_info.notebook_name
        notebook = nbformat.read(str(source), as_version=4)
        job = dict(self.job_base, notebook=notebook, copy_from=str(source.parent), data_writable=True,
                   annotations=cell_annotations(notebook), uid=sandbox.SANDBOX_UID_BASE)
        result = sandbox.run_notebook(job, self.settings.limits)
        if result.error:
            raise course.CourseError(f"the instructor's solution could not be run in the sandbox: {result.error}")
        failures = test_failures(nbformat.from_dict(result.notebook))
        if failures or result.stop_reason:
            details = "\n".join(f"  {name}: {why}" for name, why in failures.items())
            raise course.CourseError(
                f"the instructor's solution of {self.lab} does not pass its own tests in the grading sandbox, "
                f"so students would be graded unfairly. Fix the environment (or the lab) first.\n"
                f"{details}{chr(10) + '  stopped: ' + result.stop_reason if result.stop_reason else ''}")
        self._log(f"reference solution passes every test in {result.seconds:.1f} s")
        return result

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> List[StudentResult]:
        """Grade every submission; return the outcomes in student order."""
        settings = self.settings
        for folder in (self.folder, self.results_folder, self.staged_folder):
            folder.mkdir(parents=True, exist_ok=True)
        self._open_nbgrader()
        if settings.zips:
            self.import_zips()
        self.lab_info = load_lab(self.db_url, self.root, self.lab)
        students = self.students()
        self.in_gradebook = self._students_in_gradebook()
        self.isolation, self.isolation_reason = self._isolation()
        self.data_dir = self._data_dir()
        self.layout = self._sandbox_layout()
        self.kernel_env = self._kernel_env()
        self.font_cache = self._font_cache()
        self.job_base = self._job_base()
        self.uids = queue.Queue()
        for slot in range(settings.jobs):
            self.uids.put(sandbox.SANDBOX_UID_BASE + 1 + slot)
        self._log(f"isolation: {self.isolation}: {self.isolation_reason}")
        self._log(f"grading {len(students)} submissions of {self.lab} with {settings.jobs} parallel kernels; "
                  f"limits: {settings.limits.describe()}")
        _say(f"Isolation '{self.isolation}': {self.isolation_reason}")
        if self.isolation == "basic":
            print("WARNING: student code is not isolated from your files and the network ('basic' isolation).",
                  file=sys.stderr, flush=True)
        _say(f"Grading {len(students)} submissions of {self.lab}: {settings.jobs} at a time, "
             f"isolation '{self.isolation}', {settings.limits.describe()}.")
        if settings.check_reference and students:
            _say("Checking the grading environment with the instructor's solution ...")
            self.check_reference()
        outcomes = self._grade_all(students)
        return [outcomes[s] for s in students]

    def _grade_all(self, students: List[str]) -> Dict[str, StudentResult]:
        from tqdm.auto import tqdm

        outcomes: Dict[str, StudentResult] = {}
        pending = list(students)
        running: Dict[concurrent.futures.Future, Tuple[str, tuple]] = {}
        bar = tqdm(total=len(students), unit="student", desc=f"Grading {self.lab}",
                   disable=not self.settings.progress, dynamic_ncols=True)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.jobs)
        try:
            while pending or running:
                # One more job than slots, so a freed slot starts at once.
                while pending and len(running) <= self.settings.jobs:
                    student = pending.pop(0)
                    prepared = self.prepare(student)
                    if isinstance(prepared, StudentResult):
                        outcomes[student] = prepared
                        bar.update()
                        continue
                    running[pool.submit(self.run_job, prepared[0])] = (student, prepared)
                if not running:
                    continue
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    student, prepared = running.pop(future)
                    outcomes[student] = self.record(student, prepared, future.result())
                    bar.update()
                    bar.set_postfix_str(f"last: {student} {outcomes[student].points:g} pts")
        except BaseException:
            for future in running:
                future.cancel()
            sandbox.stop_all()  # kill running sandboxes; what was recorded stays recorded
            raise
        finally:
            pool.shutdown(wait=True)
            bar.close()
        return outcomes


def _torch_home() -> Optional[Path]:
    """PyTorch's cache folder (ImageNet weights for Lab 2), when there is one: kernels read it as the grader does."""
    folder = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return folder.resolve() if folder.is_dir() else None


def _check_zip(path: Path):
    """Refuse an archive whose members would land outside the folder it is extracted to."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise course.CourseError(f"{path}: the member {name!r} would be written outside the "
                                         f"extraction folder; refusing to import this zip")


def _say(message: str):
    print(message, flush=True)


def grade_class(root: Path, settings: GradeSettings) -> List[StudentResult]:
    """Grade all submissions of ``settings.lab`` in the course at ``root``; write feedback and the report.

    Returns the students' outcomes. Raises :class:`dlmed.course.CourseError` when the
    course is not ready (no generated assignment, the solution fails its tests, ...).
    """
    from dlmed import report

    root = Path(root).resolve()
    previous = Path.cwd()
    os.chdir(root)  # nbgrader reads its configuration from the working folder too
    try:
        grader = ClassGrader(root, settings)
        started = time.monotonic()
        outcomes = grader.run()
        seconds = time.monotonic() - started
        if settings.feedback and outcomes:
            _say("Writing feedback (nbgrader generate_feedback) ...")
            course.run_nbgrader(["generate_feedback", settings.lab, "--force"], root,
                                log_name=str(grader.folder / "feedback.log"))
        paths = report.write_report(grader.folder, grader.lab_info, outcomes, seconds=seconds,
                                    isolation=grader.isolation, isolation_reason=grader.isolation_reason,
                                    limits=settings.limits, jobs=settings.jobs)
        _say(report.summary(grader.lab_info, outcomes, seconds))
        _say(f"Report: {paths['html']} (scores: {paths['csv']})")
        return outcomes
    finally:
        os.chdir(previous)
