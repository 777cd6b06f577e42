"""Run one student's notebook in a sandbox: its own processes, limits, no network, no course files.

The class grader (:mod:`dlmed.grader.classgrade`) calls :func:`run_notebook` once per submission.
That starts a *supervisor* (``python -m dlmed.grader.sandbox``) which prepares the sandbox, starts
the student's kernel through a small *launcher* (``python -m dlmed.grader.sandbox --launch``) and
executes the notebook with :class:`dlmed.grader.executor.GuardedExecute`; the executed notebook
comes back on the supervisor's standard output, which the kernel cannot reach.

Four levels of isolation (:func:`choose_isolation` picks the strongest available and says why):

``namespaces`` (Linux, grader run as root, e.g. a course server or a container)
    The supervisor enters new mount, network and PID namespaces. It mounts private, empty
    ``/tmp``, ``/var/tmp`` and ``/dev/shm``; covers the course root, the home folders and
    any other folder it is told to hide with empty read-only file systems, and puts back,
    read-only, only what the kernel needs (the Python installation, the ``dlmed`` package,
    the data folder, the PyTorch weights cache). The data folder is an overlay: writes go to
    a private layer that disappears with the sandbox. The network namespace has only a
    loopback interface. The kernel runs as an unprivileged user of its own (uid
    ``61000 + slot``), as PID 1 of its PID namespace with its own ``/proc``, so it sees no
    other process and everything it starts dies with it.
``bubblewrap`` (Linux without root, where unprivileged user namespaces are allowed)
    The supervisor runs inside `bubblewrap <https://github.com/containers/bubblewrap>`_
    (``bwrap``, the sandbox Flatpak is built on) with new user, mount, network, PID, IPC and
    UTS namespaces. Its file system is built from nothing: the system folders (``/usr``,
    ``/etc``, ...), the Python installation, ``dlmed``, the PyTorch weights cache and the data
    folder, read-only; the course root, the home folders and every other folder it is told to
    hide are empty and read-only; ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are private; nothing
    else of the machine (``/home``, ``/root``, ``/run``, ``/srv``, ``/opt``, ``/mnt``, ...) is
    there. The network namespace has only its own loopback. The launcher then gives the
    kernel a user and PID namespace of its own, nested inside: the kernel is PID 1 there, sees
    no other process (not the supervisor, which holds the hidden tests and runs as the same
    user) and counts its processes against ``RLIMIT_NPROC`` in that namespace only. The data
    folder is read-only to students (writes fail); the trusted reference run may write it.
``seatbelt`` (macOS with ``sandbox-exec``; untested on a real Mac)
    The supervisor and the kernel run under a Seatbelt profile (:func:`seatbelt_profile`)
    that denies reading the hidden folders (the course root, the home folders, ...) except
    the kept ones, all network access except the Unix sockets the kernel talks to the
    supervisor over, and writing outside the sandbox's temporary folder. The kernel runs as
    the grader's user and sees its other processes; there is no private ``/tmp``.
``basic`` (anywhere the above do not work)
    The kernel runs in its own session in a private temporary working folder, with a scrubbed
    environment and the resource limits below. The file system and the network are *not*
    isolated: :func:`choose_isolation` says what the instructor can do about it.

Limits, at every level: wall time per cell and per notebook, memory (``RLIMIT_DATA`` per
process plus a watchdog over the kernel and its children, which also works on macOS where
the rlimit is not enforced), number of processes (``RLIMIT_NPROC``, for the kernel's own
user), size of any file written (``RLIMIT_FSIZE``), no core dumps, and a cap on the output
kept from the notebook.
"""

import ctypes
import dataclasses
import json
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

#: First uid of the kernels' unprivileged users (one per parallel slot) in ``namespaces`` mode.
SANDBOX_UID_BASE = 61000

# Linux constants (sched.h, mount.h, prctl.h, if.h, sockios.h).
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_NOATIME, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1024, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40


@dataclasses.dataclass
class Limits:
    """What one submission may use. Sizes in bytes, times in seconds."""

    cell_timeout: int = 300
    notebook_timeout: int = 900
    memory_bytes: int = 4 * 2**30
    max_processes: int = 256
    max_file_bytes: int = 256 * 2**20
    max_output_bytes: int = 20 * 2**20
    tmp_bytes: int = 1 * 2**30

    def describe(self) -> str:
        """One line for logs and reports."""
        return (f"{self.cell_timeout} s per cell, {self.notebook_timeout} s per notebook, "
                f"{self.memory_bytes / 2**30:g} GiB memory, {self.max_processes} processes, "
                f"files up to {self.max_file_bytes / 2**20:g} MiB")


@dataclasses.dataclass
class SandboxResult:
    """What came back from one sandboxed run."""

    notebook: Optional[dict]
    events: List[dict]
    stop_reason: Optional[str]
    seconds: float
    peak_memory: int
    isolation: str
    error: Optional[str] = None  # the sandbox itself failed (not the student's code)
    hidden_seconds: List[float] = dataclasses.field(default_factory=list)  # each hidden-test part's sealed run
    startup_seconds: float = 0.0  # of ``seconds``: from the supervisor's start until the kernel answered
    wall_seconds: float = 0.0  # the whole run as the grader saw it (the supervisor's own start included)


