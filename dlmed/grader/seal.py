"""Seal a forked copy of a student's kernel so that nothing it does can reach anyone else.

The class grader runs the hidden part of each test cell in a fork of the kernel
(:func:`dlmed.grader.guard.run_hidden`). The fork holds the hidden test code; student code runs in
it (the functions under test). :func:`seal` makes sure that nothing this process does can
leave a trace that the kernel, its other processes or a later run could read, except on one
connected socket back to the grader (the *result channel*):

- it cannot be traced or read by another process (``PR_SET_DUMPABLE`` 0);
- ``sys.stdout``/``sys.stderr`` write into memory that is thrown away;
- every open file descriptor except the result channel is replaced by ``/dev/null``
  (inherited pipes, sockets, files and ZMQ sockets lead nowhere);
- every shared memory mapping becomes a private copy (``mmap`` shared memory with the
  kernel carries nothing back);
- PyTorch runs on one thread (its OpenMP pool does not survive ``fork``);
- a seccomp filter (libseccomp, through ctypes) denies every system call that could leave
  data behind: new sockets and connections, ``sendto``/``sendmsg``, opening files for
  writing or creating them, renaming, deleting, linking, changing permissions, times,
  sizes or extended attributes of files, signals to other processes, new processes
  (threads are allowed), executing programs, tracing, SysV and POSIX IPC, shared writable
  mappings, io_uring, bpf, perf events, userfaultfd, namespaces and mounts, key rings,
  changing another process's priority, limits or CPU affinity, renaming the process, and
  exiting with a status other than 0. Reading files stays allowed (imports, data).

Linux only; where libseccomp or seccomp is missing (macOS, some containers) the filter is
left out and :func:`seal` says so in what it returns: the grader records it and the README
says what remains open then. Nothing happens on import.
"""

import ctypes
import errno
import io
import os
import sys
from typing import List

# prctl options (linux/prctl.h)
PR_SET_DUMPABLE, PR_SET_NAME, PR_SET_MM, PR_SET_NO_NEW_PRIVS = 4, 15, 35, 38

# libseccomp (seccomp.h)
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE, SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 1, 4, 7

# mmap and open flags (Linux, x86-64 and arm64 alike)
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
WRITE_OPEN_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)
CLONE_THREAD = 0x00010000

#: Denied outright (EPERM).
DENIED = [
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg", "sendmmsg",
    "creat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir",
    "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "utimensat", "futimesat", "truncate", "ftruncate", "fallocate",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "name_to_handle_at", "open_by_handle_at",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "fork", "vfork", "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "move_pages", "migrate_pages",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semtimedop", "semctl",
    "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr", "remap_file_pages",
    "bpf", "perf_event_open", "userfaultfd", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "fsopen", "fsmount", "move_mount", "open_tree", "keyctl", "add_key", "request_key", "personality",
    "setpriority", "ioprio_set", "fanotify_init",
]
#: Denied with ENOSYS, so that the C library falls back to a call the filter can inspect.
UNAVAILABLE = ["clone3", "openat2", "io_uring_setup", "io_uring_enter", "io_uring_register"]


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)  # SCMP_ACT_ERRNO


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value) -> bool:
    libc = _libc()
    return libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


def redirect_output():
    """Point ``sys.stdout`` and ``sys.stderr`` at in-memory buffers nobody reads."""
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()


def close_other_files(keep: int):
    """Replace every open file descriptor except ``keep`` by ``/dev/null``."""
    null = os.open(os.devnull, os.O_RDWR)
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(folder):
        number = int(name)
        if number in (keep, null):
            continue
        try:
            os.dup2(null, number)
        except OSError:
            pass  # the descriptor listdir used, closed in the meantime
    os.dup2(null, 0)


