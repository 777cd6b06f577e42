"""The integrity guard: runs inside a student's kernel while the class grader executes it.

A test cell passes when it raises nothing, so a submission can try to make failing tests
pass instead of fixing its code: replace ``torch.allclose`` or a ``check_*`` helper by a
function that always succeeds, shadow a builtin, install an IPython input transformer that
blanks the next cell, set a trace function that jumps over asserts, or print hidden tests
it finds in the kernel's history. The grader (:mod:`dlmed.grader.executor`) therefore calls this
module around every graded test cell, through ``user_expressions`` of an empty execute
request (which no input transformer sees):

- :func:`install` (before the first cell): snapshot the trusted state: the namespaces of
  the modules tests rely on (``torch``, ``numpy``, ``dlmed.checks``, ``sklearn.metrics``,
  ``builtins``, ...) with the code of their Python functions, a few classes
  (``torch.Tensor``, ``torch.nn.Module``), and the IPython shell's hooks.
- :func:`before_trusted` / :func:`record_trusted` (around each locked, instructor-written
  cell such as the set-up cell): undo tampering before it, then remember the helpers it
  bound (``torch``, ``check_close``, ...) and take the snapshot again.
- :func:`enter` (before a test cell): put everything back as it was, bind the trusted
  values of the names the test reads (the student's own bindings come back afterwards), and
  hide student variables that shadow builtins the test uses. Reports what it restored.
- :func:`run_hidden` (after the visible part of a test cell passed): fork a sealed copy of
  the kernel that receives the hidden part from the grader, runs it and sends back the
  verdict (see below). The kernel itself never holds hidden test code.
- :func:`leave` (after a test cell): report anything the test's run changed (a student
  function that patches a helper while it is being tested), put it back, and return the
  student's bindings.

:func:`enter` and :func:`leave` also list the *student threads* alive (threads running code
that is not an installed library's: a notebook cell, ``exec``'d code): a test during which
one was alive cannot count, because such a thread can change the values the test compares.

**Hidden tests run in a sealed fork.** A thread the submission started keeps running while
the kernel runs a test; had the kernel run the hidden tests, such a thread could copy them
(from ``linecache``, the main thread's stack) and print them later, encoded, into the
student's own feedback. So the grader runs only a test cell's visible part in the kernel.
For the hidden part :func:`run_hidden` forks: the copy has no other threads (``fork`` copies
only the calling one), seals itself (:mod:`dlmed.grader.seal`: no output, every file descriptor
but one replaced by ``/dev/null``, shared memory made private, a seccomp filter against
every way of leaving data behind), connects to the grader's supervisor, which stops every
other process of the submission, sends it the hidden code and reads the verdict, then kills
it. Nothing the hidden code or the student code it calls does can reach the kernel.

Changes that libraries make themselves (a lazy import replacing a stub, ``%matplotlib
inline`` registering a hook) are accepted: only replacements by code that is not an
installed library's count. Every answer carries a nonce from the grader: a kernel too tampered with to run the guard
honestly is detected by a missing or wrong answer, and the grader stops trusting it. This is
defence in depth against the cheats students actually try, not a proof against code that
rewrites this module itself; see the README's section on class grading.

Nothing happens on import; the functions are called by the grader only.
"""

import builtins
import faulthandler
import importlib
import json
import os
import signal
import socket
import sys
import threading
import types
import warnings

_state = None

# Taken when the grader imports this module, before any student code runs: a submission that
# rebinds sys._current_frames, threading.enumerate or os.fork cannot hide its threads from,
# or fake the fork of, the guard.
_current_frames, _threads, _fork = sys._current_frames, threading.enumerate, os.fork


def _functions_of(namespace):
    """{name: (function, code, defaults, kwdefaults)} for the Python functions in ``namespace``."""
    return {
        name: (value, value.__code__, value.__defaults__, value.__kwdefaults__)
        for name, value in namespace.items()
        if isinstance(value, types.FunctionType)
    }


def _shadowing_overrides(obj):
    """Instance attributes of ``obj`` that replace a method of its class."""
    cls_attrs = dir(type(obj))
    return {
        name: value
        for name, value in vars(obj).items()
        if name in cls_attrs and callable(value) and not name.startswith("__")
    }


# Methods that one library adds to another's class the first time it is used, as
# {(class path, name): package that adds it}: accepted when the value comes from that package.
# transformers 5 adds torch.nn.Module.smart_apply when it builds its first model (Lab 6).
LIBRARY_ADDITIONS = {("torch.nn.Module", "smart_apply"): "transformers"}


