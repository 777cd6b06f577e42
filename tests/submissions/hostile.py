"""Hostile and broken submissions of Lab 1, each with the outcome the class grader must give it.

Every case starts from a correct submission (``lab1.ALTERNATIVE``) and breaks it one way:
runaway code (endless loops, memory and fork bombs, exits, kernels that die early, late or
twice, huge output, a notebook that runs too long), cheating (fake output, forged results,
patched libraries and test helpers, a shadowed builtin, an input transformer, a trace function, edited, deleted,
duplicated and renamed test cells, changed points, a faked set-up cell), broken files
(corrupt JSON, wrong file name, wrong kernel) and attacks on the grader (writing outside the
submission, reading the course's files and the gradebook, the network, the grader's own
processes, digging hidden tests out of the kernel's history, a hidden-test marker in an
answer, threads that read what the kernel runs or overwrite a test's
variables while it runs) and attacks on the instructor's browser (script, ``<img onerror>``, SVG and
JavaScript outputs, markup in a written answer and in a file name).
``tests/grader/test_class_grading.py`` grades them together with honest submissions and checks each
outcome: zero, or exactly the points its honest cells earn, and never an effect on another
student; ``tests/grader/test_unprivileged_grading.py`` grades the attacks again as an ordinary user
(the ``bubblewrap`` isolation).

The limits these expectations assume are :data:`LIMITS` (``dlmed grade`` options).
"""

import copy
import dataclasses
from typing import Callable, Dict, Tuple

import nbformat

from tests.submissions.lab1 import ALTERNATIVE, FULL_MARKS, Submission, build_notebook, with_answers

#: ``dlmed grade`` options the corpus is graded with: short, so that CI stays quick.
LIMITS = ["--cell-timeout", "20", "--notebook-timeout", "60", "--memory", "2", "--max-processes", "128",
          "--max-file-size", "64"]

TEST = {number: name for number, name in enumerate(FULL_MARKS, start=1)}  # 1 -> test_ex1_...
LAB_NOTEBOOK = "lab1_mednist_from_scratch.ipynb"


@dataclasses.dataclass
class Case:
    """One hostile submission and the outcome it must get."""

    description: str
    build: Callable  # (release notebook path, context) -> notebook or raw text
    zero: Tuple[int, ...] = ()  # test numbers (1-10) that must score 0; the others full marks
    either: Tuple[int, ...] = ()  # tests whose score depends on timing: 0 or full
    status: str = "graded"
    file_name: str = LAB_NOTEBOOK
    notes: Tuple[str, ...] = ()  # phrases expected in the grader's notes
    events: Tuple[str, ...] = ()  # event kinds expected
    reason: str = ""  # phrase expected in the stop or not-gradable reason
    failures: Dict[int, str] = dataclasses.field(default_factory=dict)  # test number -> phrase expected in its failure

    def expected_scores(self) -> Dict[str, float]:
        """{test grade_id: points} this case must get (tests in ``either`` are left out)."""
        if self.status == "not gradable":
            return {name: 0.0 for name in FULL_MARKS}
        return {name: (0.0 if number in self.zero else float(FULL_MARKS[name]))
                for number, name in TEST.items() if number not in self.either}


def answers(**changes):
    """A build function: the correct submission with some answer cells replaced."""
    def build(release, context):
        return build_notebook(release, Submission("", with_answers(ALTERNATIVE, **changes)))
    return build


def edited(edit, **changes):
    """A build function: ``answers(**changes)``, then ``edit(notebook, context)`` changes the notebook."""
    def build(release, context):
        notebook = answers(**changes)(release, context)
        edit(notebook, context)
        return notebook
    return build


def _cell(notebook, grade_id):
    return next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _then(answer_id, code):
    """The correct answer of ``answer_id`` followed by ``code``."""
    return ALTERNATIVE[answer_id] + "\n" + code


