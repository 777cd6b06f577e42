"""Hidden tests use new inputs, not new rules: what they demand must be stated to the student.

A check of meaning cannot be automated, but the rules that slipped through before follow a
pattern: a hidden test's failure message or comment names a requirement (evaluation mode,
training mode, stale gradients, NaN, restoring state, hooks, the CPU) that the exercise's text
and its answer cell's docstring never mention. This test finds such pairs in every lab in
``source/``, so a new lab cannot forget them. It reads the notebooks only (no kernel).
"""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

#: (what a hidden test's messages or comments say, what the exercise must then mention, the rule).
RULES = [
    (r"expected eval(uation)? mode|\(eval mode", r"eval(uation)? mode|\.eval\(\)", "evaluation mode"),
    (r"expected (model\.train\(\)|training mode)|must call model\.train|must run in training mode"
     r"|put the model in training mode", r"training mode|\.train\(\)", "training mode"),
    (r"stale gradient", r"stale gradient|clear(s|ed)? the gradients|reset the gradients|zero_grad",
     "stale gradients cleared"),
    (r"isnan\(|\bnan\b", r"\bnan\b", "a NaN result"),
    (r"is_grad_enabled|torch\.no_grad\(\)\)", r"no_grad|without gradients|inference_mode", "no gradients"),
    (r"must be restored", r"restore", "state restored"),
    (r"hooks left", r"hook", "hooks removed"),
    (r"device of the returned|on the CPU", r"\bCPU\b", "results on the CPU"),
    (r"global random state", r"seed", "a seeded result"),
]


def _exercises(notebook_path: Path):
    """Yield (test grade id, exercise text with the answer cells' docstrings, hidden-test source)."""
    notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    text = ""
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        nbgrader = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "markdown" and re.search(r"^## Exercise \d+", source, re.M):
            text = source[source.index("## Exercise"):]  # a new exercise starts
        elif cell["cell_type"] == "markdown":
            text += "\n" + source
        elif nbgrader.get("solution"):
            text += "\n" + source.split("### BEGIN SOLUTION")[0]  # signature and docstring
        if nbgrader.get("grade") and cell["cell_type"] == "code" and "### BEGIN HIDDEN TESTS" in source:
            hidden = source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            yield nbgrader["grade_id"], text, hidden


LAB_NOTEBOOKS = sorted((PROJECT_ROOT / "source").glob("lab*/*.ipynb"))


@pytest.mark.parametrize("notebook_path", LAB_NOTEBOOKS, ids=lambda path: path.parent.name)
def test_hidden_test_rules_are_stated(notebook_path):
    """Every requirement a hidden test's messages name is mentioned in its exercise's text or docstring."""
    unstated = []
    for grade_id, text, hidden in _exercises(notebook_path):
        said = " ".join(re.findall(r'"[^"\n]*"|#[^\n]*', hidden))  # the messages and comments
        for in_hidden, in_text, rule in RULES:
            if re.search(in_hidden, said) and not re.search(in_text, text, re.I):
                unstated.append(f"{grade_id}: the hidden tests demand {rule}, the exercise never says so")
    assert not unstated, "\n".join(unstated)


def test_the_rules_catch_an_unstated_requirement(tmp_path):
    """A hidden test about stale gradients, with an exercise that never mentions them, is found."""
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["## Exercise 1: a step (1 point)\nWrite `step`."]},
        {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": "ex1_step"}},
         "source": ['def step(model):\n    """One step."""\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION']},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade": True, "grade_id": "test_ex1_step"}},
         "source": ["### BEGIN HIDDEN TESTS\np.grad = 5  # stale gradients must be cleared\n### END HIDDEN TESTS"]},
    ]
    path = tmp_path / "lab9" / "lab9.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    with pytest.raises(AssertionError, match="stale gradients cleared"):
        test_hidden_test_rules_are_stated(path)