def _from_library(value, prefixes, package=None) -> bool:
    """True for a function, class or module defined in an installed library (not in the notebook).

    Libraries wrap or add some of their own functions as they are used (lazy imports,
    decorators); those changes are accepted. With ``package`` (the top-level package whose
    namespace changed) the new value must also come from that package: ``torch`` may
    replace its own functions, a student may not put ``logging.debug`` in place of a check.
    Anything else (a lambda or class from a cell, a builtin such as ``print`` or ``bool``, a
    mock object) counts as tampering.
    """
    value = getattr(value, "__func__", value)
    if isinstance(value, types.CodeType):
        path, module_name = value.co_filename, None
    elif hasattr(value, "__code__"):
        path, module_name = value.__code__.co_filename, getattr(value, "__module__", None)
    elif isinstance(value, (type, types.ModuleType)):
        module = value if isinstance(value, types.ModuleType) else sys.modules.get(value.__module__)
        path, module_name = getattr(module, "__file__", None), getattr(module, "__name__", None)
    else:
        return False
    if not path or not path.startswith(prefixes):
        return False
    return package is None or (module_name or "").split(".")[0] == package


class _Snapshot:
    """Trusted state taken before any student code ran, and after each instructor cell."""

    def __init__(self, shell, module_names, class_paths, library_prefixes):
        self.shell = shell
        self.prefixes = tuple(library_prefixes)
        self.modules = {}
        for name in module_names:
            try:
                importlib.import_module(name)
            except ImportError:
                continue  # a module this lab's environment lacks cannot be tampered with either
        self.module_names = [name for name in module_names if name in sys.modules]
        self.class_paths = class_paths
        self.trusted_names = {}
        self.swapped = {}
        self.watched = {}
        self.take()

    def take(self):
        """(Re)take the snapshot of modules, classes and the shell's hooks."""
        shell = self.shell
        self.modules = {name: (sys.modules[name], dict(vars(sys.modules[name])), _functions_of(vars(sys.modules[name])))
                        for name in self.module_names}
        self.classes = {}
        for path in self.class_paths:
            module_name, _, class_name = path.rpartition(".")
            cls = getattr(sys.modules.get(module_name), class_name, None)
            if isinstance(cls, type):
                self.classes[path] = (cls, dict(vars(cls)), _functions_of(vars(cls)))
        self.hook_lists = {
            name: list(getattr(shell, name))
            for name in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")
            if hasattr(shell, name)
        }
        self.events = {event: list(callbacks) for event, callbacks in shell.events.callbacks.items()}
        self.sys_hooks = {name: getattr(sys, name) for name in ("displayhook", "excepthook")}
        self.sigint = signal.getsignal(signal.SIGINT)
        kernel = getattr(shell, "kernel", None)
        self.objects = [obj for obj in (shell, kernel, getattr(kernel, "session", None),
                                        getattr(shell, "displayhook", None), getattr(shell, "display_pub", None))
                        if obj is not None]
        self.overrides = [dict(_shadowing_overrides(obj)) for obj in self.objects]
        # Parts of the running kernel that decide what a cell does and what its reply says.
        self.parts = {
            f"{type(owner).__name__}.{name}": (owner, name, getattr(owner, name))
            for owner, names in ((shell, ("compile", "displayhook", "display_pub", "history_manager")),
                                 (kernel, ("session", "shell")))
            if owner is not None
            for name in names
            if hasattr(owner, name)
        }
        self.handler_tables = [
            (table, dict(table))
            for table in (getattr(kernel, "shell_handlers", None), getattr(kernel, "control_handlers", None))
            if isinstance(table, dict)
        ]

    def _library(self, value, package=None):
        return _from_library(value, self.prefixes, package)

    # -- finding and undoing changes ------------------------------------------------------

    def changes(self, restore):
        """Describe every change since the snapshot that a library did not make; undo them if ``restore``."""
        found = []
        for name, (module, namespace, functions) in self.modules.items():
            if sys.modules.get(name) is not module:
                found.append(f"sys.modules[{name!r}] was replaced")
                if restore:
                    sys.modules[name] = module
            found += self._namespace_changes(name, module, namespace, functions, restore, remove_added=False)
        for path, (cls, namespace, functions) in self.classes.items():
            found += self._namespace_changes(path, cls, namespace, functions, restore, remove_added=True)
        shell = self.shell
        for name, original in self.hook_lists.items():
            found += self._list_changes(f"IPython {name}", getattr(shell, name), original, restore)
        for event, original in self.events.items():
            found += self._list_changes(f"IPython '{event}' callbacks", shell.events.callbacks.get(event, []),
                                        original, restore)
        for label, (owner, name, original) in self.parts.items():
            if getattr(owner, name) is not original:
                found.append(f"{label} was replaced")
                if restore:
                    setattr(owner, name, original)
        for table, original in self.handler_tables:
            if table != original:
                found.append("the kernel's message handlers were changed")
                if restore:
                    table.clear()
                    table.update(original)
        if getattr(shell, "custom_exceptions", ()):
            found.append("a custom exception handler was installed (set_custom_exc)")
            if restore:
                shell.custom_exceptions = ()
        for name, original in self.sys_hooks.items():
            if getattr(sys, name) is not original and not self._library(getattr(sys, name)):
                found.append(f"sys.{name} was replaced")
                if restore:
                    setattr(sys, name, original)
        if sys.gettrace() is not None or sys.getprofile() is not None:
            found.append("a trace or profile function was set (sys.settrace / sys.setprofile)")
            if restore:
                sys.settrace(None)
                sys.setprofile(None)
        handler = signal.getsignal(signal.SIGINT)
        if handler is not self.sigint and not self._library(handler):
            found.append("the interrupt (SIGINT) handler was replaced")
            if restore:
                signal.signal(signal.SIGINT, self.sigint)
        for obj, original in zip(self.objects, self.overrides):
            for name, value in _shadowing_overrides(obj).items():
                if original.get(name) is not value:
                    found.append(f"{type(obj).__name__}.{name} was overridden on the running kernel")
                    if restore:
                        if name in original:
                            setattr(obj, name, original[name])
                        else:
                            delattr(obj, name)
        return found

    def _list_changes(self, label, current, original, restore):
        added = [item for item in current if item not in original]
        removed = [item for item in original if item not in current]
        if not removed and all(self._library(item) for item in added):
            original[:] = list(current)  # a library registered a hook of its own
            return []
        if restore:
            current[:] = original + [item for item in added if self._library(item)]
        return [f"{label} were changed"]

    def _namespace_changes(self, label, owner, namespace, functions, restore, remove_added):
        found = []
        current = vars(owner)
        package = label.split(".")[0]
        for name, value in list(namespace.items()):
            if name not in current:
                found.append(f"{label}.{name} was deleted")
            elif current[name] is not value:
                if self._library(current[name], package):
                    namespace[name] = current[name]  # e.g. a lazy import replaced a stub
                    if isinstance(current[name], types.FunctionType):
                        functions[name] = _functions_of({name: current[name]})[name]
                    continue
                found.append(f"{label}.{name} was replaced")
            else:
                continue
            if restore:
                setattr(owner, name, value)
        if remove_added:
            for name in [n for n in current if n not in namespace]:
                adder = LIBRARY_ADDITIONS.get((label, name))
                if self._library(current[name], package) or (adder and self._library(current[name], adder)):
                    namespace[name] = current[name]
                    continue
                found.append(f"{label}.{name} was added")
                if restore:
                    delattr(owner, name)
        for name, (function, code, defaults, kwdefaults) in functions.items():
            if (function.__code__, function.__defaults__, function.__kwdefaults__) != (code, defaults, kwdefaults):
                if _from_library(function.__code__, self.prefixes) and (function.__module__ or "").split(".")[0] == package:
                    functions[name] = _functions_of({name: function})[name]
                    continue
                found.append(f"the code of {label}.{name} was changed")
                if restore:
                    function.__code__, function.__defaults__, function.__kwdefaults__ = code, defaults, kwdefaults
        return found


