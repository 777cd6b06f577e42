"""Execute one submitted notebook for the class grader, inside its sandbox.

:class:`GuardedExecute` executes like nbgrader's ``Execute`` preprocessor (the same per-cell
timeout, interrupt, error-on-timeout and recording of errors, so cells score as with
``nbgrader autograde``) with what grading a whole class needs on top:

- a time limit for the whole notebook as well as per cell; a cell that ignores the
  interrupt gets the kernel killed;
- a kernel that dies (memory limit, ``os._exit``, a crash) costs one exercise, not the
  rest of the notebook: the crashing cell gets an error output saying why; when it was an
  answer, so do the test cells of its exercise (they are not run); then the kernel is
  started again exactly as the first (the same launcher: sandbox, user, limits; the guard
  installed again; the same watchdog), the cells that ran before the crash are replayed
  (:meth:`GuardedExecute._recover`) and the run goes on, all within the notebook's time
  limit. A second death (in the replay or later), or a kernel that can no longer be
  trusted, stops the run: every remaining cell gets an error output, so no test cell
  scores by default (nbgrader gives full marks to a test cell without output);
- the integrity guard (:mod:`dlmed.grader.guard`) around every graded test cell;
- the hidden part of a test cell never runs in the kernel: the kernel runs the visible part
  as the cell, and the hidden part runs in a sealed fork of the kernel that gets the code
  from here and returns only a verdict (:meth:`GuardedExecute._run_hidden`), so no thread
  of the submission can read the hidden tests or change what they compare;
- a cap on the outputs kept, so a cell printing gigabytes cannot exhaust the grader;
- a memory watchdog over the kernel and its children;
- a log of everything that happened (``events``), for the instructor's report.

It runs in the sandbox's supervisor process (:mod:`dlmed.grader.sandbox`), never in the kernel, and
does not import nbgrader (1.7 s per student). What it needs to know about cells (which names
a test reads and binds, its hidden code) the grader works out beforehand with
:func:`cell_annotations`.
"""

import ast
import asyncio
import contextlib
import copy
import errno
import functools
import json
import os
import queue
import secrets
import select
import signal
import socket
import struct
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import psutil
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from traitlets import Dict as DictTrait
from traitlets import Type

from dlmed.course.grading import HIDDEN_FAILED, is_graded_test_cell, split_hidden_tests

#: ``ename`` of the error outputs the grader itself adds to cells.
GRADER_ERROR = "GradingStopped"
INTEGRITY_ERROR = "GradingIntegrityError"
#: ``ename`` of the error output of a cell in which the kernel died, and of the tests that crash cost.
KERNEL_DIED = "KernelDied"

#: Modules and classes whose state the guard snapshots and restores around test cells.
GUARDED_MODULES = [
    "builtins", "math", "copy", "random", "operator", "numpy", "numpy.testing",
    "torch", "torch.nn", "torch.nn.functional", "torch.testing", "torch.utils.data",
    "sklearn.metrics", "pandas", "dlmed.checks",
]
#: Guarded always: what the fork that runs hidden tests seals itself with (dlmed.grader.guard.run_hidden
#: puts them back just before it forks).
SEALING_MODULES = ["os", "signal", "socket", "ctypes", "io", "json", "faulthandler", "threading", "dlmed.grader.seal"]
GUARDED_CLASSES = ["torch.Tensor", "torch.nn.Module"]



# The cells annotated are the instructor's (test and locked cells, restored by nbgrader): the
# same in every submission, so each is worked out once per run (``lru_cache``), not per student.


@functools.lru_cache(maxsize=1024)
def _python_source(source: str) -> str:
    """Cell source with IPython syntax (``%magic``, ``!cmd``) turned into plain Python."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _parse(source: str) -> Optional[ast.Module]:
    try:
        return ast.parse(_python_source(source))
    except SyntaxError:
        return None


def names_read(source: str) -> List[str]:
    """Every plain name used anywhere in ``source`` (the names a test might read)."""
    return list(_names_read(source))


@functools.lru_cache(maxsize=1024)
def _names_read(source: str) -> Tuple[str, ...]:
    tree = _parse(source)
    if tree is None:
        return ()
    return tuple(sorted({node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}))


def names_bound(source: str) -> List[str]:
    """Names that ``source`` binds at module level (imports, assignments, defs, loop targets)."""
    return list(_names_bound(source))


@functools.lru_cache(maxsize=1024)
def _names_bound(source: str) -> Tuple[str, ...]:
    tree = _parse(source)
    if tree is None:
        return ()
    bound = set()

    def visit(statements):
        for statement in statements:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(statement.name)
                continue
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                bound.update((alias.asname or alias.name).split(".")[0] for alias in statement.names)
                continue
            for node in ast.walk(statement):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                    continue
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    bound.add(node.id)
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(statement, field, []) or [])
            for handler in getattr(statement, "handlers", []) or []:
                visit(handler.body)

    visit(tree.body)
    return tuple(sorted(bound))


def is_trusted_cell(cell) -> bool:
    """A locked instructor cell that is neither a test nor an answer: nbgrader restores its source."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("locked")) and not meta.get("grade") and not meta.get("solution")