# --- Linux system calls ------------------------------------------------------------------

_libc = None


def libc_call(name, *args):
    """Call the C library's ``name`` with ``args``; raise OSError (with errno) when it does not return 0."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = getattr(_libc, name)(*args)
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}{args}: {os.strerror(error)}")


def mount(source, target, fstype=None, flags=0, data=None):
    """mount(2): ``source`` on ``target`` (``MS_*`` ``flags``, filesystem ``data``); raises OSError."""
    encode = lambda value: None if value is None else str(value).encode()  # noqa: E731
    libc_call("mount", encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data))


def prctl(option, value):
    """prctl(2) with one argument (``PR_SET_PDEATHSIG``, ``PR_SET_NO_NEW_PRIVS``, ...); raises OSError."""
    libc_call("prctl", option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def die_with_parent(parent: Optional[int]):
    """Linux: get SIGKILL when the parent process ends; exit at once if it is no longer ``parent``.

    The check covers a parent that ended before the signal was asked for (it would never
    come). ``parent`` None: no check (the parent's pid is not known here). Elsewhere: nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _loopback_up():
    """Bring up ``lo`` in a new network namespace (the kernel talks to the supervisor over it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        import fcntl

        flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags, b"\0" * 14))


#: Isolations whose sandbox has a private ``/tmp`` of its own (the kernel's folders are there).
_PRIVATE_TMP = ("namespaces", "bubblewrap")
#: The kernel's folders, made in its sandbox's folder (``/tmp`` where that is private).
KERNEL_FOLDERS = ("work", "home", "mplconfig", "ipython")
#: Every value of ``--isolation`` except ``auto``, strongest first.
ISOLATIONS = ("namespaces", "bubblewrap", "seatbelt", "basic")

#: What the instructor is told whenever submissions are graded with ``basic`` isolation.
BASIC_WARNING = ("Grading continues with 'basic' isolation: time, memory, process and file-size limits "
                  "only. Student code runs as you: it can read your files (the hidden tests in source/, "
                  "other students' submissions, the gradebook) and use the network.")


def detect_isolation() -> str:
    """The strongest isolation this machine allows: one of :data:`ISOLATIONS`."""
    return choose_isolation()[0]


def choose_isolation() -> Tuple[str, str]:
    """(the strongest isolation this machine allows, why: a few sentences for the instructor).

    Linux as root: ``namespaces``; Linux where bubblewrap can create unprivileged user
    namespaces (as root too, when the first fails): ``bubblewrap``; otherwise ``basic``, and
    the reason then says what would make the stronger modes work.
    """
    if sys.platform == "darwin":
        problem = isolation_problem("seatbelt")
        if problem is None:
            return "seatbelt", ("macOS: each submission runs under a sandbox-exec (Seatbelt) profile that denies "
                                "reading the course and home folders, the network, and writes outside its own "
                                "folder; it still runs as you and sees your processes (README: What is enforced where)")
        return "basic", (f"sandbox-exec cannot isolate submissions here: {problem}. {BASIC_WARNING} To isolate "
                         "submissions, grade on Linux (a server, a virtual machine or a container).")
    if not sys.platform.startswith("linux"):
        return "basic", (f"{sys.platform} has no Linux namespaces. {BASIC_WARNING} To isolate "
                         "submissions, grade on Linux (a server, a virtual machine or a container).")
    root_problem = ""
    if os.geteuid() == 0:
        problem = isolation_problem("namespaces")
        if problem is None:
            return "namespaces", ("the grader runs as root on Linux: each kernel gets its own mount, network "
                                  "and PID namespaces and its own unprivileged user")
        root_problem = f"Running as root, but namespaces cannot be created here ({problem}). "
    problem = isolation_problem("bubblewrap")
    if problem is None:
        return "bubblewrap", (f"{root_problem}bubblewrap ({find_bubblewrap()}) can create unprivileged user "
                              "namespaces here: each submission gets its own user, mount, network and PID "
                              "namespaces, with the course and the home folders hidden")
    return "basic", f"{root_problem}bubblewrap cannot isolate submissions here: {problem}. {BASIC_WARNING}\n{userns_advice()}"


def find_bubblewrap() -> Optional[str]:
    """Path of the ``bwrap`` program, or None when it is not installed."""
    return shutil.which("bwrap")


def isolation_problem(isolation: str) -> Optional[str]:
    """None when ``isolation`` works on this machine, else what went wrong (tried in a throw-away sandbox)."""
    if isolation == "basic":
        return None
    if isolation == "seatbelt":
        return _seatbelt_problem()
    if not sys.platform.startswith("linux"):
        return f"'{isolation}' needs Linux"
    if isolation == "namespaces":
        if os.geteuid() != 0:
            return "'namespaces' needs the grader to run as root"
        command = [sys.executable, "-m", "dlmed.grader.sandbox", "--probe", "namespaces"]
    elif isolation == "bubblewrap":
        if find_bubblewrap() is None:
            return "the program bwrap (package bubblewrap) is not installed"
        command = bubblewrap_command([], python_paths(), [], 2**20) + [sys.executable, "-m", "dlmed.grader.sandbox",
                                                                        "--probe", "bubblewrap"]
    else:
        return f"unknown isolation {isolation!r}; choose one of {', '.join(ISOLATIONS)}"
    return _run_probe(command)


def _run_probe(command: List[str]) -> Optional[str]:
    """Run a probe (``python -m dlmed.grader.sandbox --probe ...`` in its sandbox): None if it passed, else its last words."""
    try:
        probe = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                               env=supervisor_env())
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{type(error).__name__}: {error}"
    if probe.returncode == 0:
        return None
    lines = [line for line in (probe.stderr or probe.stdout).strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"the probe exited with status {probe.returncode}"


def _read_setting(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def userns_advice() -> str:
    """What an instructor can do so that bubblewrap (unprivileged user namespaces) works here."""
    advice = []
    if find_bubblewrap() is None:
        advice.append("install bubblewrap: `sudo apt install bubblewrap` (Debian, Ubuntu), "
                      "`sudo dnf install bubblewrap` (Fedora, RHEL), `sudo pacman -S bubblewrap` (Arch)")
    if _read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        advice.append("allow unprivileged user namespaces: `sudo sysctl -w kernel.unprivileged_userns_clone=1`")
    if _read_setting("/proc/sys/user/max_user_namespaces") == "0":
        advice.append("allow user namespaces: `sudo sysctl -w user.max_user_namespaces=15000`")
    if _read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        advice.append("Ubuntu 23.10 and later restrict user namespaces with AppArmor: "
                      "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or install an AppArmor "
                      "profile that allows `userns` for /usr/bin/bwrap")
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        advice.append("in a container (Docker, Podman): start it with `--security-opt seccomp=unconfined "
                      "--security-opt apparmor=unconfined` (bubblewrap), or run the grader as root in a "
                      "container started with `--cap-add SYS_ADMIN` (the 'namespaces' mode)")
    advice.append("or run the grader as root on Linux (`sudo`), which uses the 'namespaces' mode")
    return "What you can do:\n" + "\n".join(f"  - {line}" for line in advice)


def _probe(isolation: str, args: List[str]) -> int:
    """Exit status 0 when ``isolation``'s namespaces and mounts (or profile) work here (run in a throw-away process)."""
    if isolation == "seatbelt":
        return _probe_seatbelt(*args)
    try:
        if isolation == "bubblewrap":  # inside bwrap: what the launcher does for the kernel
            _enter_own_user_namespace()
            libc_call("unshare", CLONE_NEWPID | CLONE_NEWNS)
            child = os.fork()
            if child == 0:
                try:
                    mount(None, "/", flags=MS_REC | MS_PRIVATE)
                    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                except OSError as error:
                    print(f"the kernel's own PID namespace does not work: {error}", file=sys.stderr, flush=True)
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(child, 0)
            return 0 if status == 0 else 1
        libc_call("unshare", CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
        mount(None, "/", flags=MS_REC | MS_PRIVATE)
        mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m")
        _loopback_up()
    except OSError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _enter_own_user_namespace():
    """Enter a new user namespace in which this process keeps its user and group ids (no privileges outside)."""
    uid, gid = os.getuid(), os.getgid()
    libc_call("unshare", CLONE_NEWUSER)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


# --- paths the kernel needs ----------------------------------------------------------------


def python_paths() -> List[str]:
    """Folders the kernel's Python needs to read: installation, site-packages, the dlmed package."""
    import dlmed

    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(sys.executable).resolve().parent.parent), str(Path(dlmed.__file__).resolve().parent)}
    candidates.update(p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p)
    return sorted(candidates)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