def _answer(nonce, **fields):
    return json.dumps({"nonce": nonce, **fields})


def install(nonce, module_names, class_paths):
    """Take the trusted snapshot (call before any student code runs); returns a JSON answer."""
    global _state
    from IPython import get_ipython

    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    _state = _Snapshot(get_ipython(), module_names, class_paths, [p.rstrip(os.sep) + os.sep for p in prefixes])
    if sys.platform.startswith("linux"):
        from dlmed.grader import seal

        seal.load_library()  # imported and loaded here once, not in every fork that runs hidden tests
    return _answer(nonce, modules=sorted(_state.modules))


def before_trusted(nonce):
    """Before an instructor cell (such as the set-up cell): undo tampering so it runs as written."""
    return _answer(nonce, restored=_state.changes(restore=True))


def ping(nonce):
    """Answer at once: the kernel is idle and still runs the grader's requests."""
    return _answer(nonce)


def record_trusted(nonce, names):
    """After an instructor cell: remember the values of ``names`` it bound, and take the snapshot again.

    What the instructor's cell changed (``%matplotlib inline`` adds a hook, imports add
    modules) becomes part of the trusted state.
    """
    _state.take()
    user_ns = _state.shell.user_ns
    for name in names:
        value = user_ns.get(name)
        # Only modules and callables (helpers, classes): data such as a config may be rebound on purpose.
        if isinstance(value, types.ModuleType) or callable(value):
            _state.trusted_names[name] = value
    return _answer(nonce)


