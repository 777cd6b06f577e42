"""dlmed.course.grading and dlmed.course helpers: hidden-test removal, nbgrader's failure rule, score tables."""

import nbformat
import pytest

from dlmed import course
from dlmed.course import grading
from tests.helpers import hidden_test_leaks, squash


def _test_cell(source, outputs=()):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "t", "points": 1}
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def test_hide_hidden_tests_removes_region_and_shortens_traceback():
    """Hidden lines go from the source, and an error keeps only 'ename: evalue' (tracebacks quote source)."""
    source = "visible_check()\n### BEGIN HIDDEN TESTS\nsecret_check(42)\n### END HIDDEN TESTS"
    error = {"output_type": "error", "ename": "AssertionError", "evalue": "size: expected 3, got 4",
             "traceback": ["Cell In[3], line 3", "----> 3 secret_check(42)", "AssertionError: size: expected 3, got 4"]}
    notebook = nbformat.v4.new_notebook(cells=[_test_cell(source, [error])])
    notebook, _ = grading.HideHiddenTests().preprocess(notebook, {})
    cell = notebook.cells[0]
    assert "secret_check" not in cell.source and "HIDDEN" not in cell.source, f"source after: {cell.source!r}"
    assert "visible_check()" in cell.source, f"visible tests must stay, got {cell.source!r}"
    assert cell.outputs[0]["traceback"] == ["AssertionError: size: expected 3, got 4"], cell.outputs[0]["traceback"]


def test_hide_hidden_tests_keeps_tracebacks_of_cells_without_hidden_tests():
    """Cells without hidden tests keep their full traceback (students need it to debug)."""
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["line 1", "ValueError: bad"]}
    notebook = nbformat.v4.new_notebook(cells=[_test_cell("check()", [error])])
    notebook, _ = grading.HideHiddenTests().preprocess(notebook, {})
    assert notebook.cells[0].outputs[0]["traceback"] == ["line 1", "ValueError: bad"]


def test_hide_hidden_tests_scrubs_hidden_lines_quoted_by_other_cells():
    """A student cell that printed a hidden test line (dug out of the kernel) shows a note instead."""
    source = "visible_check()\n### BEGIN HIDDEN TESTS\nsecret_check(value_for_hidden_test=42)\n### END HIDDEN TESTS"
    leak = {"output_type": "stream", "name": "stdout",
            "text": "my output\nsecret_check(value_for_hidden_test=42)\nvisible_check()\n"}
    student = nbformat.v4.new_code_cell("print(In)")
    student.outputs = [nbformat.from_dict(leak)]
    notebook = nbformat.v4.new_notebook(cells=[_test_cell(source), student])
    notebook, _ = grading.HideHiddenTests().preprocess(notebook, {})
    text = notebook.cells[1].outputs[0]["text"]
    assert "secret_check" not in text, f"hidden line still shown: {text!r}"
    assert "my output" in text and "visible_check()" in text and "removed by the grader" in text, text


def _answer_cell(source, cell_type="code"):
    maker = nbformat.v4.new_code_cell if cell_type == "code" else nbformat.v4.new_markdown_cell
    cell = maker(source)
    cell.metadata["nbgrader"] = {"grade": cell_type == "markdown", "solution": True, "locked": False,
                                 "grade_id": f"answer_{cell_type}", "points": 1}
    return cell


@pytest.mark.parametrize("answer, cell_type", [
    ("x = 1  # ### BEGIN HIDDEN TESTS", "code"),  # a begin marker without end: nbgrader raises
    ('s = """\n### BEGIN HIDDEN TESTS\n"""', "code"),
    ("note = '### BEGIN HIDDEN TESTS'\n### END HIDDEN TESTS\ny = 2", "code"),  # a region outside a test cell
    ("My answer mentions ### BEGIN HIDDEN TESTS.", "markdown"),  # a written (graded) answer
])
def test_hide_hidden_tests_leaves_students_markers_alone(answer, cell_type):
    """Marker text in a student's answer neither stops feedback nor is cut out; the test cell's region still goes."""
    hidden = "visible_check()\n### BEGIN HIDDEN TESTS\nsecret_check(42)\n### END HIDDEN TESTS"
    notebook = nbformat.v4.new_notebook(cells=[_answer_cell(answer, cell_type), _test_cell(hidden)])
    notebook, _ = grading.HideHiddenTests().preprocess(notebook, {})
    assert notebook.cells[0].source == answer, f"the student's answer was changed: {notebook.cells[0].source!r}"
    assert "secret_check" not in notebook.cells[1].source, notebook.cells[1].source


@pytest.mark.parametrize("text, ignored", [
    ("epoch 1/3: 100%|##########| 4/4 [00:00<00:00, 12.3it/s]\n", True),
    ("/x/site-packages/torch/nn/modules/module.py:12: UserWarning: something\n  warnings.warn(\n", True),
    ("Traceback: my own error message\n", False),
    ("passed\n", False),
])
def test_stderr_rule_matches_nbgrader(text, ignored):
    """Library warnings and progress bars on stderr do not fail a graded cell; other stderr does."""
    cell = _test_cell("x", [{"output_type": "stream", "name": "stderr", "text": text}])
    failure = grading.cell_failure(cell)
    assert (failure is None) == ignored, f"stderr {text!r}: expected ignored={ignored}, got failure={failure!r}"