#: Never covered, whatever HOME says (a container may have HOME=/): the kernel needs them.
_SYSTEM_FOLDERS = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/tmp", "/usr", "/var"}


def plan_paths(hide: List[str], keep: List[str]):
    """Normalise hidden and kept folders: a kept folder must not contain a hidden one (it would show it)."""
    hide = sorted({os.path.realpath(p) for p in hide if p and os.path.isdir(p)} - _SYSTEM_FOLDERS)
    keep = sorted({os.path.realpath(p) for p in keep if p and os.path.exists(p)})
    keep = [k for k in keep if not any(_inside(h, k) for h in hide)]
    return hide, keep


#: Top-level system folders the bubblewrap sandbox shows (read-only); links among them stay links.
_BUBBLEWRAP_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
#: Files of a submission folder the kernel does not get (the notebook is executed, not copied).
_NOT_COPIED = shutil.ignore_patterns("*.ipynb", "timestamp.txt")
#: Where the supervisor finds the submission's other files (a copy made on the host) in the bubblewrap sandbox.
_BUBBLEWRAP_SUBMISSION = "/tmp/.dlmed-submission"


def bubblewrap_command(hide: List[str], keep: List[str], binds: List[Tuple[str, str, bool]], tmp_bytes: int) -> List[str]:
    """The ``bwrap`` command line (without the program to run) for one sandbox.

    ``hide`` and ``keep`` come from :func:`plan_paths`; ``binds`` are (host path, sandbox path,
    writable) for the data folder and the like. Order matters: bwrap applies its options one
    after another, so kept folders are bound after the hidden ones are covered.
    """
    command = [find_bubblewrap() or "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    for folder in _BUBBLEWRAP_SYSTEM:
        if os.path.islink(folder):
            command += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            command += ["--ro-bind", folder, folder]
    command += ["--proc", "/proc", "--dev", "/dev"]
    for private in ("/tmp", "/var/tmp", "/dev/shm"):
        command += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", private]
    covers = [folder for folder in hide if not _inside(folder, "/tmp")]
    for folder in covers:
        command += ["--tmpfs", folder]
    for folder in keep:
        command += ["--ro-bind", folder, folder]
    for source, target, writable in binds:
        command += ["--bind" if writable else "--ro-bind", source, target]
    for folder in covers:
        command += ["--remount-ro", folder]
    return command + ["--remount-ro", "/", "--chdir", "/tmp", "--"]


def find_sandbox_exec() -> Optional[str]:
    """Path of macOS's ``sandbox-exec``, or None (not macOS, or not there)."""
    return shutil.which("sandbox-exec") if sys.platform == "darwin" else None


def _sbpl_string(path: str) -> str:
    return json.dumps(os.path.realpath(path))  # SBPL strings are quoted and escaped as in C (and JSON)


def seatbelt_profile(hide: List[str], readable: List[str], writable: List[str]) -> str:
    """A Seatbelt (``sandbox-exec``) profile: the kernel may not read ``hide`` (except ``readable``), use the
    network (except Unix sockets in ``writable``, its connection to the supervisor) or write outside ``writable``.

    Later rules win in Seatbelt, so the exceptions come after the rules they make exceptions to.
    File metadata stays readable (Python looks at the folders above its own files).
    """
    def paths(folders):
        return " ".join(f"(subpath {_sbpl_string(folder)})" for folder in folders)

    rules = ["(version 1)", "(allow default)", "(deny network*)"]
    if writable:
        rules.append(f"(allow network* (local unix-socket {paths(writable)}) (remote unix-socket {paths(writable)}))")
    rules.append("(deny file-write*)")
    devices = " ".join(f"(literal {_sbpl_string(device)})" for device in ("/dev/null", "/dev/zero", "/dev/dtracehelper"))
    rules.append(f"(allow file-write* {devices}{' ' + paths(writable) if writable else ''})")
    if hide:
        rules.append(f"(deny file-read* {paths(hide)})")
        rules.append("(allow file-read-metadata)")
    if readable:
        rules.append(f"(allow file-read* {paths(readable)})")
    return "\n".join(rules) + "\n"


def _seatbelt_problem() -> Optional[str]:
    """None when a Seatbelt profile isolates as promised here (tried with a throw-away process), else why not."""
    sandbox_exec = find_sandbox_exec()
    if sandbox_exec is None:
        return "'seatbelt' needs macOS with sandbox-exec" if sys.platform != "darwin" else "sandbox-exec is not on PATH"
    base, hidden = tempfile.mkdtemp(prefix="dlmed-"), tempfile.mkdtemp(prefix="dlmed-hidden-")
    try:
        Path(hidden, "secret").write_text("secret")
        profile = seatbelt_profile([hidden], python_paths(), [base])
        with socket.create_server(("127.0.0.1", 0)) as server:
            problem = _run_probe([sandbox_exec, "-p", profile, sys.executable, "-m", "dlmed.grader.sandbox", "--probe",
                                  "seatbelt", base, hidden, str(server.getsockname()[1])])
    except OSError as error:
        problem = f"{type(error).__name__}: {error}"
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(hidden, ignore_errors=True)
    return problem and f"the profile did not hold: {problem}"


def _probe_seatbelt(base: str, hidden: str, port: str) -> int:
    """Under the profile: a Unix socket in ``base`` works; reading ``hidden``, TCP to ``port`` and writing outside fail."""
    failures = []
    path = os.path.join(base, "probe.sock")
    try:
        with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as client:
            listener.bind(path)
            listener.listen(1)
            client.connect(path)
    except OSError as error:
        failures.append(f"a Unix socket in the sandbox's folder failed ({error})")
    attempts = {"read a hidden file": lambda: Path(hidden, "secret").read_text(),
                "wrote outside the sandbox's folder": lambda: Path(hidden, "written").write_text("x"),
                "connected to the loopback": lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()}
    for what, attempt in attempts.items():
        try:
            attempt()
            failures.append(what)
        except OSError:
            pass
    if failures:
        print("; ".join(failures), file=sys.stderr)
    return 1 if failures else 0


# --- the host side -------------------------------------------------------------------------

_running = set()
_running_lock = threading.Lock()


def skip_uri_grammar():
    """Keep jsonschema (nbformat imports it) from compiling an optional URI grammar: about 1 s per process.

    ``rfc3987_syntax`` checks the formats "uri" and "iri", which no notebook schema uses. The
    grader, the zygote and each supervisor call this before they import nbformat.
    """
    sys.modules.setdefault("rfc3987_syntax", None)


def stop_all():
    """Kill every sandbox this process has running (the grader was interrupted)."""
    with _running_lock:
        for supervisor in list(_running):
            _kill_group(supervisor.pid)


def run_notebook(job: dict, limits: Limits, zygote=None) -> SandboxResult:
    """Execute one notebook in a fresh sandbox and return what came back.

    ``job`` holds the notebook (JSON), the executor's settings and the sandbox's layout; the
    class grader builds it. With isolation "namespaces" and a ``zygote``
    (:class:`dlmed.grader.zygote.Zygote`) the supervisor and the kernel start warm, forked
    from it. Never raises for the student's code: failures of the sandbox itself come back in
    ``SandboxResult.error``.
    """
    started = time.monotonic()
    command = [sys.executable, "-m", "dlmed.grader.sandbox"]
    host_folder = None  # made on the host for this sandbox, removed afterwards
    # With bubblewrap and seatbelt the supervisor cannot read the course folder (nor the
    # sanitized notebook there, which holds the hidden tests): it gets a copy of the
    # submission's other files.
    if job["isolation"] == "bubblewrap":
        host_folder = tempfile.mkdtemp(prefix="dlmed-submission-")
        copied = _copy_submission(job["copy_from"], host_folder)
        command = _bubblewrap_supervisor_command(job, copied) + command
        # No grader_pid: the supervisor's parent is bwrap's init, which dies with us (--die-with-parent).
        job = dict(job, copy_from=_BUBBLEWRAP_SUBMISSION if copied else None)
    elif job["isolation"] == "seatbelt":
        host_folder = tempfile.mkdtemp(prefix="dlmed-")  # the sandbox's folder: the profile names it
        copied = _copy_submission(job["copy_from"], os.path.join(host_folder, "submission"))
        command = [find_sandbox_exec() or "sandbox-exec", "-p", _seatbelt_supervisor_profile(job, host_folder)] + command
        job = dict(job, base=host_folder, grader_pid=os.getpid(), copy_from=copied)
    supervisor = None
    if job["isolation"] == "namespaces" and zygote is not None:
        try:
            supervisor = zygote.spawn()
            job = dict(job, grader_pid=zygote.pid)
        except OSError:
            supervisor = None  # the zygote is gone or could not fork: this sandbox starts cold
    if job["isolation"] not in ("bubblewrap", "seatbelt") and supervisor is None:
        job = dict(job, grader_pid=os.getpid())
    try:
        if supervisor is None:
            supervisor = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=supervisor_env(), start_new_session=True,
            )
    except OSError as failure:
        if host_folder:
            shutil.rmtree(host_folder, ignore_errors=True)
        return SandboxResult(None, [], None, time.monotonic() - started, 0, job["isolation"],
                             error=f"the sandbox could not be started: {failure}")
    with _running_lock:
        _running.add(supervisor)
    try:
        out, err = supervisor.communicate(json.dumps(job).encode(), timeout=limits.notebook_timeout + 120)
    except subprocess.TimeoutExpired:
        _kill_group(supervisor.pid)
        supervisor.kill()
        out, err = supervisor.communicate()
        return SandboxResult(None, [], None, time.monotonic() - started, 0, job["isolation"],
                             error="the sandbox did not finish in time and was killed")
    finally:
        with _running_lock:
            _running.discard(supervisor)
        if host_folder:
            shutil.rmtree(host_folder, ignore_errors=True)
    try:
        answer = json.loads(out.decode())
    except ValueError:
        tail = err.decode(errors="replace")[-3000:]
        status = "" if supervisor.returncode is None else f" (exit {supervisor.returncode})"
        return SandboxResult(None, [], None, time.monotonic() - started, 0, job["isolation"],
                             error=f"the sandbox failed{status}:\n{tail}")
    return SandboxResult(**answer, wall_seconds=time.monotonic() - started)


