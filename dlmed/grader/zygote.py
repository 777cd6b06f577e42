"""Warm starts for the class grader's sandboxes: a zygote that has the libraries imported already.

A Lab 1 kernel spends more than half of its run importing torch, torchvision, matplotlib,
scikit-learn and pandas, and its supervisor most of a second importing nbclient. With
isolation "namespaces" (the grader runs as root) the grader starts one zygote per run, a
process that imports all of them once and afterwards only forks:

- the grader asks it for a supervisor (:func:`dlmed.grader.sandbox.supervise`): the zygote
  forks one, which takes the grader's pipes and goes back to the grader's mount namespace;
- the supervisor forks two *kernel seeds* at once (one for the kernel, one for a kernel started
  again after a crash), before it reads its job, so no notebook and no hidden test is ever in
  the memory a kernel starts from (the zygote never holds one);
- when the kernel manager starts the kernel, the seed enters the supervisor's mount and
  network namespaces and takes the launcher's own path (:func:`dlmed.grader.sandbox.launch`:
  PID namespace, private /proc, the sandbox's user, limits, no new privileges); only the final
  ``exec`` of ipykernel is replaced by starting ipykernel in the same, already warm, process.

A kernel started again after a crash (:mod:`dlmed.grader.executor`) takes the second seed; a
third start (none: a second crash ends the run) would start the usual way.
What the libraries read from the environment when they are imported (thread counts, the
Matplotlib backend and folder) is set in the zygote to the kernels' own values first.
"""

import atexit
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Dict, List, Optional

from dlmed.grader.sandbox import (
    CLONE_NEWNET, CLONE_NEWNS, KERNEL_FOLDERS, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_REC, die_with_parent, kernel_env,
    libc_call, mount, prctl, skip_uri_grammar, supervisor_env,
)

#: Imported once in the zygote: what kernels (the labs' set-up cells, the guard) and supervisors import.
PRELOADED = [
    "numpy", "scipy", "scipy.stats", "pandas", "sklearn", "sklearn.metrics", "sklearn.model_selection",
    "matplotlib", "matplotlib.pyplot", "PIL.Image", "torch", "torch.nn", "torch.utils.data", "torchvision",
    "IPython", "ipykernel.kernelapp", "ipykernel.ipkernel",
    "nbformat", "nbclient", "jupyter_client", "psutil",
    "dlmed", "dlmed.grader.executor", "dlmed.grader.guard", "dlmed.grader.seal",
]
#: Modules that decide at import whether they run under IPython (the inline backend hooks itself
#: into the running shell, tqdm picks its notebook bar): dropped after preloading, so the kernel
#: imports them afresh.
IMPORTED_IN_KERNEL = ("matplotlib_inline", "tqdm.auto", "tqdm.autonotebook", "tqdm.notebook")
#: The kernel's folders with namespaces (:func:`dlmed.grader.sandbox._prepare_work_folder`, in its
#: private /tmp): the zygote imports Matplotlib & co. with the same ones, in a private /tmp of its own.
_KERNEL_FOLDERS = {name: os.path.join("/tmp", name) for name in KERNEL_FOLDERS}
_STARTUP_SECONDS = 180
PR_SET_DUMPABLE = 4
#: Environment variables the preloaded libraries set on import (see _preload).
ADDED_ON_IMPORT: Dict[str, str] = {}
#: Folders in /tmp the preloaded libraries made on import, with their modes.
MADE_ON_IMPORT: Dict[str, int] = {}
#: What `python -m` put first on the zygote's sys.path (its folder), which kernels do not get.
_STARTED_IN = sys.path[0] if sys.path else ""


def usable(isolation: str) -> bool:
    """Whether warm starts work with this isolation (only "namespaces": they need root to enter namespaces)."""
    return isolation == "namespaces" and sys.platform.startswith("linux") and os.geteuid() == 0


# --- the grader's side -----------------------------------------------------------------------