def cell_annotations(nb) -> Dict[str, Dict]:
    """What the executor must know per cell, by cell index (as a string, for JSON).

    Test cells: ``reads`` and ``binds`` (names the visible part uses and binds: what the
    kernel runs); with hidden tests also ``hidden`` (the hidden part as plain Python, run in
    the sealed fork) and ``hidden_reads``/``hidden_binds`` (the same for the whole cell).
    Trusted instructor cells: ``binds``.
    """
    annotations = {}
    for index, cell in enumerate(nb.cells):
        if is_graded_test_cell(cell):
            visible, hidden = split_hidden_tests(cell.source)
            annotations[str(index)] = {"reads": names_read(visible), "binds": names_bound(visible)}
            if hidden.strip():
                annotations[str(index)].update(hidden=_python_source(hidden), hidden_reads=names_read(cell.source),
                                               hidden_binds=names_bound(cell.source))
        elif is_trusted_cell(cell):
            annotations[str(index)] = {"binds": names_bound(cell.source)}
    return annotations


def _memory_of(processes, exact: bool) -> int:
    """Memory used by ``processes``: resident sizes, or (``exact``) their proportional set sizes."""
    total = 0
    for process in processes:
        try:
            if exact:
                info = process.memory_full_info()
                total += getattr(info, "pss", None) or info.uss
            else:
                total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output as a kernel would send it."""
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class SandboxKernelClient(AsyncKernelClient):
    """The kernel client of :class:`SandboxKernelManager`: ready as soon as the kernel has answered."""

    async def wait_for_ready(self, timeout: Optional[float] = None) -> None:
        """Wait until the kernel answers on both channels; raise RuntimeError if it dies or ``timeout`` passes.

        jupyter_client's own wait ends only after 0.2 s without a message on IOPub (half of a
        warm kernel's start, for every student). Here it ends at the idle status of the last
        ``kernel_info`` request on IOPub: it is connected then, and nothing else is to come.
        """
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            request = self.kernel_info()
            try:
                reply = await ensure_async(self.shell_channel.get_msg(timeout=1))
            except queue.Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply" and await self._idle_after(request, 0.5):
                self._handle_kernel_info_reply(reply)
                return
            if not await ensure_async(self.is_alive()):
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    async def _idle_after(self, request: str, seconds: float) -> bool:
        """Read IOPub until the kernel says it is idle after ``request``; False if that does not come in time."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message = await ensure_async(self.iopub_channel.get_msg(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                return False
            if (message["msg_type"] == "status" and message["content"].get("execution_state") == "idle"
                    and message["parent_header"].get("msg_id") == request):
                return True
        return False


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command is prefixed by the sandbox's launcher."""

    client_factory = Type(SandboxKernelClient, klass=AsyncKernelClient)

    launcher: List[str] = []
    #: :class:`dlmed.grader.zygote.KernelSeed` objects: each kernel started (the first, one
    #: restarted after a crash) takes the next and starts warm from it (the launcher's settings
    #: and path, without exec'ing Python again); when none is left, the usual way.
    seeds = ()

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        """Wait until the kernel has ended, looking every 10 ms (jupyter_client's 100 ms, once per student, add up)."""
        await super()._async_wait(pollinterval=min(pollinterval, 0.01))

    def format_kernel_cmd(self, extra_arguments=None):
        """The usual kernel command, started through :attr:`launcher` (limits, user, namespaces)."""
        return list(self.launcher) + super().format_kernel_cmd(extra_arguments)

    async def _async_launch_kernel(self, kernel_cmd: List[str], **kw):
        from dlmed.grader.zygote import kernel_command_is_ipykernel

        seed, self.seeds = (self.seeds[0], self.seeds[1:]) if self.seeds else (None, ())
        prefix = list(self.launcher)
        command = kernel_cmd[len(prefix):]
        if seed is None or kernel_cmd[:len(prefix)] != prefix or not kernel_command_is_ipykernel(command):
            if seed is not None:
                seed.discard()
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        # What jupyter_client's launch_kernel gives a kernel it starts, given to the seed instead.
        env = dict(kw.get("env") or os.environ, JPY_PARENT_PID=str(os.getpid()))
        cwd = str(kw.get("cwd") or os.getcwd())
        settings = json.loads(prefix[prefix.index("--launch") + 1])
        try:
            process = seed.start(command, settings, env, cwd, [kw.get("stdin"), kw.get("stdout"), kw.get("stderr")])
        except (OSError, RuntimeError):  # the seed died: this kernel starts the usual way
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        provisioner = self.provisioner
        provisioner.process, provisioner.pid, provisioner.pgid, provisioner.cwd = process, process.pid, process.pid, cwd
        self._reconcile_connection_info(provisioner.connection_info)