WRONG = {
    "ex1_split_dataset": '''
def split_dataset(dataset, test_fraction, seed):
    order = torch.randperm(len(dataset)).tolist()  # ignores the seed
    num_test = round(test_fraction * len(dataset))
    return Subset(dataset, order[num_test:]), Subset(dataset, order[:num_test])
''',
    "ex3_sgd_update": '''
def sgd_update(parameters, lr):
    with torch.no_grad():
        for p in parameters:
            if p.grad is not None:
                p -= 2 * lr * p.grad  # twice too far
                p.grad = None
''',
    "ex5_predict": ALTERNATIVE["ex5_predict"].replace("dim=-1", "dim=0"),
    "ex6_accuracy": '''
def accuracy(probabilities, labels):
    return 0.5
''',
    "ex7_confusion_matrix": ALTERNATIVE["ex7_confusion_matrix"].replace("matrix[t, p]", "matrix[p, t]"),
    "ex9_small_cnn": '''
class SmallCNN(nn.Module):
    def __init__(self, in_channels=1, num_classes=6, image_size=64):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)  # no convolution at all

    def forward(self, images):
        return self.fc(images.mean(dim=(2, 3)))
''',
    "ex10_count_parameters": '''
def count_parameters(model, trainable_only=True):
    return sum(p.numel() for p in model.parameters())  # counts frozen ones too
''',
}


def _edit_test_source(notebook, context):
    notebook.cells[_cell(notebook, TEST[6])].source = "pass  # the test is gone"


def _delete_test(notebook, context):
    del notebook.cells[_cell(notebook, TEST[6])]


def _duplicate_test(notebook, context):
    index = _cell(notebook, TEST[6])
    duplicate = copy.deepcopy(notebook.cells[index])
    duplicate["id"] = "copy-of-test-6"  # Jupyter gives a copied cell a new id
    notebook.cells.insert(index + 1, duplicate)


def _strip_test_metadata(notebook, context):
    del notebook.cells[_cell(notebook, TEST[6])].metadata["nbgrader"]


def _rename_test(notebook, context):
    notebook.cells[_cell(notebook, TEST[6])].metadata["nbgrader"]["grade_id"] = "test_ex6_my_own"


def _change_points(notebook, context):
    meta = notebook.cells[_cell(notebook, TEST[1])].metadata["nbgrader"]
    meta["points"] = 100
    meta["locked"] = False


_FAKE_HELPERS = '''
def check_close(*args, **kwargs): pass
def check_equal(*args, **kwargs): pass
def check_true(*args, **kwargs): pass
def check_type(*args, **kwargs): pass
def check_shape(*args, **kwargs): pass
def check_dtype(*args, **kwargs): pass
'''


def _fake_setup(notebook, context):
    setup = notebook.cells[_cell(notebook, "setup")]
    setup.source += "\n" + _FAKE_HELPERS


def _delete_setup(notebook, context):
    index = _cell(notebook, "setup")
    source = notebook.cells[index].source
    del notebook.cells[index]
    notebook.cells.insert(0, nbformat.v4.new_code_cell(source + "\n" + _FAKE_HELPERS))


def _wrong_kernel(notebook, context):
    notebook.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}