class Zygote:
    """The grader's handle on its zygote process; :meth:`spawn` gives a supervisor, :meth:`close` ends it.

    Create it in the thread that lives as long as grading (the zygote dies with that thread).
    """

    def __init__(self, kernel_base_env: Dict[str, str], data_dir: str, font_cache: Optional[str]):
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket, self._lock, self._ready = ours, threading.Lock(), None
        self.data_bytes = 0  # the zygote's data segment once ready: what a warm kernel starts with (RLIMIT_DATA counts it)
        self._log = tempfile.TemporaryFile()
        settings = {"parent": os.getpid(), "cwd": os.getcwd(), "font_cache": font_cache or "",
                    "supervisor_env": supervisor_env()}
        # The kernels' locale, not the grader's: Python fixes its encodings (and coerces a C
        # locale, setting LC_CTYPE) when it starts.
        env = {key: value for key, value in supervisor_env().items() if key not in ("LANG", "LC_ALL", "LC_CTYPE")}
        env.update(_import_time_env(kernel_base_env, data_dir))
        settings["given_env"] = sorted(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlmed.grader.zygote", str(its.fileno()), json.dumps(settings)],
            pass_fds=[its.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            env=env, start_new_session=True)
        its.close()
        self.pid = self.process.pid

    def wait_ready(self) -> Optional[str]:
        """Wait until the zygote has imported everything; None when it is ready, else why not."""
        with self._lock:
            if self._ready is None:
                self._socket.settimeout(_STARTUP_SECONDS)
                try:
                    answer = self._socket.recv(64)
                except OSError as failure:
                    answer = f"{failure}".encode()
                self._socket.settimeout(None)
                if answer.startswith(b"ready "):
                    self._ready, self.data_bytes = "", int(answer.split()[1])
                else:
                    self._log.seek(0)
                    tail = self._log.read()[-1500:].decode(errors="replace").strip()
                    self._ready = f"the zygote did not start ({answer.decode(errors='replace') or 'it exited'})" + (
                        f":\n{tail}" if tail else "")
            return self._ready or None

    def spawn(self) -> "ForkedSupervisor":
        """A new supervisor forked from the zygote, its standard streams piped to us (raises OSError)."""
        if self.wait_ready():
            raise OSError(self.wait_ready())
        pipes = [os.pipe() for _ in range(3)]
        theirs, ours = [pipes[0][0], pipes[1][1], pipes[2][1]], [pipes[0][1], pipes[1][0], pipes[2][0]]
        answer = b""
        try:
            with self._lock:
                socket.send_fds(self._socket, [b"spawn"], theirs)
                answer = self._socket.recv(64)
        finally:
            for fd in theirs + ([] if answer.isdigit() else ours):
                os.close(fd)
        if not answer.isdigit():
            raise OSError(f"the zygote did not fork a supervisor ({answer.decode(errors='replace') or 'it has exited'})")
        return ForkedSupervisor(int(answer), os.fdopen(pipes[0][1], "wb"), os.fdopen(pipes[1][0], "rb"),
                                os.fdopen(pipes[2][0], "rb"))

    def close(self):
        """End the zygote, once no sandbox runs (the supervisors it forked die with it).

        Killed rather than asked to exit: it holds nothing to save, and Python's own exit
        with torch & co. loaded takes 1.7 s, at the end of every run.
        """
        self._socket.close()
        self.process.kill()
        self.process.wait()
        self._log.close()


class ForkedSupervisor:
    """A supervisor forked by the zygote: the part of :class:`subprocess.Popen` that ``run_notebook`` uses.

    It is the zygote's child, not ours: its exit status is not known here (``returncode`` stays None).
    """

    returncode = None

    def __init__(self, pid: int, stdin, stdout, stderr):
        self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr
        self._readers: List[threading.Thread] = []
        self._read: Dict[str, bytes] = {"out": b"", "err": b""}

    def communicate(self, data: bytes = b"", timeout: Optional[float] = None):
        """Send ``data``, read both outputs to their end; like :meth:`subprocess.Popen.communicate`."""
        if not self._readers:
            for name, stream in (("out", self.stdout), ("err", self.stderr)):
                reader = threading.Thread(target=self._drain, args=(name, stream), daemon=True)
                reader.start()
                self._readers.append(reader)
            try:
                self.stdin.write(data)
            except BrokenPipeError:
                pass  # it died before reading its job: its outputs say why
            finally:
                try:
                    self.stdin.close()
                except BrokenPipeError:
                    pass
        for reader in self._readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired("supervisor", timeout)
        return self._read["out"], self._read["err"]

    def _drain(self, name: str, stream):
        self._read[name] = stream.read()
        stream.close()

    def kill(self):
        """SIGKILL the supervisor (its kernel follows: parent-death signals)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass


def _import_time_env(kernel_base_env: Dict[str, str], data_dir: str) -> Dict[str, str]:
    """The kernels' environment (``sandbox.kernel_env`` with namespaces), and the backend ipykernel sets."""
    job = {"env": kernel_base_env, "isolation": "namespaces", "data_dir": data_dir}
    return dict(kernel_env(job, dict(_KERNEL_FOLDERS, base="/tmp")), MPLBACKEND="module://matplotlib_inline.backend_inline")


# --- the zygote --------------------------------------------------------------------------------


def serve(channel: socket.socket, settings: dict):
    """The zygote's life: import everything, then fork a supervisor for each request until the grader closes."""
    die_with_parent(settings["parent"])
    host_mounts = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    # Matplotlib keeps the folder it was imported with: give it the kernels' folder, in a
    # private /tmp (supervisors go back to the host's mounts, kernels get their own /tmp).
    libc_call("unshare", CLONE_NEWNS)
    mount(None, "/", flags=MS_REC | MS_PRIVATE)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    for folder in _KERNEL_FOLDERS.values():
        os.mkdir(folder, mode=0o700)
    if settings["font_cache"] and os.path.isfile(settings["font_cache"]):
        shutil.copy(settings["font_cache"], _KERNEL_FOLDERS["mplconfig"])
    _preload(settings["given_env"])
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked supervisors are reaped by the system
    channel.send(f"ready {_data_bytes()}".encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 64, 3)
        except OSError:
            break
        if not message:
            break  # the grader closed: no more students
        try:
            pid = os.fork()
        except OSError as failure:  # out of processes or memory: the grader starts this one cold
            pid = None
            channel.send(f"fork failed: {failure}".encode())
        if pid == 0:
            try:
                _become_supervisor(channel, fds, host_mounts, settings)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        if pid is not None:
            channel.send(str(pid).encode())


def _data_bytes() -> int:
    """This process's data segment (VmData), which RLIMIT_DATA limits."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))


def _preload(given_env: List[str]):
    skip_uri_grammar()
    import importlib

    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a library this course does not install: the kernel imports what it needs
    if "PIL.Image" in sys.modules:
        sys.modules["PIL.Image"].preinit()  # the usual image formats' plugins, which the first image read imports
    if "nbformat" in sys.modules:
        sys.modules["nbformat"].v4.new_output("stream", name="stdout", text="")  # compiles the schema supervisors validate outputs with
    for name in list(sys.modules):
        if name.startswith(IMPORTED_IN_KERNEL):
            del sys.modules[name]
    # What Python's start (LC_CTYPE, when it coerces a C locale) and the libraries on import
    # (torch: KMP_*, TORCHINDUCTOR_CACHE_DIR) put into the environment, for the kernels, whose
    # environment is replaced by their own.
    ADDED_ON_IMPORT.update({key: value for key, value in os.environ.items() if key not in given_env})
    # And the folders they made in /tmp (torch: its compiler's cache folder), made again in each kernel's.
    for entry in os.scandir("/tmp"):
        if entry.is_dir() and entry.path not in _KERNEL_FOLDERS.values():
            MADE_ON_IMPORT[entry.path] = entry.stat().st_mode & 0o7777
    # The libraries' objects live as long as the kernels: out of the garbage collector's sight, a
    # collection in a fork neither walks them nor writes to (and so copies) the pages they share.
    gc.collect()
    gc.freeze()


def _become_supervisor(channel: socket.socket, fds: List[int], host_mounts: int, settings: dict):
    """In a fork of the zygote: take the grader's pipes, go back to its mounts, fork the kernel seeds, supervise."""
    zygote = os.getppid()
    channel.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # the grader kills the sandbox by this group
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    die_with_parent(zygote)
    libc_call("setns", host_mounts, CLONE_NEWNS)
    os.close(host_mounts)
    os.chdir(settings["cwd"])
    os.environ.clear()
    os.environ.update(settings["supervisor_env"])
    # Before the job is read, so that they never hold it: the kernel's seed, and one for a
    # kernel started again after a crash.
    seeds = (KernelSeed(), KernelSeed())
    from dlmed.grader import sandbox

    code = sandbox.main([], seeds=seeds)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- the supervisor's seed of a kernel ----------------------------------------------------------


class KernelSeed:
    """A warm fork of the supervisor, made before it read its job, that becomes the kernel's launcher on request."""

    def __init__(self):
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _seed(its, parent)
            finally:
                os._exit(1)
        its.close()
        self.pid, self._socket = pid, ours

    def start(self, command: List[str], settings: dict, env: Dict[str, str], cwd: str, streams: list) -> "WarmLauncher":
        """Make the seed the launcher of ``command`` (an ipykernel command line) with ``settings`` (see sandbox.launch)."""
        request = json.dumps({"command": command, "settings": settings, "env": env, "cwd": cwd}).encode()
        opened, fds = [], []
        for stream in streams:
            if stream is None or stream == subprocess.DEVNULL:
                opened.append(os.open(os.devnull, os.O_RDWR))
                fds.append(opened[-1])
            else:
                fds.append(stream if isinstance(stream, int) else stream.fileno())
        try:
            socket.send_fds(self._socket, [request], fds)
            self._socket.settimeout(60)
            answer = self._socket.recv(64)
        finally:
            for fd in opened:
                os.close(fd)
            self._socket.close()
        if answer != b"started":
            self._reap()
            raise RuntimeError(f"the warm kernel did not start ({answer.decode(errors='replace') or 'it exited'})")
        return WarmLauncher(self.pid, command)

    def discard(self):
        """Not needed (the job is over, or a kernel starts the usual way): the seed exits."""
        self._socket.close()
        self._reap()

    def _reap(self):
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def kernel_command_is_ipykernel(command: List[str]) -> bool:
    """Whether ``command`` is ``python -m ipykernel_launcher ...`` with this Python (what a seed can start)."""
    return command[:3] == [sys.executable, "-m", "ipykernel_launcher"]


class WarmLauncher(subprocess.Popen):
    """The started seed, as the kernel manager's process object (the parts of Popen it uses, on our child's pid)."""

    launcher = True  # the kernel is its child (dlmed.grader.executor looks for it there)

    def __init__(self, pid: int, args: List[str]):  # the process exists already: no Popen.__init__
        self.args, self.pid, self.returncode = args, pid, None
        self.stdin = self.stdout = self.stderr = None
        self._waitpid_lock = threading.Lock()
        self._child_created = True
        self._communication_started = False
        self._input = None
        self._sigint_wait_secs = 0.25
        self._closed_child_pipe_fds = True
        self.text_mode = self.universal_newlines = False
        self.encoding = self.errors = None


def _seed(channel: socket.socket, parent: int):
    """In the seed: wait for the launch request, enter the sandbox, become the launcher (never returns)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the supervisor's streams carry its job and answer: not ours
    keep = {0, 1, 2, channel.fileno()}
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
    die_with_parent(parent)
    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 3)
    if not message:
        os._exit(0)
    request = json.loads(message)
    os.setsid()  # as jupyter_client starts kernels: the launcher leads the kernel's process group
    for kind, flag in (("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS)):
        namespace = os.open(f"/proc/{parent}/ns/{kind}", os.O_RDONLY)
        libc_call("setns", namespace, flag)
        os.close(namespace)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(ADDED_ON_IMPORT, **request["env"])
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    channel.send(b"started")
    channel.close()
    from dlmed.grader import sandbox

    sandbox.launch(request["settings"], request["command"], start=_start_ipykernel)


def _start_ipykernel(command: List[str]):
    """In the kernel process, limits applied: run ``python -m ipykernel_launcher ARGS`` here, then exit."""
    # exec would make the process dumpable again after setuid made it not (its /proc files
    # its own, readable by it): as a cold kernel is.
    prctl(PR_SET_DUMPABLE, 1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    for folder, mode in MADE_ON_IMPORT.items():
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, mode)
    import numpy

    numpy.random.seed()  # a fresh kernel's global generator is seeded from the system; forks share the zygote's
    import ipykernel_launcher
    from ipykernel import kernelapp

    sys.argv = [ipykernel_launcher.__file__] + command[3:]
    if sys.path and sys.path[0] in ("", _STARTED_IN):
        del sys.path[0]  # the zygote's folder (`python -m`); a kernel's own goes as ipykernel_launcher drops it
    code = 0
    try:
        # parent_handle's default is read from the environment when ipykernel is imported
        # (in the zygote, where it was not set): given as the kernel's own would read it.
        kernelapp.IPKernelApp.launch_instance(parent_handle=int(os.environ.get("JPY_PARENT_PID") or 0))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m dlmed.grader.zygote FD SETTINGS`` (started by :class:`Zygote`)."""
    argv = sys.argv[1:] if argv is None else argv
    serve(socket.socket(fileno=int(argv[0])), json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    from dlmed.grader.zygote import main as zygote_main  # its state in the module others import

    sys.exit(zygote_main())
