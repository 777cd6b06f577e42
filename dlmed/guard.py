"""The integrity guard: runs inside a student's kernel while the class grader executes it.

A test cell passes when it raises nothing, so a submission can try to make failing tests
pass instead of fixing its code: replace ``torch.allclose`` or a ``check_*`` helper by a
function that always succeeds, shadow a builtin, install an IPython input transformer that
blanks the next cell, set a trace function that jumps over asserts, or print hidden tests
it finds in the kernel's history. The grader (:mod:`dlmed.executor`) therefore calls this
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
- :func:`leave` (after a test cell): report anything the test's run changed (a student
  function that patches a helper while it is being tested), put it back, return the
  student's bindings, and remove the hidden test code from the kernel's history,
  ``linecache`` and last traceback, and the names only the hidden part bound.

Changes that libraries make themselves (a lazy import replacing a stub, ``%matplotlib
inline`` registering a hook) are accepted: only replacements by code that is not an
installed library's count. Every answer carries a nonce from the grader: a kernel too tampered with to run the guard
honestly is detected by a missing or wrong answer, and the grader stops trusting it. This is
defence in depth against the cheats students actually try, not a proof against code that
rewrites this module itself; see the README's section on class grading.

Nothing happens on import; the functions are called by the grader only.
"""

import builtins
import importlib
import json
import linecache
import signal
import sys
import types

HIDDEN_MARKER = "BEGIN HIDDEN TESTS"

_state = None


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
                if self._library(current[name], package):
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
    import os

    from IPython import get_ipython

    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    _state = _Snapshot(get_ipython(), module_names, class_paths, [p.rstrip(os.sep) + os.sep for p in prefixes])
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
    called ``data`` or ``train``).
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
    return _answer(nonce, restored=restored, shadowed=shadowed)


def leave(nonce, hidden_names):
    """After a test cell: report changes made during it, undo them, and scrub hidden test code.

    ``hidden_names`` are names bound only by the cell's hidden tests; they are deleted.
    Returns a JSON answer whose ``changed`` lists what the test's run changed.
    """
    changed = _state.changes(restore=True)
    user_ns = _state.shell.user_ns
    for name, value in _state.watched.items():
        if user_ns.get(name, _MISSING) is not value:
            changed.append(f"the name {name!r} was rebound while the test ran")
            if value is _MISSING:
                user_ns.pop(name, None)
            else:
                user_ns[name] = value
    for name, student_value in _state.swapped.items():
        if student_value is _MISSING:
            user_ns.pop(name, None)
        else:
            user_ns[name] = student_value
    _state.swapped, _state.watched = {}, {}
    for name in hidden_names:
        user_ns.pop(name, None)
    _scrub_hidden_code(_state.shell)
    return _answer(nonce, changed=changed)


def _scrub_hidden_code(shell):
    """Remove test-cell source with hidden tests from the places later student code could read it."""
    user_ns = shell.user_ns
    history = shell.history_manager
    for entries in (history.input_hist_parsed, history.input_hist_raw):
        for index, source in enumerate(entries):
            if HIDDEN_MARKER in source:
                entries[index] = ""
    for name in [n for n, v in user_ns.items() if n.startswith("_i") and isinstance(v, str) and HIDDEN_MARKER in v]:
        user_ns[name] = ""
    for filename in [f for f, entry in linecache.cache.items()
                     if len(entry) >= 3 and HIDDEN_MARKER in "".join(entry[2] or [])]:
        del linecache.cache[filename]
    if history.db is not None and hasattr(history.db, "execute"):
        with history.db:
            history.db.execute("UPDATE history SET source = '', source_raw = '' WHERE source LIKE ?",
                               (f"%{HIDDEN_MARKER}%",))
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            setattr(sys, name, None)