def _copy_submission(folder: Optional[str], target: str) -> Optional[str]:
    """Copy a submission folder's files other than notebooks to ``target``; return it (None: nothing to copy)."""
    if not folder or not os.path.isdir(folder):
        return None
    shutil.copytree(folder, target, dirs_exist_ok=True, symlinks=True, ignore=_NOT_COPIED)
    return target


def _bubblewrap_supervisor_command(job: dict, submission_copy: Optional[str]) -> List[str]:
    """bwrap's part of the command that starts a supervisor in the bubblewrap sandbox."""
    binds = [(job["data_dir"], job["data_dir"], bool(job["data_writable"]))]
    if submission_copy:
        binds.append((submission_copy, _BUBBLEWRAP_SUBMISSION, False))
    if job.get("font_cache") and os.path.isfile(job["font_cache"]):
        binds.append((job["font_cache"], job["font_cache"], False))
    return bubblewrap_command(job["hide"], job["keep"], binds, job["limits"]["tmp_bytes"])


def _seatbelt_supervisor_profile(job: dict, base: str) -> str:
    """The Seatbelt profile of one sandbox: its folder writable, Python, dlmed and the data folder readable."""
    readable = job["keep"] + [job["data_dir"], base] + ([job["font_cache"]] if job.get("font_cache") else [])
    writable = [base] + ([job["data_dir"]] if job["data_writable"] else [])
    return seatbelt_profile(job["hide"], readable, writable)