def test_cell_failure_reports_error_without_colour_codes():
    """An error output fails the cell and the message is plain text."""
    cell = _test_cell("x", [{"output_type": "error", "ename": "AssertionError", "evalue": "m",
                             "traceback": ["\x1b[0;31mAssertionError\x1b[0m: m"]}])
    assert grading.cell_failure(cell) == "AssertionError: m"
    assert grading.cell_failure(_test_cell("x", [])) is None


def test_graded_test_cells_skips_answer_and_manual_cells():
    """Only autograded test cells (grade, not solution) count."""
    answer = nbformat.v4.new_code_cell("def f(): pass")
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "a"}
    manual = nbformat.v4.new_markdown_cell("answer")
    manual.metadata["nbgrader"] = {"grade": True, "solution": True, "grade_id": "m", "points": 1}
    notebook = nbformat.v4.new_notebook(cells=[answer, _test_cell("t()"), manual])
    assert grading.graded_test_cells(notebook) == [1]


def test_score_table_lists_cells_and_totals():
    """The score table has a row per autograded cell and the totals per student."""
    scores = {"reference": {"test_a": (2.0, 2.0), "q1": (None, 1.0)}, "blank": {"test_a": (0.0, 2.0), "q1": (None, 1.0)}}
    table = course.format_score_table("lab1", scores)
    assert "test_a" in table and "q1" not in table, table
    assert "2/2" in table and "0/2" in table, table
    assert course.autograde_total(scores["blank"]) == (0.0, 2.0)


def test_find_course_root_explains_what_is_missing(tmp_path):
    """Outside a course folder the error says what was looked for."""
    with pytest.raises(course.CourseError, match="nbgrader_config.py"):
        course.find_course_root(tmp_path)


def test_strip_solution_markers_keeps_the_code():
    """Solutions lose the BEGIN/END SOLUTION lines but keep the code and model answers between them."""
    answer = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    written = nbformat.v4.new_markdown_cell("**Q1**\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION")
    notebook = nbformat.v4.new_notebook(cells=[answer, written])
    notebook, _ = grading.StripSolutionMarkers().preprocess(notebook, {})
    assert notebook.cells[0].source == "def f():\n    return 1", notebook.cells[0].source
    assert notebook.cells[1].source == "**Q1**\n\nBecause.", notebook.cells[1].source


def test_the_leak_check_sees_through_encodings():
    """The leak check finds a hidden line printed encoded, compressed, reversed or cut up, and nothing in honest text."""
    import base64
    import codecs
    import zlib

    line = "check_close(accuracy(ties, tie_truth), 0.6, 'accuracy with ties (ties go to the first class)')"
    secret = [line, "another_hidden_line_of_a_test(x) == 42"]
    encoded = {
        "plain": f"output {line} more",
        "base64": base64.b64encode(f"junk {line} junk".encode()).decode(),
        "hex": (line + "\n").encode().hex(),
        "zlib+base64": base64.b64encode(zlib.compress(line.encode())).decode(),
        "base85": base64.b85encode(line.encode()).decode(),
        "base32": base64.b32encode(line.encode()).decode(),
        "reversed": line[::-1],
        "rot13": codecs.encode(line, "rot13"),
        "a 40-character run": "xx" + line[10:55] + "yy",
    }
    for name, text in encoded.items():
        assert hidden_test_leaks(f"Feedback page\n{text}\nend", secret, allowed="") == [line], f"not found when {name}"
    assert hidden_test_leaks("AssertionError: accuracy of 2 right out of 4: expected 0.5, got 50\n" + "ab" * 100,
                             secret, allowed="") == []
    assert hidden_test_leaks(line, secret, allowed=squash(line)) == [], "a line the student wrote too is no leak"


def test_course_configuration_is_json_serialisable():
    """nbgrader_config.py names preprocessors by import strings: the Formgrader shows it as JSON."""
    import json

    from traitlets.config import PyFileConfigLoader

    from tests.conftest import PROJECT_ROOT

    config = PyFileConfigLoader("nbgrader_config.py", path=str(PROJECT_ROOT)).load_config()
    json.dumps(config)  # a class in a preprocessor list raises TypeError here
    for section, name in [("GenerateSolution", "preprocessors"), ("GenerateFeedback", "preprocessors"),
                          ("Autograde", "autograde_preprocessors"), ("HTMLExporter", "preprocessors")]:
        listed = config[section][name]
        assert listed and all(isinstance(entry, str) for entry in listed), f"{section}.{name}: {listed}"


def test_course_configuration_uses_a_course_local_exchange_only_when_there_is_one(tmp_path):
    """exchange/ next to nbgrader_config.py (./course.sh exchange) becomes Exchange.root; without it a hub's setting stays."""
    import shutil

    from traitlets.config import PyFileConfigLoader

    from tests.conftest import PROJECT_ROOT

    shutil.copy2(PROJECT_ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config()
    assert "root" not in config.Exchange, f"Exchange.root set without an exchange/ folder: {config.Exchange}"
    (tmp_path / "exchange").mkdir()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config()
    assert config.Exchange.root == str(tmp_path / "exchange"), config.Exchange
