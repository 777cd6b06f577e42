"""The class grader's parts, one at a time: sandbox limits, the integrity guard, repairs, LMS names.

Notebooks here are tiny (no torch), so each sandboxed run takes about a second; the whole
grader on real submissions is tests/grader/test_class_grading.py.
"""

import atexit
import json
import os
import socket
import subprocess
import sys
import zipfile

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlmed import course
from dlmed.grader import classgrade, executor, gradebook, guard, journal, repair, report, runner, sandbox, submissions, seal, zygote
from dlmed.grader import lab as lab_module
from dlmed.grader.lab import LabCell, LabInfo
from dlmed.course.grading import lms_identity, lms_submission
from tests.helpers import assert_public_api_documented

# "warm": namespaces with the kernel forked from the grader's zygote (dlmed.grader.zygote), as
# `dlmed grade` runs as root. The last entry is the strongest cold start.
ISOLATIONS = ["basic"] + (["warm", "namespaces"] if sandbox.detect_isolation() == "namespaces" else [])
needs_namespaces = pytest.mark.skipif("namespaces" not in ISOLATIONS, reason="needs Linux namespaces (run as root)")
_ZYGOTES = {}


def warm_zygote(env):
    """One zygote for this test session's warm runs (started in the main thread, ended at exit)."""
    key = json.dumps(env, sort_keys=True)
    if key not in _ZYGOTES:
        _ZYGOTES[key] = zygote.Zygote(env, "/nonexistent-data", runner._font_cache())
        atexit.register(_ZYGOTES[key].close)
    return _ZYGOTES[key]


def _test_cell(source, grade_id="t1", points=1):
    return new_code_cell(source, metadata={"nbgrader": {"grade": True, "solution": False, "locked": True,
                                                        "grade_id": grade_id, "points": points, "schema_version": 3}})


def _setup_cell(source):
    return new_code_cell(source, metadata={"nbgrader": {"grade": False, "solution": False, "locked": True,
                                                        "grade_id": "setup", "schema_version": 3}})


def run_cells(cells, tmp_path, isolation="basic", guard_modules=("builtins", "math"), zygote=None, **limits):
    """Execute ``cells`` in a sandbox as the grader does; return the SandboxResult (notebook as a node).

    ``isolation`` "warm": namespaces, forked from this session's zygote; or give a ``zygote`` of your own.
    """
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # A warm kernel starts with the libraries every lab imports (about 1 GB of data segment): more room.
    memory = 3 * 2**30 if isolation == "warm" else 2**30
    settings = sandbox.Limits(**{"cell_timeout": 10, "notebook_timeout": 60, "memory_bytes": memory, **limits})
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    hide, keep = sandbox.plan_paths([str(tmp_path / "course"), os.path.expanduser("~")], sandbox.python_paths())
    env = {"PATH": os.environ["PATH"], "NBGRADER_EXECUTION": "autograde"}
    warm = zygote or (warm_zygote(env) if isolation == "warm" else None)
    job = {"notebook": notebook, "isolation": "namespaces" if warm else isolation, "uid": sandbox.SANDBOX_UID_BASE + 50,
           "hide": hide, "keep": keep, "data_dir": str(data_dir), "data_writable": False, "copy_from": None,
           "limits": vars(settings), "env": env,
           "annotations": executor.cell_annotations(notebook), "guard_modules": list(guard_modules)}
    result = sandbox.run_notebook(job, settings, warm)
    assert result.error is None, f"the sandbox failed: {result.error}"
    result.notebook = nbformat.from_dict(result.notebook)
    return result


def outputs(cell):
    """Text and error names of a cell's outputs, one string."""
    return "\n".join(str(o.get("text", "")) + f"{o.get('ename', '')}: {o.get('evalue', '')}" for o in cell.outputs)


# --- module hygiene ---------------------------------------------------------------------------


@pytest.mark.parametrize("module, minimum", [(sandbox, 5), (executor, 6), (guard, 6), (seal, 5), (report, 3), (classgrade, 3), (submissions, 4),
                                             (lab_module, 3), (repair, 3), (runner, 1), (gradebook, 2), (journal, 2),
                                             (zygote, 5)])
def test_public_api_documented(module, minimum):
    """Every public function and class of the class grader's modules has a docstring."""
    assert_public_api_documented(module, minimum)


