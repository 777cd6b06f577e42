"""Running notebooks in sandboxes for the class grader: what every job shares, one user id per
parallel slot, and the reference check.

Each job runs in :func:`dlmed.grader.sandbox.run_notebook`; here is what the class grader
gives every one of them: the isolation, what the kernels must not see (the course folder,
home folders, the gradebook, the exchange), the data folder (read-only), the kernels'
environment (one thread per core), the limits.
"""

import dataclasses
import os
import queue
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import nbformat

from dlmed import course
from dlmed.grader import sandbox
from dlmed.grader.executor import cell_annotations
from dlmed.grader.gradebook import test_failures


#: Warm starts only where the memory limit leaves at least this much beside the preloaded libraries.
WARM_HEADROOM = 2**29


class SandboxRunner:
    """Runs notebooks in sandboxes, ``settings.jobs`` at a time (:class:`~dlmed.grader.classgrade.GradeSettings`)."""

    def __init__(self, root: Path, settings, db_url: str, exchange_root: str,
                 isolation: Optional[Tuple[str, str]] = None, zygote=None):
        self.limits = settings.limits
        # (isolation, why): chosen by the caller (see start_zygote) or here
        self.isolation, self.isolation_reason = isolation or choose_isolation(settings.isolation)
        self.data_dir = _data_dir(settings.data_dir)
        hide, keep = _layout(root, settings.hide, db_url, exchange_root)
        self.job_base = {
            "isolation": self.isolation, "hide": hide, "keep": keep, "data_dir": str(self.data_dir),
            "data_writable": False, "limits": dataclasses.asdict(settings.limits),
            "env": _kernel_env(settings.jobs), "font_cache": _font_cache(),
        }
        self.uids = queue.Queue()
        for slot in range(settings.jobs):
            self.uids.put(sandbox.SANDBOX_UID_BASE + 1 + slot)
        self.zygote = zygote if self.isolation == "namespaces" else None  # warm starts need namespaces

    def warm_start_problem(self) -> Optional[str]:
        """Why warm starts are off after all (the zygote did not start), else None; waits until it is ready."""
        if self.zygote is None:
            return None
        problem = self.zygote.wait_ready()
        headroom = self.limits.memory_bytes - self.zygote.data_bytes
        if not problem and headroom < WARM_HEADROOM:
            # A lab's own kernel has these libraries after its set-up cell; a notebook that imports
            # less must not lose most of its memory limit to them.
            problem = (f"the memory limit ({self.limits.memory_bytes / 2**30:.1f} GiB) leaves less than "
                       f"{WARM_HEADROOM / 2**30:.1f} GiB beside the {self.zygote.data_bytes / 2**30:.1f} GiB of "
                       f"libraries a warm kernel starts with")
        if problem:
            self.close()
        return problem

    def close(self):
        """End the zygote, if one runs."""
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def job(self, notebook, copy_from: Path, **overrides) -> dict:
        """A job that executes ``notebook`` with the files of ``copy_from`` beside it."""
        return dict(self.job_base, notebook=notebook, copy_from=str(copy_from),
                    annotations=cell_annotations(notebook), **overrides)

    def run(self, job: dict) -> sandbox.SandboxResult:
        """Execute a job in a sandbox with a free slot's user id (called from worker threads)."""
        uid = self.uids.get()
        try:
            return sandbox.run_notebook(dict(job, uid=uid), self.limits, self.zygote)
        finally:
            self.uids.put(uid)

    def check_reference(self, source: Path, lab: str) -> sandbox.SandboxResult:
        """Execute the instructor's solution at ``source``: every test must pass, or grading stops.

        This run (trusted code) also makes the data stand-ins the students' kernels then read.
        """
        notebook = nbformat.read(str(source), as_version=4)
        job = self.job(notebook, source.parent, data_writable=True, uid=sandbox.SANDBOX_UID_BASE)
        result = sandbox.run_notebook(job, self.limits, self.zygote)
        if result.error:
            raise course.CourseError(f"the instructor's solution could not be run in the sandbox: {result.error}")
        failures = test_failures(nbformat.from_dict(result.notebook))
        if failures or result.stop_reason:
            details = "\n".join(f"  {name}: {why}" for name, why in failures.items())
            raise course.CourseError(
                f"the instructor's solution of {lab} does not pass its own tests in the grading sandbox, "
                f"so students would be graded unfairly. Fix the environment (or the lab) first.\n"
                f"{details}{chr(10) + '  stopped: ' + result.stop_reason if result.stop_reason else ''}")
        return result


def start_zygote(settings, isolation: str):
    """Start the zygote sandboxes are forked from (:mod:`dlmed.grader.zygote`) where warm starts work, else None.

    Started before the rest of the set-up, which it overlaps; call it from the thread that
    grades (the zygote dies with it) and give it to :class:`SandboxRunner`, which ends it.
    """
    from dlmed.grader import zygote

    if not settings.warm_start or not zygote.usable(isolation):
        return None
    return zygote.Zygote(_kernel_env(settings.jobs), str(_data_dir(settings.data_dir)), _font_cache())


def choose_isolation(asked: str) -> Tuple[str, str]:
    """(isolation, why it was chosen); an explicitly asked-for isolation that cannot work here is an error."""
    if asked == "auto":
        return sandbox.choose_isolation()
    problem = sandbox.isolation_problem(asked)
    if problem:
        advice = sandbox.userns_advice() + "\n" if asked == "bubblewrap" else ""
        raise course.CourseError(f"--isolation {asked} does not work here: {problem}.\n{advice}"
                                 f"Or leave --isolation out: the grader then uses the strongest isolation that works.")
    return asked, "asked for with --isolation" + (f". {sandbox.BASIC_WARNING}" if asked == "basic" else "")


def _data_dir(configured: Optional[Path]) -> Path:
    """The data folder the kernels read: ``--data-dir``, else $DLMED_DATA or ~/dlmed-data (created)."""
    from dlmed.datasets import data_dir

    folder = Path(configured) if configured else data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def _layout(root: Path, also_hidden: Sequence[Path], db_url: str, exchange_root: str):
    """(hide, keep): the folders the kernels must not see, and the ones inside them they need."""
    hidden = [root, Path.home(), "/root", "/home", *also_hidden]
    if db_url.startswith("sqlite:///"):
        hidden.append(Path(db_url[len("sqlite:///"):]).resolve().parent)
    hidden.append(exchange_root)
    keep = sandbox.python_paths()
    if _torch_home():
        keep.append(str(_torch_home()))
    return sandbox.plan_paths([str(p) for p in hidden], keep)


def _kernel_env(jobs: int) -> Dict[str, str]:
    """The kernels' whole environment."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
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


def _font_cache() -> Optional[str]:
    """Matplotlib's font cache, built once here rather than in every kernel."""
    import matplotlib

    import matplotlib.font_manager  # noqa: F401  (builds the cache once, here, not in every kernel)

    caches = sorted(Path(matplotlib.get_cachedir()).glob("fontlist-*.json"))
    return str(caches[-1]) if caches else None


def _torch_home() -> Optional[Path]:
    """PyTorch's cache folder (ImageNet weights for Lab 2), when there is one: kernels read it as the grader does."""
    folder = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return folder.resolve() if folder.is_dir() else None