def supervisor_env() -> Dict[str, str]:
    """The environment a supervisor gets: the grader's PATH, locale and PYTHONPATH, no bytecode files."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _kill_group(pid: int):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


# --- the supervisor ------------------------------------------------------------------------


def _setup_namespaces(job: dict) -> Dict[str, str]:
    """Enter new mount and network namespaces and build the file system view; return the kernel's folders.

    The PID namespace is the launcher's: a process that has unshared it cannot start threads.
    """
    libc_call("unshare", CLONE_NEWNS | CLONE_NEWNET)
    mount(None, "/", flags=MS_REC | MS_PRIVATE)
    hide, keep = job["hide"], job["keep"]
    # Handles on what must stay reachable, taken before anything is covered.
    handles = {path: os.open(path, os.O_PATH) for path in keep + [job["data_dir"]] + _existing(job["copy_from"])}
    limits = job["limits"]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOATIME, f"mode=1777,size={limits['tmp_bytes']}")
    for private in ("/var/tmp", "/dev/shm"):
        if os.path.isdir(private):
            mount("tmpfs", private, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOATIME, f"mode=1777,size={limits['tmp_bytes']}")
    for folder in hide:
        if not _inside(folder, "/tmp"):
            mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    staging = Path("/tmp/.dlmed")
    staging.mkdir(mode=0o700)
    work = _prepare_work_folder(job, handles)
    for path in keep:
        if _covered(path, hide):
            _bind(handles[path], path, read_only=True)
    _mount_data_dir(job, handles, staging)
    for folder in hide:
        if not _inside(folder, "/tmp"):
            mount(None, folder, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for handle in handles.values():
        os.close(handle)
    _no_access_times()
    _loopback_up()
    return work


_MOUNT_OPTIONS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


def _no_access_times():
    """Remount every mount of this namespace ``noatime`` (the host's mounts are not touched).

    The sealed process that runs hidden tests (dlmed.grader.seal) may read files; with access
    times it could mark which ones it read, for the kernel to see afterwards.
    """
    with open("/proc/self/mountinfo") as mounts:
        entries = [line.split() for line in mounts]
    for fields in entries:
        target = fields[4].encode().decode("unicode_escape")  # \040 for a space, as the kernel writes it
        flags = sum(flag for name, flag in _MOUNT_OPTIONS.items() if name in fields[5].split(","))
        try:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOATIME | flags)
        except OSError:
            pass  # a mount that cannot be remounted (e.g. one that is hidden under another)


def _existing(path):
    return [path] if path and os.path.isdir(path) else []


def _covered(path: str, hide: List[str]) -> bool:
    return _inside(path, "/tmp") or any(_inside(path, h) for h in hide)


def _bind(handle: int, target: str, read_only: bool):
    source = f"/proc/self/fd/{handle}"
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mount_data_dir(job, handles, staging: Path):
    """Mount the data folder as an overlay: the kernel reads it and writes to a private layer.

    For a trusted run (the instructor's solution, which makes the grading stand-ins) the
    private layer is copied into the real folder afterwards (:func:`_commit_data`).
    """
    data_dir, handle = job["data_dir"], handles[job["data_dir"]]
    lower = staging / "data-lower"
    upper, workdir = staging / "data-upper", staging / "data-work"
    for folder in (lower, upper, workdir):
        folder.mkdir()
    mount(f"/proc/self/fd/{handle}", lower, None, MS_BIND | MS_REC)
    os.makedirs(data_dir, exist_ok=True)
    uid = job["uid"]
    os.chown(upper, uid, uid)
    try:
        mount("overlay", data_dir, "overlay", MS_NOSUID | MS_NODEV | MS_NOATIME,
               f"lowerdir={lower},upperdir={upper},workdir={workdir}")
    except OSError:  # no overlay support here: the data stays readable, writes fail
        _bind(handle, data_dir, read_only=True)


def _commit_data(staging: Path):
    """Copy what a trusted run wrote to the data folder's private layer into the real folder."""
    from dlmed.datasets import usual_permissions

    upper, lower = staging / "data-upper", staging / "data-lower"
    if not upper.is_dir():
        return
    for folder, subfolders, files in os.walk(upper):
        target = lower / Path(folder).relative_to(upper)
        target.mkdir(exist_ok=True)
        usual_permissions(target)
        for name in files:
            source = Path(folder) / name
            if source.is_symlink():
                (target / name).unlink(missing_ok=True)
                os.symlink(os.readlink(source), target / name)
            elif source.is_file():  # not an overlay whiteout (a character device)
                shutil.copyfile(source, target / name)
                usual_permissions(target / name)


def _prepare_work_folder(job: dict, handles: Dict[str, int]) -> Dict[str, str]:
    """Create the kernel's working folder, home and config folders; copy the submission's files in."""
    if job["isolation"] == "basic":
        base = Path(tempfile.mkdtemp(prefix="dlmed-sandbox-"))
    elif job["isolation"] == "seatbelt":
        base = Path(job["base"])  # made by the host: the profile names it
    else:
        base = Path("/tmp")  # private to the sandbox
    folders = {name: base / name for name in KERNEL_FOLDERS}
    for folder in folders.values():
        folder.mkdir(mode=0o700)
    source = job["copy_from"]
    if source and os.path.isdir(source):
        origin = f"/proc/self/fd/{handles[source]}" if source in handles else source
        shutil.copytree(origin, folders["work"], dirs_exist_ok=True,
                        ignore=_NOT_COPIED)
    if job.get("font_cache") and os.path.isfile(job["font_cache"]):
        shutil.copy(job["font_cache"], folders["mplconfig"])
    if job["isolation"] == "namespaces":
        uid = job["uid"]
        for folder in folders.values():
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, uid, uid)
    return {name: str(path) for name, path in folders.items()} | {"base": str(base)}


def kernel_env(job: dict, folders: Dict[str, str]) -> Dict[str, str]:
    """The kernel's whole environment: the job's, with the sandbox's folders (see _prepare_work_folder) and data folder."""
    env = dict(job["env"])
    env.update({
        "HOME": folders["home"], "TMPDIR": "/tmp" if job["isolation"] in _PRIVATE_TMP else folders["base"],
        "MPLCONFIGDIR": folders["mplconfig"], "IPYTHONDIR": folders["ipython"],
        "DLMED_DATA": job["data_dir"], "PYTHONDONTWRITEBYTECODE": "1",
        # The kernel's uid has no passwd entry: getpass.getuser() (MONAI calls it on import) reads these first.
        "USER": "student", "LOGNAME": "student",
    })
    return env


def supervise(job: dict, seeds=()) -> dict:
    """Run the job (see :func:`run_notebook`) and return the answer for the host.

    ``seeds``: :class:`dlmed.grader.zygote.KernelSeed` objects the first kernel and one restarted
    after a crash start from (warm starts).
    """
    from nbformat import from_dict

    from dlmed.grader.executor import GuardedExecute, SandboxKernelManager

    started = time.monotonic()
    die_with_parent(job.get("grader_pid") or None)  # never outlive the grader (with bubblewrap: bwrap's init)
    isolation = job["isolation"]
    if isolation in ("namespaces", "bubblewrap"):
        if isolation == "namespaces":
            folders = _setup_namespaces(job)
        else:  # bwrap built the file system view already
            os.mkdir("/tmp/.dlmed", mode=0o700)
            folders = _prepare_work_folder(job, {})
        # Traversable but not listable by the kernel's user, which must read its connection file.
        os.mkdir("/tmp/.dlmed-runtime", mode=0o711)
        os.environ["JUPYTER_RUNTIME_DIR"] = "/tmp/.dlmed-runtime"
        os.environ["HOME"] = "/tmp/.dlmed"  # the real home is covered and read-only
    else:
        folders = _prepare_work_folder(job, {})
        os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(folders["base"], "runtime")
    limits = job["limits"]
    km = SandboxKernelManager(kernel_name="python3")
    km.seeds = tuple(seeds)
    if isolation == "seatbelt":  # the profile allows Unix sockets in the sandbox's folder, no TCP at all
        km.transport, km.ip = "ipc", os.path.join(folders["base"], "k")
    km.launcher = [sys.executable, "-m", "dlmed.grader.sandbox", "--launch",
                   json.dumps({"isolation": isolation, "uid": job["uid"], "limits": limits, "parent": os.getpid()}), "--"]
    notebook = from_dict(job["notebook"])
    executor = GuardedExecute(notebook, timeout=limits["cell_timeout"], startup_timeout=120,
                              shutdown_kernel="immediate", **job.get("execute", {}))
    executor.setup(limits["notebook_timeout"], limits["max_output_bytes"], limits["memory_bytes"],
                   annotations=job.get("annotations", {}), guard_modules=job.get("guard_modules"))
    error = None
    # The kernel's own stderr (not the cells'): start-up failures show there.
    kernel_log_path = Path(folders["base"]) / (".dlmed/kernel-stderr.log" if isolation in _PRIVATE_TMP else "kernel-stderr.log")
    try:
        with open(kernel_log_path, "wb") as kernel_log:
            executor.run(km, cwd=folders["work"], env=kernel_env(job, folders),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=kernel_log)
    except Exception as failure:  # the kernel could not start, or nbclient gave up: report, do not crash
        tail = kernel_log_path.read_bytes()[-2000:].decode(errors="replace") if kernel_log_path.exists() else ""
        error = f"{type(failure).__name__}: {failure}" + (f"\nkernel stderr:\n{tail}" if tail.strip() else "")
    finally:
        for seed in km.seeds:  # not asked for (no crash, or the kernel did not get that far)
            seed.discard()
        if isolation in ("basic", "seatbelt"):
            shutil.rmtree(folders["base"], ignore_errors=True)
        elif isolation == "namespaces" and job["data_writable"]:
            _commit_data(Path("/tmp/.dlmed"))  # with bubblewrap the trusted run writes the real folder
    return {
        "notebook": notebook if error is None else None,
        "events": executor.events, "stop_reason": executor.stop_reason,
        "seconds": time.monotonic() - started, "peak_memory": executor.peak_memory,
        "isolation": isolation, "error": error, "hidden_seconds": executor.hidden_seconds,
        "startup_seconds": (executor.kernel_ready - started) if executor.kernel_ready else 0.0,
    }


# --- the kernel launcher -------------------------------------------------------------------


def launch(settings: dict, command: List[str], start=None):
    """Apply limits (and, with namespaces or bubblewrap, a PID namespace and a private /proc), then exec the kernel.

    ``start``: called with ``command`` in the kernel's process instead of exec'ing it (a warm
    start, :mod:`dlmed.grader.zygote`; it never returns).

    With namespaces the kernel also runs as an unprivileged user of its own; with bubblewrap
    it gets a user namespace of its own instead (same user, no privileges), which also makes
    ``RLIMIT_NPROC`` count only its own processes. The launcher stays as the kernel's parent:
    the kernel is PID 1 of a new PID namespace, so everything it starts dies with it; the
    launcher waits for it and exits the same way (the supervisor reads why a kernel died from that).
    """
    limits = settings["limits"]
    die_with_parent(settings.get("parent"))  # the supervisor died (the grader was killed): so do we
    isolation = settings["isolation"]
    if isolation == "bubblewrap":
        _enter_own_user_namespace()
    if isolation in ("namespaces", "bubblewrap"):
        libc_call("unshare", CLONE_NEWPID | CLONE_NEWNS)
        # The kernel cannot ask for its parent's pid (it is outside its PID namespace): it learns
        # that the launcher is gone from the end of this pipe instead.
        launcher_alive, launcher_holds = os.pipe()
        child = os.fork()
        if child:
            os.close(launcher_alive)
            _wait_and_mirror(child)
        os.close(launcher_holds)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        mount(None, "/", flags=MS_REC | MS_PRIVATE)
        # noatime like every other mount of the sandbox (a hidden test's process cannot mark
        # files by reading them); bubblewrap's nested user namespace may not set it on /proc.
        atime = MS_NOATIME if isolation == "namespaces" else 0
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | atime)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"],) * 2)
        if isolation == "namespaces":
            uid = settings["uid"]
            connection_file = command[command.index("-f") + 1]
            os.chown(connection_file, uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if select.select([launcher_alive], [], [], 0)[0]:
            os._exit(1)  # end of file: the launcher died before the signal was set
        os.close(launcher_alive)
    if isolation in ("basic", "seatbelt") and os.geteuid() != 0 and hasattr(resource, "RLIMIT_NPROC"):
        # Counts all of this user's processes: allow what runs already plus the limit.
        running = sum(1 for _ in Path("/proc").glob("[0-9]*")) if os.path.isdir("/proc") else 512
        resource.setrlimit(resource.RLIMIT_NPROC, (running + limits["max_processes"],) * 2)
    resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if start is not None:
        start(command)
    os.execvpe(command[0], command, os.environ)


def _wait_and_mirror(child: int):
    """In the launcher: wait for the kernel, then end as it ended (exit status or signal)."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # interrupts are for the kernel, in the same group
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: Optional[List[str]] = None, seeds=()) -> int:
    """Entry point of ``python -m dlmed.grader.sandbox`` (supervisor, ``--launch`` or ``--probe ISOLATION``).

    A supervisor forked by the zygote calls it with its kernel ``seeds`` (see :func:`supervise`).
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:
        return _probe(argv[1], argv[2:])
    if argv[:1] == ["--launch"]:
        launch(json.loads(argv[1]), argv[3:])
        return 1  # exec failed
    skip_uri_grammar()
    job = json.load(sys.stdin.buffer)  # bytes: whatever locale this Python started with
    answer = supervise(job, seeds)
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