def test_supervisor_imports_stay_light():
    """The per-student supervisor imports neither nbgrader (1.7 s) nor torch; importing runs nothing."""
    code = ("import sys, dlmed.grader.sandbox, dlmed.grader.executor, dlmed.grader.guard\n"
            "heavy = [m for m in ('nbgrader', 'torch', 'sklearn') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


# --- what the executor knows about cells --------------------------------------------------------


def test_names_read_and_bound_and_the_annotations_of_a_test_cell():
    """Names a test reads and binds (IPython magics are understood); the kernel is told only the visible part's."""
    source = ("%matplotlib inline\nresult = check(f(x))\n### BEGIN HIDDEN TESTS\n"
              "def _helper(v):\n    inner = v\n    return inner\nfor item in range(3):\n    check(_helper(item))\n"
              "%time result = 2\n### END HIDDEN TESTS\n")
    assert {"check", "f", "x", "_helper", "range"} <= set(executor.names_read(source))
    assert executor.names_bound(source) == ["_helper", "item", "result"]
    assert executor.names_bound("import torch.nn as nn\nfrom math import (pi,\n  tau)\nimport os.path\n") == ["nn", "os", "pi", "tau"]
    annotations = executor.cell_annotations(new_notebook(cells=[_test_cell(source)]))["0"]
    assert "_helper" not in annotations["reads"] and "_helper" in annotations["hidden_reads"], annotations
    assert annotations["binds"] == ["result"] and annotations["hidden_binds"] == ["_helper", "item", "result"], annotations
    assert "def _helper(v):" in annotations["hidden"] and "%time" not in annotations["hidden"], annotations["hidden"]


# --- the sandbox's limits ------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_cell_timeout_interrupts_and_the_run_goes_on(tmp_path, isolation):
    """An endless cell is interrupted at the cell limit; the next cell still runs."""
    result = run_cells([new_code_cell("while True:\n    pass"), new_code_cell("print('next')")], tmp_path,
                       isolation, cell_timeout=2)
    first, second = result.notebook.cells
    assert "CellTimeoutError" in outputs(first), outputs(first)
    assert "next" in outputs(second), outputs(second)
    assert [e["kind"] for e in result.events] == ["timeout"], result.events


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_memory_and_file_size_limits(tmp_path, isolation):
    """A huge allocation raises MemoryError; a file over the size limit cannot be written."""
    result = run_cells([new_code_cell("hog = bytearray(8 * 2**30)"),
                        new_code_cell("open('big.bin', 'wb').write(b'x' * 3 * 2**20)"),
                        new_code_cell("print('still alive')")], tmp_path, isolation, max_file_bytes=2**20)
    memory, big, alive = result.notebook.cells
    assert "MemoryError" in outputs(memory), outputs(memory)
    assert "File too large" in outputs(big), outputs(big)
    assert "still alive" in outputs(alive), outputs(alive)


# What a kernel reports about its isolation and limits: the same before and after a restart.
_WHO_AM_I = ("import os, resource\nprint('WHO', os.getuid(), resource.getrlimit(resource.RLIMIT_DATA), "
             "resource.getrlimit(resource.RLIMIT_NPROC), resource.getrlimit(resource.RLIMIT_FSIZE), "
             "resource.getrlimit(resource.RLIMIT_CORE), 'PID 1' if os.getpid() == 1 else 'not PID 1')")
_HIDDEN = "check(y == 42)\n### BEGIN HIDDEN TESTS\ncheck(y + 1 == 43)\n### END HIDDEN TESTS\n"


def _who(cell) -> str:
    return next(line for line in outputs(cell).splitlines() if line.startswith("WHO"))


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_dead_kernel_costs_one_exercise_and_the_run_goes_on(tmp_path, isolation):
    """os._exit() in an answer: that exercise's test scores 0 with the reason; the kernel is restarted
    with the same user and limits, the cells before are replayed (their outputs kept, not doubled;
    hidden parts not run again) and the later tests are graded."""
    result = run_cells([
        _setup_cell(_SETUP),
        new_code_cell("open('ran.txt', 'a').write('x')\nprint('FIRST RUN ONLY')\ny = 42\n" + _WHO_AM_I),
        _test_cell(_HIDDEN, "t1"),
        new_code_cell("import os\nos._exit(3)"),  # the answer to exercise 2
        _test_cell("check(False)", "t2"),
        new_code_cell("z = y + 1\nprint('RAN', open('ran.txt').read())\n" + _WHO_AM_I),
        _test_cell(_HIDDEN.replace("y", "z - 1"), "t3"),
    ], tmp_path, isolation)
    cells = result.notebook.cells
    assert result.stop_reason is None, result.stop_reason
    assert "KernelDied: the kernel exited with status 3" in outputs(cells[3]) and "restarted" in outputs(cells[3]), outputs(cells[3])
    assert outputs(cells[4]).startswith("KernelDied: not run: the kernel died in the answer to this exercise"), outputs(cells[4])
    assert "status 3" in outputs(cells[4]), outputs(cells[4])
    assert "RAN xx" in outputs(cells[5]), f"the cell before the crash should have run twice: {outputs(cells[5])}"
    assert outputs(cells[1]).count("FIRST RUN ONLY") == 1, outputs(cells[1])
    assert "Error" not in outputs(cells[2]) + outputs(cells[6]), outputs(cells[2]) + outputs(cells[6])
    assert _who(cells[1]) == _who(cells[5]), "the restarted kernel runs with another user or other limits"
    assert len(result.hidden_seconds) == 2, f"hidden parts run once each, not replayed: {result.hidden_seconds}"
    kinds = [(e["kind"], e["where"]) for e in result.events]
    assert kinds == [("kernel-died", "cell 3"), ("kernel-restarted", "cell 3")], result.events
    details = " ".join(result.events[1]["details"])
    assert "replayed the 3 cells" in details and "setup, cell 1, t1" in details and "t2" in details, details
    if isolation == "namespaces":
        assert _who(cells[1]).startswith(f"WHO {sandbox.SANDBOX_UID_BASE + 50} ") and _who(cells[1]).endswith(" PID 1"), _who(cells[1])


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_a_test_that_kills_the_kernel_scores_0_and_the_next_exercise_is_graded(tmp_path, isolation):
    """The kernel dies in a test cell (it calls the answer): that test fails with the reason, the next passes."""
    result = run_cells([_setup_cell(_SETUP), new_code_cell("def f():\n    import ctypes\n    ctypes.string_at(0)"),
                        _test_cell("f()", "t1"), new_code_cell("g = lambda: 2"), _test_cell("check(g() == 2)", "t2")],
                       tmp_path, isolation)
    cells = result.notebook.cells
    assert result.stop_reason is None, result.stop_reason
    assert "KernelDied: the kernel died: a crash (segmentation fault)" in outputs(cells[2]), outputs(cells[2])
    assert not [o for o in cells[4].outputs if o.output_type == "error"], outputs(cells[4])


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_a_second_death_stops_the_run(tmp_path, isolation):
    """A kernel that dies again after the restart ends the run as before: later tests get an error output."""
    result = run_cells([new_code_cell("import os\nos._exit(3)"), _test_cell("pass", "t1"),
                        new_code_cell("import os\nos._exit(4)"), _test_cell("pass", "t2")], tmp_path, isolation)
    cells = result.notebook.cells
    assert "status 4" in result.stop_reason and "died once already" in result.stop_reason, result.stop_reason
    assert "KernelDied" in outputs(cells[1]) and "KernelDied" in outputs(cells[2]), outputs(cells[1])
    assert "GradingStopped" in outputs(cells[3]), "a test cell after the second crash must not pass"


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_a_death_during_the_replay_stops_the_run(tmp_path, isolation):
    """A cell that kills the kernel when it is replayed ends the run; the tests before keep their results."""
    again = "import os\nif os.path.exists('ran-once'):\n    os._exit(5)\nopen('ran-once', 'w').close()\n"
    result = run_cells([new_code_cell(again), _test_cell("pass", "t1"), new_code_cell("import os\nos._exit(3)"),
                        _test_cell("pass", "t2"), new_code_cell("x = 1"), _test_cell("pass", "t3")], tmp_path, isolation)
    cells = result.notebook.cells
    assert "status 5" in result.stop_reason and "replayed" in result.stop_reason, result.stop_reason
    assert not [o for o in cells[1].outputs if o.output_type == "error"], outputs(cells[1])
    assert "restarted" not in outputs(cells[2]) + outputs(cells[3]), "the run did not go on: the outputs must not say so"
    assert "GradingStopped" in outputs(cells[5]), outputs(cells[5])


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_the_replay_counts_against_the_notebook_time_limit(tmp_path, isolation):
    """Restart and replay fit in the notebook's time limit, or the run stops there."""
    result = run_cells([new_code_cell("import time\ntime.sleep(4)"), new_code_cell("import os\nos._exit(3)"),
                        _test_cell("pass", "t1")], tmp_path, isolation, notebook_timeout=7)
    assert "time limit" in result.stop_reason, result.stop_reason
    assert "GradingStopped" in outputs(result.notebook.cells[2]) or "KernelDied" in outputs(result.notebook.cells[2])


@needs_namespaces
@pytest.mark.parametrize("isolation", ["namespaces", "warm"])
def test_namespaces_hide_files_network_and_processes(tmp_path, isolation):
    """With namespaces: course files hidden, no connection to the grading machine, own user and processes."""
    course = tmp_path / "course"
    course.mkdir()
    (course / "gradebook.db").write_text("secret")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    probe = (f"import os, socket\nprint('EXISTS', os.path.exists({str(course / 'gradebook.db')!r}))\n"
             f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\n"
             f"except OSError as error:\n    print('NO NETWORK', type(error).__name__)\n"
             "print('UID', os.getuid(), 'PIDS', len([p for p in os.listdir('/proc') if p.isdigit()]))\n")
    try:
        result = run_cells([new_code_cell(probe)], tmp_path, isolation)
    finally:
        server.close()
    text = outputs(result.notebook.cells[0])
    assert "EXISTS False" in text and "NO NETWORK" in text and "CONNECTED" not in text, text
    uid, pids = text.split("UID ")[1].split()[0], int(text.split("PIDS ")[1].split()[0])
    assert uid == str(sandbox.SANDBOX_UID_BASE + 50), f"kernel user: expected {sandbox.SANDBOX_UID_BASE + 50}, got {uid}"
    assert pids < 10, f"the kernel should see only its own processes, saw {pids}"


_KERNEL_VIEW = r"""
import ctypes, importlib, json, os, resource, signal, sys, threading, time
from dlmed.grader.zygote import PRELOADED
for name in PRELOADED:  # what a warm kernel has imported already (the labs' set-up cells import most of it)
    importlib.import_module(name)
import matplotlib
# The grader's client connects its channels (heartbeat, control) while the first cell runs: give
# the warm kernel, whose imports above take no time, the seconds the cold one spends on them.
time.sleep(1)
view = {
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), os.getpid(), os.getppid()],
    "cwd": os.getcwd(), "argv0": os.path.basename(sys.argv[0]), "path": sys.path, "main": type(sys.modules["__main__"]).__name__,
    "env": {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "DLMED_DATA")}, "parent_set": "JPY_PARENT_PID" in os.environ,
    "limits": {n: resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_NPROC", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NOFILE")},
    "status": [line for line in open("/proc/self/status") if line.startswith(("NoNewPrivs", "Seccomp", "CapEff", "CapPrm", "CapBnd"))],
    "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE)],
    "threads": sorted(t.name for t in threading.enumerate()), "fds": len(os.listdir("/proc/self/fd")),
    "processes": sorted(p for p in os.listdir("/proc") if p.isdigit()),
    "tmp": sorted(n for n in os.listdir("/tmp") if not n.endswith(".json")), "mounts": len(open("/proc/self/mountinfo").readlines()),
    "matplotlib": [matplotlib.get_backend(), matplotlib.get_configdir()], "dont_write_bytecode": sys.dont_write_bytecode,
    "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), "own_memory": open("/proc/self/mem", "rb").close() is None,
}
print("VIEW" + json.dumps(view, sort_keys=True))
"""


@needs_namespaces
def test_a_warm_kernel_sees_what_a_cold_one_sees(tmp_path):
    """A kernel forked from the zygote sees what a cold kernel sees once it imported the same libraries:
    user, limits, privileges, environment, paths, signals, threads, files, processes and mounts."""
    views = {}
    for isolation in ("namespaces", "warm"):
        (tmp_path / isolation).mkdir()
        result = run_cells([new_code_cell(_KERNEL_VIEW)], tmp_path / isolation, isolation, memory_bytes=3 * 2**30)
        text = outputs(result.notebook.cells[0])
        assert "VIEW" in text, f"{isolation}: the probe printed no view: {text[-2000:]}"
        views[isolation] = json.loads(text.split("VIEW", 1)[1].splitlines()[0])
    cold, warm = views["namespaces"], views["warm"]
    differences = {key: (cold[key], warm.get(key)) for key in cold if cold[key] != warm.get(key)}
    assert not differences, f"what the kernel sees, cold vs warm: {differences}"


_MEMORY_SCAN = """
import re
halves = {name: (bytes.fromhex(first), bytes.fromhex(second)) for name, first, second in %r}
found = {name: 0 for name in halves}
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as memory:
    for line in maps:
        fields = line.split()
        # What a process received while it ran is in writable memory (heap, stacks, anonymous
        # and private mappings); libraries' code and read-only data are skipped (that is most of it).
        if "r" not in fields[1] or "w" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        try:
            memory.seek(start)
            block = memory.read(end - start)
        except (OSError, ValueError, OverflowError):
            continue
        for name, (first, second) in halves.items():
            found[name] += sum(block[m.end():m.end() + len(second)] == second for m in re.finditer(re.escape(first), block))
print("FOUND", found["visible"] > 0, found["hidden"] > 0)
"""


@needs_namespaces
def test_a_warm_kernel_starts_from_memory_that_never_held_the_job(tmp_path):
    """No notebook, no hidden test in the memory a warm kernel is forked from: the kernel reads all of its own
    memory and finds the visible test's marker (it ran that code) but never the hidden one (only the supervisor has it)."""
    markers = {"hidden": os.urandom(12).hex(), "visible": os.urandom(12).hex()}
    # Each marker is looked for as two halves that must lie next to each other; the kernel holds
    # the halves as separate objects (from hex), so only a copy of the whole text can match.
    halves = [(name, marker[:12].encode().hex(), marker[12:].encode().hex()) for name, marker in markers.items()]
    test = f"check(True)  # {markers['visible']}\n### BEGIN HIDDEN TESTS\ncheck(True)  # {markers['hidden']}\n### END HIDDEN TESTS\n"
    result = run_cells([_setup_cell(_SETUP), _test_cell(test, "t1"), new_code_cell(_MEMORY_SCAN % (halves,))], tmp_path, "warm",
                       cell_timeout=120)
    assert "Error" not in outputs(result.notebook.cells[1]), outputs(result.notebook.cells[1])
    text = outputs(result.notebook.cells[2])
    assert "FOUND True False" in text, f"expected the visible marker found and the hidden one not: {text[-2000:]}"


@needs_namespaces
def test_a_kernel_restarted_after_a_crash_starts_warm_from_memory_that_never_held_the_job(tmp_path):
    """After a crash the kernel starts again from the supervisor's second seed: warm (the zygote's libraries
    loaded) and, like the first, from memory that never held the hidden test (the visible one it ran again)."""
    markers = {"hidden": os.urandom(12).hex(), "visible": os.urandom(12).hex()}
    halves = [(name, marker[:12].encode().hex(), marker[12:].encode().hex()) for name, marker in markers.items()]
    test = f"check(True)  # {markers['visible']}\n### BEGIN HIDDEN TESTS\ncheck(True)  # {markers['hidden']}\n### END HIDDEN TESTS\n"
    probe = "import os, sys\nprint('WARM', 'torch' in sys.modules, 'PID', os.getpid())\n" + _MEMORY_SCAN % (halves,)
    result = run_cells([_setup_cell(_SETUP), _test_cell(test, "t1"), new_code_cell("import os\nos._exit(3)"),
                        new_code_cell(probe)], tmp_path, "warm", cell_timeout=120)
    assert [e["kind"] for e in result.events] == ["kernel-died", "kernel-restarted"], result.events
    assert result.hidden_seconds and "Error" not in outputs(result.notebook.cells[1]), outputs(result.notebook.cells[1])
    text = outputs(result.notebook.cells[3])
    assert "WARM True PID 1" in text, f"expected a warm kernel (torch loaded before any import) as PID 1: {text[-2000:]}"
    assert "FOUND True False" in text, f"expected the visible marker found and the hidden one not: {text[-2000:]}"


@needs_namespaces
def test_a_dead_zygote_means_cold_starts_not_failures(tmp_path):
    """When the zygote has died (killed, out of memory), sandboxes start the usual way and grade as before."""
    dead = zygote.Zygote({"PATH": os.environ["PATH"], "NBGRADER_EXECUTION": "autograde"}, "/nonexistent-data", None)
    assert dead.wait_ready() is None
    dead.process.kill()
    dead.process.wait()
    try:  # run_cells checks that the sandbox did not fail
        result = run_cells([new_code_cell("import os\nprint('PID', os.getpid())")], tmp_path, "namespaces", zygote=dead)
    finally:
        dead.close()
    text = outputs(result.notebook.cells[0])
    assert "PID 1" in text, f"expected the kernel as PID 1 of its own namespace, got: {text}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_launcher_started_after_its_supervisor_died_does_not_start_the_kernel():
    """A launcher whose supervisor is already gone (its parent is not the one named) exits instead of exec'ing."""
    settings = {"isolation": "basic", "limits": vars(sandbox.Limits()), "parent": 1}
    completed = subprocess.run([sys.executable, "-m", "dlmed.grader.sandbox", "--launch", json.dumps(settings), "--",
                                sys.executable, "-c", "print('kernel started')"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1 and "kernel started" not in completed.stdout, (completed.returncode, completed.stdout)


# --- the integrity guard -------------------------------------------------------------------------


_SETUP = "import math\ndef check(value):\n    if not value:\n        raise AssertionError('check failed')\n"


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_guard_undoes_patches_and_rebinding_before_a_test(tmp_path, isolation):
    """A patched library function and a rebound test helper are put back before the test runs."""
    student = "math.isclose = lambda *args, **kwargs: True\ncheck = lambda value: None\n"
    result = run_cells([_setup_cell(_SETUP), new_code_cell(student), _test_cell("check(math.isclose(1.0, 2.0))"),
                        new_code_cell("print(check)")], tmp_path, isolation)
    test, after = result.notebook.cells[2], result.notebook.cells[3]
    assert "check failed" in outputs(test), f"the test passed with patched helpers: {outputs(test)}"
    kinds = {event["kind"]: event["details"] for event in result.events}
    assert "math.isclose was replaced" in kinds.get("tampering-undone", []), result.events
    assert any("'check'" in d for d in kinds.get("names-set-aside", [])), result.events
    assert "lambda" in outputs(after), "the student's own binding should be back after the test"


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_guard_voids_a_test_changed_while_it_ran(tmp_path, isolation):
    """A student function that patches a helper while the test calls it makes that test score 0."""
    student = "def answer():\n    math.isclose = lambda *args, **kwargs: True\n    return 1\n"
    result = run_cells([_setup_cell(_SETUP), new_code_cell(student),
                        _test_cell("check(answer() == 1)\ncheck(math.isclose(1.0, 2.0))")], tmp_path, isolation)
    test = result.notebook.cells[2]
    assert executor.INTEGRITY_ERROR in outputs(test), outputs(test)
    assert [e["kind"] for e in result.events] == ["changed-during-test"], result.events


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_guard_accepts_a_library_changing_itself_but_not_another_library(tmp_path, isolation):
    """A package replacing one of its functions by another of its own is accepted; another library's function is not."""
    student = ("import colorsys, textwrap\n"
               "colorsys.rgb_to_hsv = colorsys.hsv_to_rgb  # the package's own function: accepted\n"
               "colorsys.rgb_to_yiq = textwrap.dedent  # another library's function: tampering\n")
    result = run_cells([_setup_cell(_SETUP), new_code_cell(student), _test_cell("check(True)")], tmp_path, isolation,
                       guard_modules=("builtins", "math", "colorsys"))
    assert [(e["kind"], e["details"]) for e in result.events] == [("tampering-undone", ["colorsys.rgb_to_yiq was replaced"])], result.events
    assert "Error" not in outputs(result.notebook.cells[2])


@pytest.mark.slow  # imports transformers in the sandbox's kernel
@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_guard_accepts_transformers_adding_smart_apply_but_not_a_student_addition(tmp_path, isolation):
    """transformers adding torch.nn.Module.smart_apply (guard.LIBRARY_ADDITIONS) is no tampering; another addition is."""
    pytest.importorskip("transformers")
    student = ("import textwrap\nfrom transformers import BertConfig, BertModel\n"
               "BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))\n"
               "assert hasattr(torch.nn.Module, 'smart_apply'), 'this transformers does not add smart_apply'\n"
               "torch.nn.Module.shortcut = textwrap.dedent  # a library function the student attached: tampering\n")
    result = run_cells([_setup_cell("import torch\n" + _SETUP), new_code_cell(student), _test_cell("check(True)")],
                       tmp_path, isolation, cell_timeout=120, notebook_timeout=180, memory_bytes=4 * 2**30)
    assert "Error" not in outputs(result.notebook.cells[1]), outputs(result.notebook.cells[1])
    assert [(e["kind"], e["details"]) for e in result.events] == [
        ("tampering-undone", ["torch.nn.Module.shortcut was added"])], result.events


_READER = """
import linecache, sys, threading, time
loot = set()

def _copy():
    main = threading.main_thread().ident
    while True:
        frame = sys._current_frames().get(main)
        while frame is not None:
            loot.add("".join(linecache.getlines(frame.f_code.co_filename)))
            loot.update(c for c in frame.f_code.co_consts if isinstance(c, str))
            frame = frame.f_back
        loot.update("".join(e[2]) for e in list(linecache.cache.values()) if len(e) >= 3 and e[2])
        time.sleep(0.0005)

threading.Thread(target=_copy, daemon=True).start()
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_hidden_tests_never_reach_the_kernel_and_a_student_thread_voids_the_test(tmp_path, isolation):
    """Hidden parts run in a sealed fork: they pass or fail as written, a reader thread sees none of
    their code, no name they bind is left, and tests during which the thread was alive are voided."""
    student = "def f(x):\n    return x if x < 5 else 0\n"
    passing = "check(f(1) == 1)\n### BEGIN HIDDEN TESTS\n_secret_helper = 'top ' + 'secret value'\ncheck(f(2) == 2)\n### END HIDDEN TESTS\n"
    failing = "check(f(1) == 1)\n### BEGIN HIDDEN TESTS\ncheck(f(7) == 7)  # the hidden failing line\n### END HIDDEN TESTS\n"
    # list(loot) copies it at once: the reader thread still adds to it while this cell runs.
    snoop = ("needle = 'top ' + 'secret'\nfound = list(loot)\n"
             "print('LOOT', any(needle in text or 'hidden failing' in text for text in found), len(found))\n"
             "print('IN', any(needle in cell for cell in In))\nprint('NAME', '_secret_helper' in globals())\n")
    result = run_cells([_setup_cell(_SETUP), new_code_cell(student), _test_cell(passing, "t1"), _test_cell(failing, "t2"),
                        new_code_cell(_READER), _test_cell(passing, "t3"), new_code_cell(snoop)], tmp_path, isolation)
    cells = result.notebook.cells
    assert "Error" not in outputs(cells[2]), f"a passing hidden part failed: {outputs(cells[2])}"
    assert "HiddenTestFailed: AssertionError: check failed" in outputs(cells[3]), outputs(cells[3])
    assert cells[2].source == passing, "the notebook must keep the test cell's full source for nbgrader"
    assert "HiddenTestFailed" not in outputs(cells[5]) and executor.INTEGRITY_ERROR in outputs(cells[5]), outputs(cells[5])
    text = outputs(cells[6])
    assert "LOOT False" in text and "IN False" in text and "NAME False" in text, text
    assert int(text.split("LOOT False ")[1].split()[0]) > 0, "the reader thread copied nothing at all: it did not run"
    events = [(e["kind"], e["where"]) for e in result.events]
    assert events == [("student-thread", "t3")], result.events
    assert len(result.hidden_seconds) == 3, result.hidden_seconds


_ESCAPES = """
import mmap, os, socket
shared = mmap.mmap(-1, 4096)  # shared with every fork
reader, writer = os.pipe()

def escape():
    tried = []
    for name, attempt in [("file", lambda: open("escaped.txt", "w").write("x")),
                          ("pipe", lambda: os.write(writer, b"hidden")),
                          ("shared memory", lambda: shared.write(b"hidden")),
                          ("socket", lambda: socket.socket(socket.AF_UNIX)),
                          ("signal", lambda: os.kill(os.getppid(), 10)),
                          ("process", lambda: os.fork())]:
        try:
            attempt()
            tried.append(name + " ALLOWED")
        except (OSError, ValueError, TypeError) as error:
            tried.append(name + " " + type(error).__name__)
    raise AssertionError("; ".join(tried))
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_code_run_by_hidden_tests_cannot_leave_anything_behind(tmp_path, isolation):
    """In the sealed fork, writing files, inherited pipes and shared memory lead nowhere; sockets, signals
    and new processes are refused; the error message reaches the instructor's notebook only."""
    test = "check(True)\n### BEGIN HIDDEN TESTS\nescape()\n### END HIDDEN TESTS\n"
    after = ("import os\nos.set_blocking(reader, False)\n"
             "print('FILE', os.path.exists('escaped.txt'), 'SHARED', bytes(shared[:6]))\n"
             "try:\n    print('PIPE', os.read(reader, 100))\nexcept BlockingIOError:\n    print('PIPE empty')\n")
    result = run_cells([_setup_cell(_SETUP), new_code_cell(_ESCAPES), _test_cell(test), new_code_cell(after)],
                       tmp_path, isolation)
    verdict, text = outputs(result.notebook.cells[2]), outputs(result.notebook.cells[3])
    assert "HiddenTestFailed" in verdict, verdict
    for name in ("file", "socket", "signal", "process"):
        assert f"{name} PermissionError" in verdict, f"expected {name} refused: {verdict}"
    assert "FILE False" in text and "SHARED b'\\x00" in text and "PIPE empty" in text, text
    assert not [e for e in result.events if e["kind"] == "hidden-tests-unsealed"], result.events


@pytest.mark.parametrize("isolation", ISOLATIONS[-1:])
def test_the_fork_seals_itself_with_trusted_code(tmp_path, isolation):
    """A visible part that disarms the seal (os.dup2, dlmed.grader.seal) does not reach the fork, and the test is voided."""
    disarm = ("import os\nimport dlmed.grader.seal\n"
              "def answer():\n    os.dup2 = lambda *args: None\n    dlmed.grader.seal.install_filter = lambda pid: ''\n    return 1\n"
              "reader, writer = os.pipe()\n"
              "def leak():\n    os.write(writer, b'hidden')\n    open('escaped.txt', 'w').write('hidden')\n")
    test = "check(answer() == 1)\n### BEGIN HIDDEN TESTS\nleak()\n### END HIDDEN TESTS\n"
    after = "os.set_blocking(reader, False)\ntry:\n    print('PIPE', os.read(reader, 100))\nexcept BlockingIOError:\n    print('PIPE empty')\nprint('FILE', os.path.exists('escaped.txt'))\n"
    result = run_cells([_setup_cell(_SETUP), new_code_cell(disarm), _test_cell(test), new_code_cell(after)], tmp_path, isolation)
    test_cell, text = result.notebook.cells[2], outputs(result.notebook.cells[3])
    assert "PIPE empty" in text and "FILE False" in text, text
    assert executor.INTEGRITY_ERROR in outputs(test_cell), outputs(test_cell)
    changed = [d for e in result.events if e["kind"] == "changed-during-test" for d in e["details"]]
    assert "os.dup2 was replaced" in changed and "dlmed.grader.seal.install_filter was replaced" in changed, result.events


@needs_namespaces
def test_no_file_access_times_inside_the_sandbox(tmp_path):
    """Every mount the kernel sees is noatime: a hidden test's process cannot mark files by reading them."""
    cell = ("mounts = [line.split() for line in open('/proc/self/mountinfo')]\n"
            "# a mount with another one mounted on the same point above it cannot be reached\n"
            "top = [m for m in mounts if not any(o[1] == m[0] and o[4] == m[4] for o in mounts)]\n"
            "print('WITH ATIME', [m[4] for m in top if 'noatime' not in m[5].split(',')], 'OF', len(top))\n")
    result = run_cells([new_code_cell(cell)], tmp_path, "namespaces")
    text = outputs(result.notebook.cells[0])
    assert "WITH ATIME [] OF" in text, text


def test_feedback_hides_what_a_failing_hidden_test_said():
    """A hidden failure's message (made by student code) becomes a fixed text; a builtin class name may stay."""
    from dlmed.course.grading import HideHiddenTests

    cell = _test_cell("check(True)\n### BEGIN HIDDEN TESTS\ncheck(secret())\n### END HIDDEN TESTS\n")
    cell.outputs = [executor.error_output("HiddenTestFailed", "AssertionError: c2VjcmV0IGhpZGRlbiB0ZXN0"),
                    executor.error_output("HiddenTestFailed", "c2VjcmV0IGhpZGRlbiB0ZXN0: base64 in a class name")]
    notebook, _ = HideHiddenTests().preprocess(new_notebook(cells=[cell]), {})
    shown = [(o.evalue, o.traceback) for o in notebook.cells[0].outputs]
    assert shown == [("the hidden tests failed (AssertionError)", ["HiddenTestFailed: the hidden tests failed (AssertionError)"]),
                     ("the hidden tests failed", ["HiddenTestFailed: the hidden tests failed"])], shown


# --- repairing submissions -------------------------------------------------------------------------


def _lab():
    """A three-cell lab as the gradebook would describe it."""
    from nbgrader.utils import compute_checksum

    cells = {
        "setup": ("code", True, False, False, None, "import math"),
        "ex1": ("code", False, False, True, None, "# YOUR CODE HERE\nraise NotImplementedError()"),
        "test1": ("code", True, True, False, 2.0, "assert answer() == 1"),
        "q1": ("markdown", False, True, True, 1.0, "YOUR ANSWER HERE"),
    }
    lab_cells = {}
    for name, (cell_type, locked, grade, solution, points, source) in cells.items():
        cell = LabCell(name, cell_type, locked, None, source, grade, solution, False, points)
        probe = nbformat.NotebookNode(cell_type=cell_type, source=source,
                                      metadata=nbformat.NotebookNode(nbgrader=nbformat.NotebookNode(cell.metadata())))
        cell.checksum = compute_checksum(probe)
        lab_cells[name] = cell
    return LabInfo("lab9", "lab9.ipynb", lab_cells, list(cells), {"name": "python3"}, "fingerprint")


def _submission(lab, edit=None):
    cells = []
    for name in lab.order:
        original = lab.cells[name]
        maker = new_code_cell if original.cell_type == "code" else new_markdown_cell
        source = "def answer():\n    return 1" if name == "ex1" else original.source
        cells.append(maker(source, metadata={"nbgrader": original.metadata()}))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if edit:
        edit(notebook)
    return nbformat.writes(notebook)


def _ids(notebook):
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in notebook.cells]


def test_repair_leaves_an_intact_submission_alone():
    lab = _lab()
    notebook, notes = repair.repair_notebook(_submission(lab), lab)
    assert notes == [] and _ids(notebook) == lab.order


@pytest.mark.parametrize("text, reason", [("{\"cells\": [", "not valid JSON"), ("[1, 2]", "not a Jupyter notebook")])
def test_repair_refuses_what_is_no_notebook(text, reason):
    with pytest.raises(repair.UngradableSubmission, match=reason):
        repair.repair_notebook(text, _lab())


def _duplicate_test(nb):
    copy = nbformat.from_dict(json.loads(json.dumps(nb.cells[2])))
    copy["id"] = "duplicate-of-test1"  # a copy made in Jupyter gets a new cell id
    nb.cells.insert(0, copy)


def _rename_test(nb):
    nb.cells[2].metadata["nbgrader"]["grade_id"] = "my_test"


def _delete_test(nb):
    del nb.cells[2]


def _edit_setup(nb):
    nb.cells[0].source = "check = print"


def _change_points(nb):
    nb.cells[2].metadata["nbgrader"]["points"] = 50


def _r_kernel(nb):
    nb.metadata["kernelspec"]["name"] = "ir"


@pytest.mark.parametrize("edit, ids, note", [
    (_duplicate_test, [None, "setup", "ex1", "test1", "q1"], "more than once"),
    (_rename_test, ["setup", "ex1", "test1", None, "q1"], "unknown grade_id 'my_test'"),
    (_delete_test, ["setup", "ex1", "test1", "q1"], "test cell 'test1' was deleted"),
    (_edit_setup, ["setup", "ex1", "test1", "q1"], "read-only cell 'setup' was edited"),
    (_change_points, ["setup", "ex1", "test1", "q1"], "were changed (points)"),
    (_r_kernel, ["setup", "ex1", "test1", "q1"], "kernel 'ir'"),
])
def test_repair_puts_cells_back_and_says_what_it_did(edit, ids, note):
    """Duplicated, renamed, deleted and edited cells come out as nbgrader expects them, with a note."""
    lab = _lab()
    notebook, notes = repair.repair_notebook(_submission(lab, edit), lab)
    assert _ids(notebook) == ids, f"grade_ids after repair: expected {ids}, got {_ids(notebook)}"
    assert any(note in n for n in notes), f"expected a note with {note!r}, got {notes}"
    test = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test1")
    assert test.metadata["nbgrader"] == lab.cells["test1"].metadata(), "test1's metadata should be the released one"


def test_zip_with_paths_outside_the_folder_is_refused(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../../outside.ipynb", "{}")
    with pytest.raises(course.CourseError, match="outside the extraction folder"):
        submissions.check_zip(archive)


@pytest.mark.parametrize("path, expected", [
    ("/c/downloaded/lab1/extracted/x/doejane_123_456_lab1.ipynb", ("doejane", "lab1.ipynb")),
    ("/c/downloaded/lab1/extracted/x/doe_LATE_1_2_lab1-1.ipynb", ("doe", "lab1.ipynb")),
    ("/c/downloaded/lab1/extracted/x/Jane Doe_77_assignsubmission_file_/lab1.ipynb", ("Jane_Doe", "lab1.ipynb")),
    ("/c/downloaded/lab1/extracted/x/s07/lab1.ipynb", ("s07", "lab1.ipynb")),
    ("/c/downloaded/lab1/extracted/x/lab1.ipynb", None),
])
def test_lms_file_names(path, expected):
    """Student ids from Canvas, Moodle and folder-per-student zip exports."""
    found = lms_submission(path)
    assert (found and (found["student_id"], found["file_id"])) == expected, f"{path}: expected {expected}, got {found}"


@pytest.mark.parametrize("path, expected", [
    ("extracted/x/doejane_123_456_lab1.ipynb", ("doejane", "canvas", "123")),
    ("extracted/x/doe_LATE_1_2_lab1-1.ipynb", ("doe", "canvas", "1")),
    ("extracted/x/Jane Doe_77_assignsubmission_file_/lab1.ipynb", ("Jane_Doe", "moodle", "77")),
    ("extracted/x/s07/lab1.ipynb", ("s07", "folder", "s07")),
    # Hostile names from the platform: the nbgrader id keeps safe characters only (the export
    # neutralises the platform's name as a formula, tests/grader/test_export.py).
    ('extracted/x/=HYPERLINK("x")_5_assignsubmission_file_/lab1.ipynb', ("HYPERLINKx", "moodle", "5")),
    ("extracted/x/<script>alert(1)<!--_9_assignsubmission_file_/lab1.ipynb", ("scriptalert1--", "moodle", "9")),
])
def test_lms_identity_keeps_the_platform_id(path, expected):
    """Canvas user ids and Moodle participant numbers are read from the zip's names, for ``dlmed export``."""
    found = lms_identity(path)
    assert (found["student_id"], found["platform"], found["platform_id"]) == expected, f"{path}: got {found}"


# --- choosing the isolation, and the bubblewrap and Seatbelt sandboxes' set-up ----------------------


def test_without_bubblewrap_the_grader_says_what_to_do(monkeypatch):
    """Linux, no root, no bwrap: 'basic', with the warning and how to get the isolation (package, sysctl, container)."""
    monkeypatch.setattr(sandbox.sys, "platform", "linux")
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "find_bubblewrap", lambda: None)
    isolation, reason = sandbox.choose_isolation()
    assert isolation == "basic", isolation
    for phrase in ("bwrap (package bubblewrap) is not installed", "it can read your files", "sudo apt install bubblewrap",
                   "sudo dnf install bubblewrap", "run the grader as root"):
        assert phrase in reason, f"expected {phrase!r} in the reason, got:\n{reason}"


def test_userns_advice_names_the_setting_that_refuses(monkeypatch):
    """Where a sysctl or Ubuntu's AppArmor restriction refuses user namespaces, the advice names that setting."""
    settings = {"/proc/sys/kernel/unprivileged_userns_clone": "0", "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1"}
    monkeypatch.setattr(sandbox, "_read_setting", settings.get)
    advice = sandbox.userns_advice()
    assert "kernel.unprivileged_userns_clone=1" in advice and "kernel.apparmor_restrict_unprivileged_userns=0" in advice, advice


def test_bubblewrap_command_hides_before_it_shows(tmp_path):
    """Hidden folders are covered before kept ones are bound into them, made read-only last; /home and /run are never bound."""
    command = sandbox.bubblewrap_command(["/home", "/srv/course"], ["/home/me/.venv"], [("/data", "/data", False)], 2**20)
    pairs = list(zip(command, command[1:]))
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"):
        assert flag in command, f"{flag} missing: {command}"
    cover, show = pairs.index(("--tmpfs", "/home")), pairs.index(("--ro-bind", "/home/me/.venv"))
    assert cover < show < pairs.index(("--remount-ro", "/home")), command
    assert ("--ro-bind", "/data") in pairs and ("--size", str(2**20)) in pairs, command
    bound = [target for flag, target in pairs if flag in ("--bind", "--ro-bind", "--dev-bind")]
    assert not [t for t in bound if t in ("/", "/home", "/run", "/root", "/srv/course")], f"bound: {bound}"
    assert command[-3:] == ["--chdir", "/tmp", "--"] and ("--remount-ro", "/") in pairs, command


def test_seatbelt_profile_denies_reads_network_and_writes():
    """The macOS profile: hidden folders unreadable except kept ones, no network but the sandbox's sockets, writes only there."""
    profile = sandbox.seatbelt_profile(["/Users"], ["/Users/me/.venv"], ["/private/tmp/box"])
    lines = profile.splitlines()
    assert lines[:3] == ["(version 1)", "(allow default)", "(deny network*)"], lines
    deny_read = lines.index('(deny file-read* (subpath "/Users"))')
    assert lines.index('(allow file-read* (subpath "/Users/me/.venv"))') > deny_read, lines
    assert lines.index("(deny file-write*)") < next(i for i, line in enumerate(lines) if line.startswith("(allow file-write*")), lines
    assert '(remote unix-socket (subpath "/private/tmp/box"))' in profile and "(allow network*)" not in profile, profile


def test_seatbelt_sandbox_runs_a_notebook_with_a_stand_in_for_sandbox_exec(tmp_path, monkeypatch):
    """The seatbelt mode's plumbing (profile, its own folder, the kernel over Unix sockets) works; sandbox-exec is replaced
    by a script that records the profile and runs the command, since only macOS has the real one."""
    recorded = tmp_path / "profile.sb"
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "sandbox-exec").write_text(f'#!/bin/sh\nprintf "%s" "$2" > {recorded}\nshift 2\nexec "$@"\n')
    (bin_folder / "sandbox-exec").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "course").mkdir()
    probe = "from ipykernel.kernelapp import IPKernelApp\nimport os\nprint('TRANSPORT', IPKernelApp.instance().transport, os.getcwd())"
    result = run_cells([new_code_cell(probe)], tmp_path, "seatbelt")
    text = outputs(result.notebook.cells[0])
    assert "TRANSPORT ipc" in text, text
    profile = recorded.read_text()
    deny_read = next(line for line in profile.splitlines() if line.startswith("(deny file-read*"))
    assert f'(subpath "{tmp_path / "course"}")' in deny_read and "(deny network*)" in profile, profile
    work = text.split("TRANSPORT ipc ")[1].split()[0]
    assert "(allow file-write* " in profile and f'(subpath "{os.path.dirname(work)}")' in profile, (work, profile)
    assert not os.path.exists(work), "the sandbox's folder should be removed afterwards"


def test_an_isolation_asked_for_that_does_not_work_stops_the_grader(tmp_path, monkeypatch):
    """``--isolation bubblewrap`` where bwrap fails: an error with what to do, not a class graded without isolation."""
    monkeypatch.setattr(sandbox, "isolation_problem", lambda isolation: "bwrap: setting up uid map: Permission denied")
    with pytest.raises(course.CourseError, match="does not work here: bwrap: setting up uid map") as error:
        runner.choose_isolation(classgrade.GradeSettings("lab1", isolation="bubblewrap").isolation)
    assert "What you can do" in str(error.value) and "leave --isolation out" in str(error.value), str(error.value)
    monkeypatch.setattr(sandbox, "isolation_problem", lambda isolation: None)
    assert runner.choose_isolation(classgrade.GradeSettings("lab1", isolation="basic").isolation) == (
        "basic", f"asked for with --isolation. {sandbox.BASIC_WARNING}")