class GuardedExecute(NotebookClient):
    """nbgrader's way of executing, plus a notebook time limit, kernel-death handling, guard and output cap."""

    # nbgrader's Execute defaults: errors do not stop the run; a timeout interrupts the kernel
    # and records this error in the cell.
    error_on_timeout = DictTrait(default_value={
        "ename": "CellTimeoutError", "evalue": "",
        "traceback": ["\x1b[0;31mCellTimeoutError\x1b[0m: No reply from kernel before timeout"],
    })

    def setup(self, notebook_timeout: float, max_output_bytes: int, memory_bytes: int,
              annotations: Dict, guard_modules=None, guard_classes=None):
        """Set the class grader's limits (call before :meth:`run`); ``timeout`` stays the per-cell limit."""
        self.allow_errors = True
        self.interrupt_on_timeout = True
        self.cell_timeout = self.timeout
        self.annotations = annotations
        self.notebook_timeout = notebook_timeout
        self.max_output_bytes = max_output_bytes
        self.memory_bytes = memory_bytes
        self.guard_modules = list(GUARDED_MODULES if guard_modules is None else guard_modules) + SEALING_MODULES
        self.guard_classes = GUARDED_CLASSES if guard_classes is None else guard_classes
        self.events: List[Dict] = []
        self.stop_reason: Optional[str] = None
        self.peak_memory = 0
        self.output_bytes = 0
        self.watchdog_reason: Optional[str] = None
        self.hidden_seconds: List[float] = []  # per hidden-test part: fork, seal, run and verdict
        self.kernel_ready: Optional[float] = None  # time.monotonic() when the kernel first answered
        self.restarts_left = 1  # kernel deaths the run survives (see _recover)
        self.replaying = False  # re-running the cells before a crash: outputs and events are dropped
        self.lost: set = set()  # indices of test cells a crash cost (marked, never run)
        self._restarted = False

    # -- the run --------------------------------------------------------------------------

    def run(self, km: AsyncKernelManager, **start_kwargs) -> NotebookNode:
        """Execute the notebook (in place) with ``km`` and return it.

        ``start_kwargs`` go to ``start_kernel`` (cwd, env, stdout, ...). The kernel is killed at the end.
        """
        self.km = km
        self.reset_execution_trackers()
        self.started = time.monotonic()
        self.deadline = self.started + self.notebook_timeout
        run_sync(self._run)(cleanup_kc=True, **start_kwargs)
        return self.nb

    def on_cell_executed(self, **kwargs):
        """Record the reply's error in the cell when no error output says it (nbgrader does the same)."""
        cell, reply = kwargs["cell"], kwargs["execute_reply"]
        if reply["content"]["status"] != "error":
            return
        if any(o.output_type == "error" and o.ename == reply["content"]["ename"] for o in cell.outputs):
            return
        output = NotebookNode(output_type="error", ename=reply["content"]["ename"],
                              evalue=reply["content"]["evalue"], traceback=reply["content"]["traceback"])
        if not output.traceback:
            output.traceback = ["ERROR: An error occurred while showtraceback was disabled"]
        cell.outputs.append(output)

    async def _run(self, **start_kwargs):
        async with self.async_setup_kernel(**start_kwargs):
            reply = await self._reply(await ensure_async(self.kc.kernel_info()), self.startup_timeout)
            self.kernel_ready = time.monotonic()
            if reply is not None:
                self.nb.metadata["language_info"] = reply["content"].get("language_info", {})
            self._watchdog_task = asyncio.ensure_future(self._watchdog())
            try:
                await self._run_cells()
            finally:
                self._watchdog_task.cancel()

    async def _install_guard(self) -> bool:
        answer = await self._guard("install", [self.guard_modules, self.guard_classes], timeout=self.cell_timeout)
        if answer is None:
            self._stop("the grader could not start its integrity guard in the kernel")
        return answer is not None

    async def _run_cells(self):
        await self._install_guard()
        with self._hidden_channel():
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code" or not cell.source.strip() or index in self.lost:
                    continue
                if self.stop_reason:
                    self._mark_not_run(cell)
                    continue
                death = await self._run_cell(cell, index)
                if death is not None:
                    await self._recover(index, death)

    async def _run_cell(self, cell, index) -> Optional[str]:
        """Run one cell with the guard around it; return why the kernel died in it, or None."""
        graded = is_graded_test_cell(cell)
        info = self.annotations.get(str(index), {})
        label = _label(cell, index)
        if graded:
            answer = await self._guard("enter", [info.get("reads", []), info.get("binds", [])])
            if answer is None:
                if not await self._kernel_alive():  # it died before the test ran (a thread of the submission?)
                    return self._died(cell, label)
                self._stop(f"the kernel did not run the grader's integrity check before {label}: it was tampered with")
                self._mark_not_run(cell)
                return None
            if answer["restored"]:
                self._event("tampering-undone", label, answer["restored"])
            if answer["shadowed"]:
                self._event("names-set-aside", label, answer["shadowed"])
            threads = answer["threads"]
        elif is_trusted_cell(cell):
            answer = await self._guard("before_trusted", [])
            if answer and answer["restored"]:
                self._event("tampering-undone", label, answer["restored"])
        remaining = self.deadline - time.monotonic()
        if remaining < 1:
            self._stop(f"the notebook ran past its time limit of {self.notebook_timeout:g} s"
                       + (" (replay of the cells before the crash included)" if self._restarted else ""))
            self._mark_not_run(cell)
            return None
        self.timeout = max(1, int(min(self.cell_timeout, remaining)))
        full_source = cell.source
        if graded and "hidden" in info:
            cell.source = split_hidden_tests(full_source)[0]  # the kernel runs the visible part only
        try:
            await self.async_execute_cell(cell, index, execution_count=self.code_cells_executed + 1, store_history=True)
        except DeadKernelError:
            return self._died(cell, label)
        except CellTimeoutError as error:  # no IOPub output after the reply: treat like a timeout
            cell.outputs.append(error_output("CellTimeoutError", str(error).splitlines()[0]))
        except Exception as error:  # whatever else the kernel's messages did to nbclient: this student's run ends
            reason = f"the grader could not run {label}: {type(error).__name__}: {error}"
            cell.outputs.append(error_output(GRADER_ERROR, reason))
            self._stop(reason)
            return None
        finally:
            cell.source = full_source  # nbgrader checks and records the cell as the student received it
        if any(o.get("ename") == "CellTimeoutError" for o in cell.outputs if o.output_type == "error"):
            self._event("timeout", label, [f"ran past the cell time limit of {self.timeout} s and was interrupted"])
            if await self._guard("ping", [], timeout=10) is None:
                await self._kill_kernel()
                self._stop(f"{label} ran past its time limit and ignored the interrupt; the kernel was stopped")
                return None
        if graded:
            # Hidden parts are never replayed: they ran in a fork that changed nothing in the
            # kernel, and their verdict is recorded already.
            if ("hidden" in info and not self.replaying and not self.stop_reason
                    and not any(o.output_type == "error" for o in cell.outputs)):
                await self._hidden_tests(cell, label, info)
            if not await self._after_test(cell, label, threads):
                return self._died(cell, label)
        elif is_trusted_cell(cell):
            await self._guard("record_trusted", [info.get("binds", [])])
        return None

    # -- a crash costs one exercise -------------------------------------------------------

    def _died(self, cell, label) -> str:
        """Note in ``cell`` and the log that the kernel died in it; return why it died."""
        reason = self._death_reason()
        cell.outputs.append(error_output(KERNEL_DIED, reason))
        self._event("kernel-died", label, [reason])
        return reason

    async def _recover(self, index: int, reason: str):
        """After the kernel died in cell ``index``: restart it, replay the cells before, go on; or stop.

        What is replayed: every code cell that ran before the crash, in order (the set-up
        cell, the answers, the student's own cells, the visible part of the test cells), in
        the new kernel and under the guard as in the first run, so that the kernel holds what
        it held before the crash. The replay's outputs are dropped: the notebook keeps the
        first run's outputs, so no score changes. Hidden tests are not replayed: they ran in
        a sealed fork of the kernel that left nothing in it, and their verdicts are recorded.
        The crashing cell itself is not run again (it would crash again); when it is an
        answer, the test cells of its exercise are marked as failed and not run: the crash
        costs that exercise. Restart and replay count against the notebook's time limit.
        """
        cell = self.nb.cells[index]
        label = _label(cell, index)
        if self.restarts_left <= 0:
            self._stop(f"{reason} (in {label}; the kernel had died once already and was restarted)"
                       if self._restarted else f"{reason} (in {label})")
            return
        self.restarts_left -= 1
        self._restarted = True
        lost = [] if is_graded_test_cell(cell) else self._exercise_tests(index)
        for test in lost:
            self.lost.add(test)
            self.nb.cells[test].outputs = [error_output(
                KERNEL_DIED, f"not run: the kernel died in the answer to this exercise ({label}): {reason}. "
                             f"The exercise scores 0.")]
            self.nb.cells[test].execution_count = None
        replay = [i for i, c in enumerate(self.nb.cells[:index]) if c.cell_type == "code" and c.source.strip()]
        started = time.monotonic()
        problem = await self._restart_kernel()
        if problem:
            self._stop(f"{reason} (in {label}); the kernel could not be restarted: {problem}")
            return
        # The replay runs copies of the cells in a copy of the notebook (nbclient puts each cell it
        # ran back into self.nb): the notebook keeps the first run's outputs.
        notebook, self.nb = self.nb, NotebookNode(self.nb, cells=list(self.nb.cells))
        self.replaying = True
        try:
            if not await self._install_guard():
                return
            for replayed in replay:
                original = notebook.cells[replayed]
                copy_ = NotebookNode(cell_type="code", source=original.source, outputs=[], execution_count=None,
                                     metadata=copy.deepcopy(original.metadata))
                death = await self._run_cell(copy_, replayed)
                if death is not None:
                    self._stop(f"{death} (in {_label(copy_, replayed)}, replayed after the kernel had died in {label})")
                if self.stop_reason:
                    return
        finally:
            self.replaying = False
            self.nb = notebook
        seconds = time.monotonic() - started
        names = [_label(self.nb.cells[i], i) for i in replay]
        details = [f"the kernel died in {label} ({reason}); it was started again in the same sandbox, with the same "
                   f"limits, guard and watchdog"]
        if lost:
            details.append(f"not run, scored 0 (the tests of the exercise that crashed): "
                           f"{', '.join(_label(self.nb.cells[i], i) for i in lost)}")
        details.append(f"replayed the {len(replay)} cells that ran before it, in {seconds:.1f} s (outputs dropped, "
                       f"scores from the first run, hidden tests not run again): {', '.join(names)}")
        self._event("kernel-restarted", label, details)
        went_on = (f"The grader restarted the kernel, ran the {len(replay)} cells before {label} again and went on "
                   f"with the rest of the notebook.")
        for output in [o for i in [index] + lost for o in self.nb.cells[i].outputs if o.get("ename") == KERNEL_DIED]:
            output.evalue = f"{output.evalue.rstrip('.')}. {went_on}"
            output.traceback = [f"{KERNEL_DIED}: {output.evalue}"]

    def _exercise_tests(self, index: int) -> List[int]:
        """The graded test cells right after code cell ``index`` (its exercise's tests), up to the next other code cell."""
        tests = []
        for following in range(index + 1, len(self.nb.cells)):
            cell = self.nb.cells[following]
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if not is_graded_test_cell(cell):
                break
            tests.append(following)
        return tests

    async def _restart_kernel(self) -> Optional[str]:
        """Start a new kernel in place of the dead one, as the first was started; None, or what failed.

        The kernel manager starts it with the launch arguments of the first (the sandbox's
        launcher with its user, namespaces and limits; the same environment and folder), on
        new ports. What the dead kernel left is killed first; the watchdog starts again for
        the new kernel.
        """
        remaining = self.deadline - time.monotonic()
        if remaining < 2:
            return f"no time was left of the notebook's time limit of {self.notebook_timeout:g} s"
        self._watchdog_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watchdog_task
        await self._kill_kernel()  # whatever of the dead kernel's process group is still there
        with contextlib.suppress(Exception):
            await ensure_async(self.kc.stop_channels())
        self.kc = None
        self._kernel_pid_found = None
        self.watchdog_reason = None
        try:
            await asyncio.wait_for(self._start_kernel_again(), remaining)
        except asyncio.TimeoutError:
            return f"it did not start within the {remaining:.0f} s left of the notebook's time limit"
        except Exception as error:  # the kernel could not start: nothing more to grade
            return f"{type(error).__name__}: {error}"
        finally:
            self._watchdog_task = asyncio.ensure_future(self._watchdog())
        return None

    async def _start_kernel_again(self):
        await ensure_async(self.km.restart_kernel(now=True, newports=True))
        self.kc = self.km.client()
        await ensure_async(self.kc.start_channels())
        await ensure_async(self.kc.wait_for_ready(timeout=max(1, self.deadline - time.monotonic())))
        self.kc.allow_stdin = False

    async def _kernel_alive(self) -> bool:
        return bool(await ensure_async(self.km.is_alive()))

    def process_message(self, msg, cell, cell_index):
        """As nbclient does; while replaying only the end of the cell counts: its outputs are dropped."""
        if not self.replaying:
            return super().process_message(msg, cell, cell_index)
        if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
            raise CellExecutionComplete()
        return None

    async def _after_test(self, cell, label, threads_before) -> bool:
        """Check and undo what the test's run changed; False when the kernel has died (in the hidden tests' fork?)."""
        answer = await self._guard("leave", [])
        if answer is None:
            if not await self._kernel_alive():
                return False
            cell.outputs.append(error_output(INTEGRITY_ERROR, "the kernel stopped answering the grader's integrity check"))
            self._stop(f"the kernel did not run the grader's integrity check after {label}: it was tampered with")
            return True
        if answer["changed"]:
            cell.outputs.append(error_output(
                INTEGRITY_ERROR, "changed while this test ran, so it cannot count: " + "; ".join(answer["changed"])))
            self._event("changed-during-test", label, answer["changed"])
        threads = sorted(set(threads_before) | set(answer["threads"]))
        if threads:
            cell.outputs.append(error_output(
                INTEGRITY_ERROR, "a thread the submission started was running while this test ran (it could change "
                "what the test compares), so the test cannot count"))
            self._event("student-thread", label, threads)
        # nbgrader reads the first error or execute_result: a result published by student code
        # before the error must not turn a failed test into partial credit.
        if any(o.output_type == "error" for o in cell.outputs):
            forged = [o for o in cell.outputs if o.output_type == "execute_result"]
            if forged:
                cell.outputs = [o for o in cell.outputs if o.output_type != "execute_result"]
                self._event("result-removed", label, ["an execute_result published inside a failing test was removed"])
        return True

    # -- hidden tests in a sealed fork ----------------------------------------------------

    @contextlib.contextmanager
    def _hidden_channel(self):
        """Listen, for the whole run, where sealed copies of the kernel ask for their hidden tests.

        A Unix socket with a random name in the kernel's runtime folder (with namespaces a
        folder the kernel may traverse but not list). Anyone in the sandbox may connect;
        only the copy the guard just forked gets the code (checked with ``SO_PEERCRED``).
        """
        folder = os.environ.get("JUPYTER_RUNTIME_DIR") or tempfile.gettempdir()
        os.makedirs(folder, exist_ok=True)
        self.channel_path = os.path.join(folder, f"hidden-{secrets.token_hex(8)}.sock")
        self.channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.channel.bind(self.channel_path)
            os.chmod(self.channel_path, 0o666)  # the kernel's own user must be able to connect
            self.channel.listen(16)
            self.channel.setblocking(False)
            yield
        finally:
            self.channel.close()
            with contextlib.suppress(OSError):
                os.unlink(self.channel_path)

    async def _hidden_tests(self, cell, label, info):
        """Run the cell's hidden part in a sealed fork; a failure becomes a ``HiddenTestFailed`` error output."""
        started = time.monotonic()
        verdict = await self._run_hidden(label, info)
        self.hidden_seconds.append(time.monotonic() - started)
        if verdict.get("gaps"):
            self._event("hidden-tests-unsealed", label, verdict["gaps"])
        if not verdict.get("passed"):
            message = f"{verdict.get('ename') or 'Error'}: {verdict.get('evalue') or ''}".rstrip(": ")
            cell.outputs.append(error_output(HIDDEN_FAILED, message))  # in full for the instructor; feedback: a fixed text

    async def _run_hidden(self, label, info) -> Dict:
        """Fork, stop every other process of the submission, send the hidden code, read the verdict, kill the fork."""
        answer = await self._guard("run_hidden", [self.channel_path])
        if answer is not None and answer.get("child") is None and answer.get("errno") == errno.EAGAIN:
            # Out of processes (a fork bomb left its children behind): end them and try once more.
            killed = self._kill_student_processes()
            await self._guard("reap", [])
            self._event("processes-killed", label, [f"{killed} processes the submission left running were killed: "
                                                    "the hidden tests need a process of their own"])
            answer = await self._guard("run_hidden", [self.channel_path])
        if answer is None:
            return _failed("the kernel did not answer the grader's request to run the hidden tests")
        if answer.get("child") is None:
            return _failed(f"the kernel could not start a process for the hidden tests: {answer.get('error')}")
        deadline = time.monotonic() + self.timeout
        found = await self._accept_child(answer["child"], deadline)
        if found is None:
            return _failed("the process for the hidden tests did not start")
        connection, child, kernel = found
        stopped, child_handle = [], _pidfd(child)  # it is alive: it has just connected and waits for the code
        try:
            stopped = _stop_all(self._top_pid(), keep=child)
            if not _ignores_sigchld(kernel):
                self._event("changed-during-test", label, ["the kernel stopped ignoring SIGCHLD during the hidden tests"])
                return _failed("the kernel's signal handling was changed while the hidden tests were to run",
                               ename=INTEGRITY_ERROR)
            request = {"code": info["hidden"], "reads": info["hidden_reads"], "binds": info["hidden_binds"],
                       "seconds": max(0.5, deadline - time.monotonic() - 1)}
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(connection, json.dumps(request).encode() + b"\n")
            received = []
            try:
                line = await asyncio.wait_for(_read_line(loop, connection, received), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                where = b"".join(received).decode(errors="replace")[-3000:]  # faulthandler's dump, if it came
                self._event("timeout", label, [f"the hidden tests ran past the cell time limit of {self.timeout} s", where])
                return _failed(f"the hidden tests ran past the cell time limit of {self.timeout} s", ename="CellTimeoutError")
            try:
                verdict = json.loads(line)
            except ValueError:
                verdict = None
            if not isinstance(verdict, dict):
                return _failed("the hidden tests ended without a verdict (the process died or wrote garbage): "
                               + line.decode(errors="replace")[-2000:])
            return verdict
        finally:
            connection.close()
            _kill_and_wait(child, pidfd=child_handle)
            if child_handle is not None:
                os.close(child_handle)
            for pid in stopped:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)

    async def _accept_child(self, namespace_pid, deadline):
        """(connection, child pid, kernel pid) once the forked copy ``namespace_pid`` connects; None if it dies or never does."""
        loop = asyncio.get_running_loop()
        kernel = self._kernel_pid()
        while time.monotonic() < deadline:
            child = next((pid for pid in _child_pids(kernel) if _namespace_pid(pid) == namespace_pid), None) if kernel else None
            if child is None:
                return None  # it died (SIGCHLD is ignored: nothing is left of it) or never existed
            try:
                connection, _ = await asyncio.wait_for(loop.sock_accept(self.channel), 0.5)
            except asyncio.TimeoutError:
                continue
            peer = _peer_pid(connection)
            if peer == child:
                return connection, child, kernel
            connection.close()
            self._event("hidden-channel-misuse", "notebook", [f"process {peer} connected to the grader's hidden-test channel"])
        return None

    def _top_pid(self) -> Optional[int]:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return None if process is None else process.pid

    def _kernel_pid(self) -> Optional[int]:
        """The kernel's pid: the launcher's child with namespaces, else the process the provisioner started."""
        if getattr(self, "_kernel_pid_found", None) is None:
            top = self._top_pid()
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            try:
                launcher = top is not None and (getattr(process, "launcher", False) or "--launch" in psutil.Process(top).cmdline())
            except psutil.Error:
                return None
            self._kernel_pid_found = next(iter(_child_pids(top)), None) if launcher else top
        return self._kernel_pid_found

    def _kill_student_processes(self) -> int:
        """Kill every process the kernel started (not the kernel); return how many."""
        pids = _descendants(self._kernel_pid())
        for pid in pids:
            _kill_and_wait(pid, timeout=0.5)
        return len(pids)

    # -- the guard ------------------------------------------------------------------------

    async def _guard_request(self, function, args):
        self._nonce = secrets.token_hex(16)
        expression = f"__import__('dlmed.grader.guard').grader.guard.{function}({self._nonce!r}, *{args!r})"
        return await ensure_async(self.kc.execute(
            "", silent=True, store_history=False, user_expressions={"answer": expression}, allow_stdin=False))

    async def _guard(self, function, args, timeout=30) -> Optional[Dict]:
        """Call ``dlmed.grader.guard.<function>`` in the kernel; None when the answer is missing or forged."""
        reply = await self._reply(await self._guard_request(function, args), timeout)
        if reply is None:
            return None
        result = reply["content"].get("user_expressions", {}).get("answer", {})
        try:
            answer = json.loads(ast.literal_eval(result["data"]["text/plain"]))
        except (KeyError, TypeError, ValueError, SyntaxError):
            return None
        return answer if isinstance(answer, dict) and answer.get("nonce") == self._nonce else None

    async def _reply(self, msg_id, timeout) -> Optional[Dict]:
        """The shell reply to ``msg_id`` within ``timeout`` seconds, or None (also when the kernel died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=max(0.01, min(1.0, deadline - time.monotonic()))))
            except queue.Empty:
                if not await ensure_async(self.kc.is_alive()):
                    return None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None

    # -- limits ---------------------------------------------------------------------------

    def output(self, outs, msg, display_id, cell_index):
        """Keep outputs until the notebook's output budget is spent, then note the truncation once."""
        content = msg.get("content", {})
        size = len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
        self.output_bytes += size
        if self.output_bytes > self.max_output_bytes:
            if not getattr(self, "_truncated", False):
                self._truncated = True
                self._event("output-truncated", f"cell {cell_index}",
                            [f"outputs beyond {self.max_output_bytes} bytes were dropped"])
                outs.append(NotebookNode(output_type="stream", name="stdout",
                                         text=f"\n[the grader dropped further output: over {self.max_output_bytes} bytes]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _warm_launcher(self) -> bool:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return bool(getattr(process, "launcher", False))

    def _kernel_process(self) -> Optional[psutil.Process]:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is None:
            return None
        try:
            return psutil.Process(process.pid)
        except psutil.Error:
            return None

    async def _watchdog(self):
        """Kill the kernel when it and its children together use more than the memory limit.

        Resident sizes are summed cheaply; forked children share their parent's pages, so
        only when that sum passes the limit is the exact figure (proportional set sizes,
        where the platform has them) taken, at most every two seconds.
        """
        last_exact = 0.0
        while True:
            await asyncio.sleep(0.2)
            kernel = self._kernel_process()
            if kernel is None:
                continue
            try:
                # A warm launcher is a fork of the zygote: its shared pages are not the submission's.
                processes = ([] if self._warm_launcher() else [kernel]) + kernel.children(recursive=True)
            except psutil.Error:
                continue
            total = _memory_of(processes, exact=False)
            if total > self.memory_bytes and time.monotonic() - last_exact > 2:
                last_exact = time.monotonic()
                total = _memory_of(processes, exact=True)
                if total > self.memory_bytes:
                    self.watchdog_reason = (f"the kernel and its processes used more than the memory limit of "
                                            f"{self.memory_bytes / 2**30:.1f} GiB and were killed")
                    await self._kill_kernel()
            if total <= self.memory_bytes:
                self.peak_memory = max(self.peak_memory, total)

    async def _kill_kernel(self):
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is None:
            return
        try:  # the kernel leads its own process group: this also ends what it forked
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            process.kill()
        except OSError:
            pass

    def _death_reason(self) -> str:
        if self.watchdog_reason:
            return self.watchdog_reason
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return "the kernel stopped responding"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            meaning = {"SIGSEGV": "a crash (segmentation fault)", "SIGKILL": "it was killed (out of memory?)",
                       "SIGABRT": "a crash (abort)", "SIGXCPU": "the CPU time limit", "SIGBUS": "a crash (bus error)"}
            return f"the kernel died: {meaning.get(name, 'signal ' + name)}"
        return f"the kernel exited with status {code} (os._exit or a crash in the student's code)"

    # -- bookkeeping ----------------------------------------------------------------------

    def _event(self, kind: str, where: str, details: List[str]):
        if self.replaying and kind != "kernel-died":
            return  # what the replayed cells do was logged in the first run
        self.events.append({"kind": kind, "where": where, "details": list(details)})

    def _stop(self, reason: str):
        if not self.stop_reason:
            self.stop_reason = reason
            self.events.append({"kind": "stopped", "where": "notebook", "details": [reason]})

    def _mark_not_run(self, cell):
        cell.outputs = [error_output(GRADER_ERROR, f"not run: {self.stop_reason}")]
        cell.execution_count = None


def _label(cell, index: int) -> str:
    """How the log names a cell: its nbgrader grade_id, else its position."""
    return cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index}")


def _failed(reason: str, ename: str = GRADER_ERROR) -> Dict:
    return {"passed": False, "ename": ename, "evalue": reason}


def _child_pids(pid: int) -> List[int]:
    """Pids of the children of ``pid`` (from ``/proc/<pid>/task/*/children`` where Linux has it: no full scan)."""
    tasks = f"/proc/{pid}/task"
    if not os.path.isdir(tasks):
        try:
            return [child.pid for child in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    pids = []
    try:
        for task in os.listdir(tasks):
            with open(f"{tasks}/{task}/children") as children:
                pids += [int(child) for child in children.read().split()]
    except OSError:
        pass
    return pids


def _descendants(pid: Optional[int]) -> List[int]:
    if pid is None:
        return []
    found, queue_ = [], [pid]
    while queue_:
        children = _child_pids(queue_.pop())
        found += children
        queue_ += children
    return found


def _namespace_pid(pid: int) -> int:
    """The pid that process ``pid`` has in its own PID namespace (the kernel's, with namespaces)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return pid


def _ignores_sigchld(pid: int) -> bool:
    if not os.path.isdir("/proc"):
        return True  # no way to look (macOS): the guard set it
    try:
        with open(f"/proc/{pid}/status") as status:
            mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(mask & (1 << (signal.SIGCHLD - 1)))


def _peer_pid(connection: socket.socket) -> int:
    """The pid of the process at the other end of a Unix socket (Linux ``SO_PEERCRED``, macOS ``LOCAL_PEERPID``)."""
    if hasattr(socket, "SO_PEERCRED"):
        return struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    return struct.unpack("i", connection.getsockopt(0, 2, 4))[0]  # SOL_LOCAL, LOCAL_PEERPID


def _run_state(pid: int) -> str:
    """``"stopped"``, ``"gone"`` (dead or a zombie) or ``"running"``."""
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rpartition(")")[2].split()[0]
        except OSError:
            return "gone"
        return "stopped" if state in "Tt" else "gone" if state in "ZXx" else "running"
    try:
        status = psutil.Process(pid).status()
    except psutil.Error:
        return "gone"
    return ("stopped" if status == psutil.STATUS_STOPPED
            else "gone" if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) else "running")


def _wait_for_state(pids, states, timeout: float):
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _run_state(pid) not in states and time.monotonic() < deadline:
            time.sleep(0.0005)


def _stop_all(top: Optional[int], keep: int) -> List[int]:
    """SIGSTOP ``top`` and its descendants (but ``keep``), wait until they stopped, repeat for any started meanwhile."""
    stopped = []
    for _ in range(20):
        fresh = [pid for pid in ([top] + _descendants(top) if top else []) if pid != keep and pid not in stopped]
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        _wait_for_state(fresh, ("stopped", "gone"), timeout=2)
    return stopped


def _kill_and_wait(pid: int, timeout: float = 5, pidfd: Optional[int] = None):
    """SIGKILL ``pid`` and wait until it is gone or a zombie (its locks and files are released then).

    With ``pidfd`` (Linux) the signal cannot reach another process that got the same pid
    after ``pid`` ended by itself (the grader may run as root).
    """
    with contextlib.suppress(OSError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    if pidfd is not None:
        select.select([pidfd], [], [], timeout)  # readable once the process has ended
        return
    _wait_for_state([pid], ("gone",), timeout)


def _pidfd(pid: int) -> Optional[int]:
    """A pidfd for ``pid`` where the platform has them, else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


async def _read_line(loop, connection, received: List[bytes]) -> bytes:
    """Read up to a newline (or the end); what arrived so far stays in ``received`` should time run out."""
    while not b"".join(received).endswith(b"\n"):
        chunk = await loop.sock_recv(connection, 65536)
        if not chunk:
            break
        received.append(chunk)
    return b"".join(received)