_MISSING = object()


def enter(nonce, names, binds=()):
    """Before a test cell: restore the trusted state and bind trusted values of ``names``.

    ``binds`` are the names the test cell binds itself; the others the test reads must
    still hold their trusted values when it ends (see :func:`leave`).

    Returns a JSON answer: ``restored`` lists tampering that was undone, ``shadowed`` the
    student's names that were set aside while the test runs (often innocent: a variable
    called ``data`` or ``train``), ``threads`` the student threads alive (see
    :func:`student_threads`).
    """
    restored = _state.changes(restore=True)
    shadowed = []
    user_ns = _state.shell.user_ns
    swapped = {}
    for name in names:
        current = user_ns.get(name, _MISSING)
        if name in _state.trusted_names:
            trusted = _state.trusted_names[name]
            if current is not trusted:
                swapped[name] = current
                user_ns[name] = trusted
                shadowed.append(f"{name!r} no longer held what the set-up cell bound to it")
        elif current is not _MISSING and hasattr(builtins, name) and current is not getattr(builtins, name):
            swapped[name] = current
            del user_ns[name]
            shadowed.append(f"{name!r} shadowed the builtin of that name")
    _state.swapped = swapped
    _state.watched = {name: user_ns.get(name, _MISSING) for name in names
                      if name not in binds and (name in _state.trusted_names or name in swapped)}
    return _answer(nonce, restored=restored, shadowed=shadowed, threads=student_threads())


def _changes_during_test(restore):
    """What changed since :func:`enter` (patched helpers, rebound names the test reads); undone if ``restore``."""
    changed = _state.changes(restore=restore)
    user_ns = _state.shell.user_ns
    for name, value in _state.watched.items():
        if user_ns.get(name, _MISSING) is not value:
            changed.append(f"the name {name!r} was rebound while the test ran")
            if not restore:
                continue
            if value is _MISSING:
                user_ns.pop(name, None)
            else:
                user_ns[name] = value
    return changed


def leave(nonce):
    """After a test cell: report changes made during it and undo them; give back the student's bindings.

    Returns a JSON answer: ``changed`` lists what the test's run changed, ``threads`` the
    student threads alive now.
    """
    changed = getattr(_state, "changed_before_hidden", []) + _changes_during_test(restore=True)
    _state.changed_before_hidden = []
    user_ns = _state.shell.user_ns
    for name, student_value in _state.swapped.items():
        if student_value is _MISSING:
            user_ns.pop(name, None)
        else:
            user_ns[name] = student_value
    _state.swapped, _state.watched = {}, {}
    previous = getattr(_state, "sigchld", None)
    if previous is not None:  # run_hidden ignored SIGCHLD so that its sealed copy left no zombie
        signal.signal(signal.SIGCHLD, previous)
        _state.sigchld = None
    return _answer(nonce, changed=changed, threads=student_threads())


def _is_student_code(code) -> bool:
    return not _from_library(code, _state.prefixes)


def student_threads():
    """Descriptions of the threads, other than this one, that run or will run code the submission wrote.

    A thread counts when any frame on its stack comes from code that is not an installed
    library's (a notebook cell, ``exec``'d code), or when its target is such code. Threads
    that libraries start themselves (ipykernel's, tqdm's monitor, matplotlib's, PyTorch's)
    run library code only and are allowed.
    """
    found = []
    objects = {thread.ident: thread for thread in _threads()}
    for ident, frame in _current_frames().items():
        if ident == threading.get_ident():
            continue
        thread = objects.get(ident)
        codes = []
        while frame is not None:
            codes.append(frame.f_code)
            frame = frame.f_back
        for attribute in ("_target", "function"):  # Thread(target=...), threading.Timer
            target = getattr(getattr(thread, attribute, None), "__code__", None)
            if target is not None:
                codes.append(target)
        run = getattr(getattr(type(thread), "run", None), "__code__", None)
        if run is not None:
            codes.append(run)
        student = [code for code in codes if _is_student_code(code)]
        if student:
            name = thread.name if thread is not None else f"thread {ident}"
            found.append(f"{name} running {student[0].co_name}() from {student[0].co_filename}")
    return found