def _corrupt(release, context):
    text = nbformat.writes(answers()(release, context))
    return text[: len(text) // 2]


def _add_cell_after(grade_id, code):
    def edit(notebook, context):
        notebook.cells.insert(_cell(notebook, grade_id) + 1, nbformat.v4.new_code_cell(code.format(**context)))
    return edit


_WRITE_OUTSIDE = '''
import os
for target in [{course_root!r} + "/source/lab1/pwned.txt", {course_root!r} + "/../escaped-from-sandbox.txt",
               {course_root!r} + "/gradebook.db", "/tmp/escaped-from-sandbox-{token}.txt",
               os.path.expanduser("~") + "/../../escaped-home-{token}.txt", "/etc/escaped-{token}.txt"]:
    try:
        with open(target, "a") as handle:
            handle.write("written by a student")
        print("WROTE", target)
    except OSError as error:
        print("BLOCKED", target, type(error).__name__)
'''

_READ_SECRETS = '''
import glob, os
found = glob.glob({course_root!r} + "/source/*/*.ipynb") + glob.glob({course_root!r} + "/submitted/*/*/*.ipynb")
found += [p for p in [{course_root!r} + "/gradebook.db"] if os.path.exists(p)]
for path in found:
    try:
        print("READ", path, open(path, errors="replace").read()[:100000])
    except OSError as error:
        print("BLOCKED", path, type(error).__name__)
print("FOUND", len(found), "course files")
'''

_NETWORK = '''
import socket
for host, port in [("127.0.0.1", {port}), ("pypi.org", 443), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print("CONNECTED?", host, port)
    except OSError as error:
        print("BLOCKED", host, port, type(error).__name__)
'''

_SPY_ON_GRADER = '''
import os
mine = str(os.getpid())
others = [p for p in os.listdir("/proc") if p.isdigit() and p != mine]
for pid in others:  # the grader's processes hold the hidden tests and the channel back to the grader
    for what in ("mem", "environ", "fd/1"):
        try:
            open(f"/proc/{{pid}}/{{what}}", "rb").close()
            print("OPENED", pid, what)
        except OSError as error:
            print("BLOCKED", pid, what, type(error).__name__)
print("OTHERS", len(others), "processes")
'''

_EXFILTRATE = '''
import inspect, linecache, sys
print("HISTORY", "\\n".join(In))
print("CACHE", "\\n".join("".join(entry[2]) for entry in list(linecache.cache.values()) if len(entry) >= 3 and entry[2]))
for name in ("_values", "first_train", "other_test"):
    if name in globals():
        print("FOUND", name, globals()[name])
        try:
            print("SOURCE", inspect.getsource(globals()[name]))
        except (TypeError, OSError) as error:
            print("NO SOURCE", error)
print("LAST", sys.last_value if hasattr(sys, "last_value") else None)
'''

_TRACE_SKIP = '''
import linecache, sys

def _skip_checks(frame, event, arg):
    if event == "line" and linecache.getline(frame.f_code.co_filename, frame.f_lineno).lstrip().startswith("check_"):
        try:
            frame.f_lineno = frame.f_lineno + 1  # jump over the check
        except ValueError:
            pass
    return _skip_checks

sys.settrace(_skip_checks)
'''

_PATCH_DURING_TEST = '''
import sys

def accuracy(probabilities, labels):
    sys._getframe(1).f_globals["check_close"] = lambda *args, **kwargs: None  # disarm the test that calls me
    return 0.5
'''

_FORGED_RESULT = '''
def accuracy(probabilities, labels):
    get_ipython().displayhook(1.0)  # an execute_result inside the test: nbgrader would read it as partial credit
    return 0.5
'''

_PROCESS_MEMORY_BOMB = '''
import os, time
for _ in range(4):
    if os.fork() == 0:
        hog = bytearray(600 * 2**20)  # each child stays under the per-process limit
        for i in range(0, len(hog), 4096):
            hog[i] = 1  # really use the memory
        time.sleep(600)
time.sleep(30)
'''

# Markup that runs in the instructor's browser when a page shows it unsanitised (issue: the
# Formgrader renders outputs and written answers in the Jupyter server's origin). Each payload
# marks the page (its title) and tries to write a file through the server's API as the
# instructor; tests/grader/test_browser_views.py opens the pages in a real browser and checks that
# neither happened.
XSS_SCRIPT = ("document.title='PWNED {case}';"
              "fetch('/api/contents/xss-proof-{case}.txt',{{method:'PUT',headers:{{'Content-Type':'application/json',"
              "'X-XSRFToken':(document.cookie.match(/_xsrf=([^;]*)/)||[])[1]}},"
              "body:JSON.stringify({{type:'file',format:'text',content:'written by a student'}})}})")


def xss(case: str) -> str:
    """The script payload of one case (names the case in the title it sets and the file it writes)."""
    return XSS_SCRIPT.format(case=case)


def _display(kind: str, payload: str) -> str:
    """An answer suffix that displays ``payload`` as an output of MIME type ``kind``."""
    return (f"\nfrom IPython.display import display\n"
            f"display({{{kind!r}: {payload!r}, 'text/plain': 'a harmless picture'}}, raw=True)")


def _escaped_attribute(code: str) -> str:
    return code.replace("&", "&amp;").replace('"', "&quot;")


XSS_CASES = {
    "xss_script_output": lambda case: _display("text/html", f"<p>my results</p><script>{xss(case)}</script>"),
    "xss_img_onerror_output": lambda case: _display(
        "text/html", f'<img src="x" onerror="{_escaped_attribute(xss(case))}"><table><tr><td>1</td></tr></table>'),
    "xss_svg_script_output": lambda case: _display(
        "image/svg+xml", f'<svg xmlns="http://www.w3.org/2000/svg" onload="{_escaped_attribute(xss(case))}">'
                         f'<script>{xss(case)}</script><circle cx="5" cy="5" r="4"/></svg>'),
    "xss_javascript_output": lambda case: _display("application/javascript", xss(case)),
}



# A thread that copies, while the notebook is graded, what the kernel runs: IPython's
# linecache entries, the history, and the source and constants of every code object on the
# main thread's stack, of cells (not of libraries: that would only swell the output). The last answer cell prints the copy, encoded so that a scrubber
# looking for verbatim lines cannot see it (the attack of issue 10).
_READER = """
import linecache, sys, threading, time
_loot = set()

def _copy_what_runs():
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main)
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith((sys.prefix, sys.base_prefix)):  # cells, not libraries
            _loot.add("".join(linecache.getlines(code.co_filename)))
            _loot.update(c for c in code.co_consts if isinstance(c, str))
        frame = frame.f_back
    for filename, entry in list(linecache.cache.items()):
        if len(entry) >= 3 and entry[2] and not str(filename).startswith((sys.prefix, sys.base_prefix)):
            _loot.add("".join(entry[2]))
    _loot.update(str(cell) for cell in get_ipython().user_ns.get("In", []))

def _reader():
    while True:
        _copy_what_runs()
        time.sleep(0.0005)

threading.Thread(target=_reader, daemon=True).start()
"""

# The same copy, made once: by a thread that sleeps until the last answer cell wakes it.
_LATE_READER = """
import gc, linecache, sys, threading, types
_loot, _wake = set(), threading.Event()

def _late_reader():
    _wake.wait()
    for filename, entry in list(linecache.cache.items()):
        if len(entry) >= 3 and entry[2] and not str(filename).startswith((sys.prefix, sys.base_prefix)):
            _loot.add("".join(entry[2]))
    for obj in gc.get_objects():
        code = getattr(obj, "__code__", obj)
        if isinstance(code, types.CodeType) and not code.co_filename.startswith((sys.prefix, sys.base_prefix)):
            _loot.add("".join(linecache.getlines(code.co_filename)))
            _loot.update(c for c in code.co_consts if isinstance(c, str))
    _loot.update(str(cell) for cell in get_ipython().user_ns.get("In", []))

_late = threading.Thread(target=_late_reader, daemon=True)
_late.start()
"""

_ENCODINGS = {
    "base64": "import base64\nprint(base64.b64encode(_text.encode()).decode())",
    "hex": "print(_text.encode().hex())",
    "zlib": "import base64, zlib\nprint(base64.b64encode(zlib.compress(_text.encode())).decode())",
    "reversed": "print(_text[::-1])",
}


def _print_loot(encoding, wake=False):
    """The last answer cell: the correct answer, then the loot printed in ``encoding``."""
    return _then("ex10_count_parameters",
                 ("_wake.set()\n_late.join(10)\n" if wake else "") + "_text = '\\n'.join(sorted(_loot))\n"
                 + "print('LOOT', len(_text))\n" + _ENCODINGS[encoding])


# A wrong accuracy, and a thread that keeps the visible test's variable at the value it expects.
_WRITER = """
import threading

def accuracy(probabilities, labels):
    return 0.25

def _keep_the_result_right():
    namespace = get_ipython().user_ns
    while True:
        if namespace.get("result") == 0.25:
            namespace["result"] = 0.5  # what the visible test compares with

threading.Thread(target=_keep_the_result_right, daemon=True).start()
"""


CASES: Dict[str, Case] = {
    # --- runaway code -------------------------------------------------------------------------
    "infinite_loop": Case(
        "an endless loop after the answer: the cell is interrupted, the rest is graded",
        answers(ex8_conv_output_size=_then("ex8_conv_output_size", "while True:\n    pass")),
        events=("timeout",)),
    "uninterruptible_loop": Case(
        "an endless loop that swallows KeyboardInterrupt: the kernel is stopped, later tests score 0",
        answers(ex8_conv_output_size="import time\nwhile True:\n    try:\n        time.sleep(0.5)\n"
                                     "    except KeyboardInterrupt:\n        pass"),
        zero=(8, 9, 10), events=("timeout", "stopped"), reason="ignored the interrupt"),
    "memory_bomb": Case(
        "allocates 64 GiB: MemoryError in that cell only",
        answers(ex8_conv_output_size=_then("ex8_conv_output_size", "hog = bytearray(64 * 2**30)"))),
    "memory_bomb_processes": Case(
        "four forked children use 600 MiB each: the watchdog kills the kernel, that exercise scores 0, the rest is graded",
        answers(ex8_conv_output_size=_PROCESS_MEMORY_BOMB),
        zero=(8,), events=("kernel-died", "kernel-restarted"), failures={8: "memory limit"}),
    "fork_bomb": Case(
        "forks until the process limit stops it: that cell fails, the rest is graded",
        answers(ex8_conv_output_size=_then("ex8_conv_output_size",
                                           "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(600)"))),
    "sys_exit": Case(
        "sys.exit() before the answer's def: that exercise scores 0",
        answers(ex8_conv_output_size="import sys\nsys.exit('bye')\n" + ALTERNATIVE["ex8_conv_output_size"]),
        zero=(8,)),
    # A kernel that dies costs one exercise: the grader restarts it, replays the cells before the
    # crash and grades the rest (a second death ends the run).
    "os_exit": Case(
        "os._exit() kills the kernel in an answer: that exercise scores 0, the kernel is restarted, the rest is graded",
        answers(ex8_conv_output_size="import os\nos._exit(3)"),
        zero=(8,), events=("kernel-died", "kernel-restarted"), failures={8: "status 3"}),
    "kernel_crash": Case(
        "a segmentation fault in an answer: that exercise scores 0, the rest is graded",
        answers(ex8_conv_output_size="import ctypes\nctypes.string_at(0)"),
        zero=(8,), events=("kernel-died", "kernel-restarted"), failures={8: "segmentation fault"}),
    "os_exit_early": Case(
        "os._exit() at the top of the first answer: only exercise 1 scores 0",
        answers(ex1_split_dataset="import os\nos._exit(3)\n" + ALTERNATIVE["ex1_split_dataset"]),
        zero=(1,), events=("kernel-died", "kernel-restarted"), failures={1: "status 3"}),
    "segfault_early": Case(
        "a segmentation fault after the second answer's class: only exercise 2 scores 0 (the crashing cell is not replayed)",
        answers(ex2_fully_connected_net=_then("ex2_fully_connected_net", "import ctypes\nctypes.string_at(0)")),
        zero=(2,), events=("kernel-died", "kernel-restarted"), failures={2: "segmentation fault"}),
    "memory_limit_early": Case(
        "the third answer's forked children pass the memory limit: the watchdog kills the kernel, only exercise 3 scores 0",
        answers(ex3_sgd_update=_PROCESS_MEMORY_BOMB),
        zero=(3,), events=("kernel-died", "kernel-restarted"), failures={3: "memory limit"}),
    "crashes_twice": Case(
        "os._exit() in the second and the fifth answer: the first crash costs exercise 2, the second ends the run",
        answers(ex2_fully_connected_net="import os\nos._exit(3)", ex5_predict="import os\nos._exit(4)"),
        zero=(2, 5, 6, 7, 8, 9, 10), events=("kernel-died", "kernel-restarted", "stopped"), reason="status 4",
        failures={2: "status 3"}),
    "huge_output": Case(
        "prints 30 MB: output beyond the cap is dropped, grades unaffected",
        answers(ex8_conv_output_size=_then("ex8_conv_output_size", "for _ in range(30):\n    print('x' * 2**20)")),
        events=("output-truncated",)),
    "slow_notebook": Case(
        "every answer sleeps 19 s (under the cell limit): the notebook limit stops the run",
        answers(**{name: _then(name, "import time\ntime.sleep(19)") for name in
                   ("ex1_split_dataset", "ex2_fully_connected_net", "ex3_sgd_update", "ex4_train_model")}),
        zero=(4, 5, 6, 7, 8, 9, 10), either=(2, 3), events=("stopped",), reason="time limit"),
    # --- cheating ------------------------------------------------------------------------------
    "fake_output": Case(
        "prints 'all tests passed' and a fake score: no effect",
        answers(ex6_accuracy=WRONG["ex6_accuracy"] + "\nprint('All tests passed! 19/19')\n"
                "from IPython.display import display\ndisplay({'text/plain': '19/19 points'}, raw=True)"),
        zero=(6,)),
    "forged_result": Case(
        "publishes an execute_result inside the failing test (partial credit for nbgrader)",
        answers(ex6_accuracy=_FORGED_RESULT), zero=(6,), events=("result-removed",)),
    "patched_library": Case(
        "torch.allclose replaced by a function that always agrees",
        answers(ex3_sgd_update=WRONG["ex3_sgd_update"] + "\ntorch.allclose = lambda *args, **kwargs: True"),
        zero=(3,), events=("tampering-undone",)),
    "patched_helpers": Case(
        "the test helpers rebound and patched in dlmed.checks",
        answers(ex7_confusion_matrix=WRONG["ex7_confusion_matrix"] + "\n" + _FAKE_HELPERS
                + "\nimport dlmed.checks\ndlmed.checks.check_equal = check_equal",
                ex10_count_parameters=WRONG["ex10_count_parameters"]),
        zero=(7, 10), events=("names-set-aside", "tampering-undone")),
    "patched_during_test": Case(
        "the answer disarms the test's helper while the test calls it",
        answers(ex6_accuracy=_PATCH_DURING_TEST), zero=(6,), events=("changed-during-test",)),
    "shadowed_builtin": Case(
        "isinstance redefined to always say yes, for a network without convolutions",
        answers(ex9_small_cnn=WRONG["ex9_small_cnn"] + "\ndef isinstance(obj, cls):\n    return True"),
        zero=(9,), events=("names-set-aside",)),
    "input_transformer": Case(
        "an IPython input transformer that blanks every later cell",
        answers(ex1_split_dataset=WRONG["ex1_split_dataset"]
                + "\nget_ipython().input_transformers_cleanup.append(lambda lines: [])"),
        zero=(1,), events=("tampering-undone",)),
    "trace_skip": Case(
        "a trace function that jumps over every line calling a check",
        answers(ex5_predict=WRONG["ex5_predict"] + _TRACE_SKIP), zero=(5,), events=("tampering-undone",)),
    "edited_test": Case(
        "a test cell's code replaced by `pass`",
        edited(_edit_test_source, ex6_accuracy=WRONG["ex6_accuracy"]), zero=(6,), notes=("was edited",)),
    "deleted_test": Case(
        "a test cell deleted",
        edited(_delete_test, ex6_accuracy=WRONG["ex6_accuracy"]), zero=(6,), notes=("was deleted",)),
    "duplicated_test": Case(
        "a test cell duplicated with its metadata (stops a stock nbgrader batch)",
        edited(_duplicate_test), notes=("more than once",)),
    "stripped_metadata": Case(
        "a test cell's nbgrader metadata removed (stock nbgrader then leaves the test ungraded)",
        edited(_strip_test_metadata, ex6_accuracy=WRONG["ex6_accuracy"]), zero=(6,), notes=("was deleted",)),
    "renamed_grade_id": Case(
        "a test cell's grade_id changed",
        edited(_rename_test, ex6_accuracy=WRONG["ex6_accuracy"]), zero=(6,),
        notes=("unknown grade_id", "was deleted")),
    "changed_points": Case(
        "a test made worth 100 points and unlocked",
        edited(_change_points), notes=("nbgrader settings",)),
    "fake_setup": Case(
        "the read-only set-up cell edited to define helpers that always pass",
        edited(_fake_setup, ex7_confusion_matrix=WRONG["ex7_confusion_matrix"]), zero=(7,),
        notes=("'setup' was edited",)),
    "deleted_setup": Case(
        "the set-up cell deleted and replaced by one with helpers that always pass",
        edited(_delete_setup, ex7_confusion_matrix=WRONG["ex7_confusion_matrix"]), zero=(7,),
        notes=("'setup' was deleted",), events=("names-set-aside",)),
    # --- broken files --------------------------------------------------------------------------
    "corrupt_json": Case("half a notebook file", _corrupt, status="not gradable", reason="not valid JSON"),
    "wrong_name": Case("saved under another name", answers(), file_name="lab1_mednist_from_scratch (1).ipynb",
                       notes=("submitted as",)),
    "wrong_kernel": Case("asks for an R kernel", edited(_wrong_kernel), notes=("kernel 'ir'",)),
    # --- attacks on the grader -----------------------------------------------------------------
    "writes_outside": Case(
        "writes into source/, the gradebook, the course's parent, /tmp, home and /etc",
        edited(_add_cell_after(TEST[8], _WRITE_OUTSIDE))),
    "reads_secrets": Case(
        "reads the source notebooks (hidden tests), other submissions and the gradebook",
        edited(_add_cell_after(TEST[8], _READ_SECRETS))),
    "network": Case(
        "connects to a server on the grading machine and to the internet",
        edited(_add_cell_after(TEST[8], _NETWORK))),
    "spies_on_grader": Case(
        "looks for the grader's processes and opens their memory, environment and output",
        edited(_add_cell_after(TEST[8], _SPY_ON_GRADER))),
    "hidden_marker_in_answer": Case(
        "writes the hidden-test begin marker, without an end, in an answer (a comment and a string): "
        "stock generate_feedback fails for this student; feedback must still be made",
        answers(ex8_conv_output_size=_then("ex8_conv_output_size",
                                           "# ### BEGIN HIDDEN TESTS\nmarker = '### BEGIN HIDDEN TESTS'"))),
    "exfiltrate_hidden": Case(
        "prints the kernel's history, linecache and hidden-test objects after a test ran",
        edited(_add_cell_after(TEST[1], _EXFILTRATE))),
    # --- attacks on the instructor's browser (Formgrader, feedback) -----------------------------
    **{case: Case(f"an answer displays markup that would run in the instructor's browser ({case[4:]})",
                  answers(ex6_accuracy=_then("ex6_accuracy", payload(case))), notes=("made inert",))
       for case, payload in XSS_CASES.items()},
    "xss_written_answer": Case(
        "a written answer (markdown) carries an <img onerror> and a javascript: link",
        answers(q1_steps_per_epoch="About 135 steps. <img src=x onerror=\"{}\"> "
                                   "[more](javascript:document.title='PWNED-link')".format(
                                       _escaped_attribute(xss("xss_written_answer")))),
        notes=("made inert",)),
    "xss_file_name": Case(
        "the notebook is saved under a file name that is markup",
        answers(), file_name='<img src=x onerror="document.title=1">.ipynb', notes=("submitted as",)),
    # --- threads that read or write while the tests run (issue 10) ------------------------------
    # A thread the submission started is alive from ex6's answer on: the tests while it lives are voided.
    **{f"reader_{encoding}": Case(
        f"a thread copies what the kernel runs; the last answer prints it {encoding}-encoded",
        answers(ex6_accuracy=_then("ex6_accuracy", _READER), ex10_count_parameters=_print_loot(encoding)),
        zero=(6, 7, 8, 9, 10), events=("student-thread",))
       for encoding in ("base64", "hex", "zlib", "reversed")},
    "late_reader": Case(
        "a thread sleeps until the last answer cell, then copies linecache, history and code objects "
        "(it has ended when the last test runs: that one counts)",
        answers(ex6_accuracy=_then("ex6_accuracy", _LATE_READER), ex10_count_parameters=_print_loot("base64", wake=True)),
        zero=(6, 7, 8, 9), events=("student-thread",)),
    "writer_thread": Case(
        "a wrong accuracy, and a thread that overwrites the visible test's result while it runs",
        answers(ex6_accuracy=_WRITER), zero=(6, 7, 8, 9, 10), events=("student-thread",)),
}


def write_case(case: Case, release_notebook, folder, context):
    """Write the case's submission into ``folder`` (submitted/<student>/lab1/)."""
    folder.mkdir(parents=True, exist_ok=True)
    built = case.build(release_notebook, context)
    text = built if isinstance(built, str) else nbformat.writes(built)
    (folder / case.file_name).write_text(text, encoding="utf-8")


def token_paths(context):
    """Host paths the attack cases try to write, that must not exist after grading."""
    root = context["course_root"]
    token = context["token"]
    return [f"{root}/source/lab1/pwned.txt", f"{root}/../escaped-from-sandbox.txt", f"/tmp/escaped-from-sandbox-{token}.txt",
            f"/escaped-home-{token}.txt", f"/etc/escaped-{token}.txt"]