def privatize_shared_memory() -> List[str]:
    """Turn every shared mapping of this process into a private copy at the same address.

    Returns the mappings that could not be copied (device memory): they are replaced by
    zeros instead. Raises OSError when a mapping cannot be replaced at all.
    """
    libc = _libc()
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    zeroed = []
    with open("/proc/self/maps") as maps:
        lines = maps.read().splitlines()
    # "start-end perms ...": the fourth letter of perms says shared ("s") or private ("p"). A
    # kernel with torch has about 1,800 mappings and one shared one: only that one is split.
    shared = [line.split(maxsplit=5) for line in lines if line[line.index(" ") + 4] == "s"]
    for fields in shared:
        start, end = (int(part, 16) for part in fields[0].split("-"))
        perms, path = fields[1], (fields[5].strip() if len(fields) > 5 else "")
        prot = (PROT_READ if "r" in perms else 0) | (PROT_WRITE if "w" in perms else 0) | (PROT_EXEC if "x" in perms else 0)
        size = end - start
        device = path.startswith("/dev/") and not path.startswith(("/dev/shm/", "/dev/zero"))
        contents = ctypes.string_at(start, size) if "r" in perms and not device else None
        if contents is None:
            zeroed.append(path or fields[0])
        address = libc.mmap(start, size, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if address != start:
            raise OSError(ctypes.get_errno(), f"could not replace the shared mapping {fields[0]} {path}")
        if contents is not None:
            ctypes.memmove(start, contents, size)
        libc.mprotect(start, size, prot)
    return zeroed


_library = []  # libseccomp, once loaded (None: not available)


def load_library():
    """Load libseccomp (once per process; the kernel does it before forking, so each fork starts quicker)."""
    if not _library:
        _library.append(_seccomp_library())
    return _library[0]


def _seccomp_library():
    library = None
    for name in ("libseccomp.so.2", "libseccomp.so"):  # not ctypes.util.find_library: it runs ldconfig
        try:
            library = ctypes.CDLL(name, use_errno=True)
            break
        except OSError:
            continue
    if library is None:
        return None
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgCmp)]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_load.argtypes = [ctypes.c_void_p]
    library.seccomp_release.argtypes = [ctypes.c_void_p]
    return library


def install_filter(own_pid: int) -> str:
    """Install the seccomp filter described in the module docstring; return "" or why it could not be installed."""
    if not sys.platform.startswith("linux"):
        return f"seccomp does not exist on {sys.platform}"
    library = load_library()
    if library is None:
        return "libseccomp (libseccomp.so.2) is not installed"
    if not _prctl(PR_SET_NO_NEW_PRIVS, 1):
        return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    context = library.seccomp_init(SCMP_ACT_ALLOW)
    if not context:
        return "seccomp_init failed"
    deny, unavailable = _errno_action(errno.EPERM), _errno_action(errno.ENOSYS)
    problems = []

    def rule(action, name, *comparisons):
        number = library.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call of this architecture or kernel (e.g. "open" on arm64)
        array = (_ArgCmp * max(1, len(comparisons)))(*[_ArgCmp(*c) for c in comparisons])
        result = library.seccomp_rule_add_array(context, action, number, len(comparisons), array)
        if result < 0:
            problems.append(f"{name}: {os.strerror(-result)}")

    try:
        for name in DENIED:
            rule(deny, name)
        for name in UNAVAILABLE:
            rule(unavailable, name)
        for name, flags_arg in (("open", 1), ("openat", 2)):
            for flag in WRITE_OPEN_FLAGS:
                rule(deny, name, (flags_arg, SCMP_CMP_MASKED_EQ, flag, flag))
        rule(deny, "clone", (0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0))  # a new process, not a thread
        rule(deny, "mmap", (3, SCMP_CMP_MASKED_EQ, MAP_SHARED, MAP_SHARED), (2, SCMP_CMP_MASKED_EQ, PROT_WRITE, PROT_WRITE))
        for name in ("kill", "tkill", "rt_sigqueueinfo", "tgkill", "rt_tgsigqueueinfo"):
            rule(deny, name, (0, SCMP_CMP_NE, own_pid, 0))  # signals to itself (raise, abort) stay allowed
        for name in ("prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr"):
            rule(deny, name, (0, SCMP_CMP_NE, 0, 0))  # only for itself (pid 0)
        for option in (PR_SET_NAME, PR_SET_MM):
            rule(deny, "prctl", (0, SCMP_CMP_EQ, option, 0))
        for name in ("exit", "exit_group"):
            rule(deny, name, (0, SCMP_CMP_NE, 0, 0))  # an exit status could carry data
        if problems:
            return "seccomp rules could not be added: " + "; ".join(problems)
        result = library.seccomp_load(context)
        if result < 0:
            return f"seccomp_load failed: {os.strerror(-result)}"
        return ""
    finally:
        library.seccomp_release(context)


def seal(keep_fd: int) -> List[str]:
    """Seal this (freshly forked) process; only ``keep_fd`` still leads somewhere.

    Returns what could not be done, one phrase each (empty when fully sealed). Raises
    OSError when sealing failed half-way: the caller must then not run anything secret.
    """
    gaps = []
    if sys.platform.startswith("linux") and not _prctl(PR_SET_DUMPABLE, 0):
        gaps.append("other processes may still trace this one (PR_SET_DUMPABLE failed)")
    redirect_output()
    close_other_files(keep_fd)
    if sys.platform.startswith("linux"):
        zeroed = privatize_shared_memory()
        if zeroed:
            gaps.append("device mappings replaced by zeros: " + ", ".join(zeroed[:3]))
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(1)  # the OpenMP threads of the parent do not exist here
    problem = install_filter(os.getpid())
    if problem:
        gaps.append("no system-call filter: " + problem)
    return gaps