# --- hidden tests in a sealed fork ---------------------------------------------------------


def run_hidden(nonce, channel_path):
    """Fork a sealed copy of the kernel to run a test cell's hidden part; answer with its pid at once.

    The copy (see :func:`_sealed_child`) connects to the grader's supervisor at
    ``channel_path``, which sends it the hidden code and reads its verdict. Here, in the
    kernel, nothing of the hidden test ever arrives. SIGCHLD is ignored until :func:`leave`,
    so the copy, killed by the supervisor, leaves no zombie whose state student code could read.
    Returns a JSON answer with ``child`` (its pid) or ``error`` and ``errno`` when fork failed.
    """
    # The visible part ran student code: undo what it changed (os.dup2, socket, ctypes, this
    # module's helpers in dlmed.grader.seal, ...) so that the fork seals itself with trusted code;
    # leave() reports it, and the test does not count.
    _state.changed_before_hidden = getattr(_state, "changed_before_hidden", []) + _state.changes(restore=True)
    if getattr(_state, "sigchld", None) is None:  # not yet changed by an earlier try for this test
        _state.sigchld = signal.getsignal(signal.SIGCHLD)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "fork() with threads": the copy needs none
            pid = _fork()
    except OSError as error:
        return _answer(nonce, child=None, error=f"{type(error).__name__}: {error}", errno=error.errno)
    if pid == 0:
        _sealed_child(channel_path)  # never returns
    return _answer(nonce, child=pid)


def reap(nonce):
    """Collect the exit status of every ended child of the kernel (after the grader killed them); answer how many."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped += 1
    return _answer(nonce, reaped=reaped)


class _Channel:
    """The result channel as a file for :mod:`faulthandler` (which only needs ``fileno``)."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        """The socket's file descriptor."""
        return self.fd


def _read_line(fd):
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _sealed_child(channel_path):
    """In the forked copy: seal, receive the hidden code, run it, send the verdict, wait to be killed."""
    try:
        from dlmed.grader import seal

        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel.connect(channel_path)
        fd = channel.detach()
        gaps = seal.seal(fd)
        if len(_current_frames()) > 1:  # a thread started by a fork handler (os.register_at_fork)
            verdict = {"passed": False, "ename": "GradingIntegrityError", "gaps": gaps,
                       "evalue": "a thread was running in the sealed copy of the kernel before the hidden tests"}
            _write_all(fd, json.dumps(verdict).encode() + b"\n")
        else:
            request = json.loads(_read_line(fd))
            # Where it is stuck, should it run out of time (the instructor sees it; a student never does).
            faulthandler.dump_traceback_later(request["seconds"], file=_Channel(fd))
            verdict = _run_sealed(request["code"], request["reads"], request["binds"])
            faulthandler.cancel_dump_traceback_later()
            _write_all(fd, json.dumps(dict(verdict, gaps=gaps)).encode() + b"\n")
        os.read(fd, 1)  # until the supervisor kills this process
    except BaseException:  # noqa: B036 -- whatever happened, this copy must never return into the kernel
        pass
    os._exit(0)


def _run_sealed(code, reads, binds):
    """Run the hidden ``code`` at the kernel's top level, with the guard's protections; return the verdict."""
    enter("", reads, binds)
    passed, ename, evalue = True, "", ""
    try:
        exec(compile(code, "<hidden tests>", "exec"), _state.shell.user_ns)  # noqa: S102 -- the instructor's test
    except BaseException as error:  # noqa: B036 -- a test fails on any exception, SystemExit included
        passed, ename = False, type(error).__name__
        try:
            evalue = str(error)
        except BaseException as broken:  # noqa: B036 -- a student exception whose __str__ raises
            evalue = f"(the error's message could not be read: {type(broken).__name__})"
    changed = _changes_during_test(restore=False)
    if changed and passed:
        passed, ename, evalue = False, "GradingIntegrityError", "changed while the hidden tests ran: " + "; ".join(changed)
    return {"passed": passed, "ename": ename, "evalue": evalue}
