"""Copied work: how much of what students wrote is the same, pair by pair, and the same as the solution.

What is compared: only what students wrote, cell by cell (the same exercise with the same
exercise): the answer cells nbgrader tracks (``solution`` cells: code and written answers),
with everything the released notebook already contained (signatures, docstrings, the
question text, ``raise NotImplementedError()``, code of the notebook's other cells) removed.

How, as MOSS, JPlag and Dolos do (Schleimer, Wilkerson and Aiken, "Winnowing: local
algorithms for document fingerprinting", SIGMOD 2003):

- **normalised tokens**: code is read with Python's own tokenizer; comments, blank lines,
  indentation and line breaks are dropped, every string becomes ``S`` and every number ``N``,
  and every name the student chose becomes ``V`` (kept: keywords, builtins, attribute names
  such as ``.randperm``, and the names the released notebook itself uses: ``torch``, ``nn``,
  the exercise's function name). Renaming variables, changing comments or whitespace does
  not change the tokens. Written answers are lower-cased words.
- **winnowing fingerprints**: a hash of every run of :data:`K` tokens; in every window of
  :data:`WINDOW` hashes the smallest is kept. Runs the released notebook contains are
  dropped (the starter code). Any common run of ``K + WINDOW - 1`` tokens or more is
  certain to share a fingerprint; statements moved around keep the fingerprints inside them.
- **weighting by length**: a cell counts with weight ``w = clip((n - SHORT) / (FULL - SHORT), 0, 1)``
  where ``n`` is the smaller of the two students' numbers of own tokens in that cell: a
  one-line answer that every correct student writes alike (``return (p.argmax(1) == y).float().mean().item()``,
  about 20 tokens) counts 0, a cell of :data:`FULL` tokens or more counts fully. A long cell
  also has more fingerprints, so it weighs more.
- **similarity of a pair** (Dolos's symmetric measure): the weighted number of shared
  fingerprints over the weighted mean number of fingerprints of the two, per cell summed over
  the notebook. A pair is **flagged** when it is at least :data:`FLAG_SIMILARITY` and they
  share at least :data:`FLAG_SHARED_TOKENS` weighted tokens of code they wrote themselves.
  Each submission is also compared with the published ``solutions/`` notebook the same way.

A flag is a reason to look, not a verdict: the side-by-side view shows the matching lines.
Why not a library: ``copydetect`` (PyPI) winnows the characters of filtered code and turns
every name, also library calls such as ``torch.randperm``, into ``V``, so two independent
solutions of the same short exercise share most fingerprints; it also hashes with Python's
salted ``hash`` per process. Dolos and JPlag are not Python packages.
"""

import builtins
import dataclasses
import io
import keyword
import re
import tokenize
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

#: Tokens per hashed run (a statement of a line or two).
K = 12
#: Hashes per winnowing window: every common run of K + WINDOW - 1 = 19 tokens is found.
WINDOW = 8
#: A cell with at most this many own tokens does not count (one-line answers).
SHORT_TOKENS = 25
#: A cell with this many own tokens or more counts fully; linear in between.
FULL_TOKENS = 80
#: A pair (or a submission and the solution) at least this similar ...
FLAG_SIMILARITY = 0.6
#: ... sharing at least this many weighted tokens of their own is flagged.
FLAG_SHARED_TOKENS = 60
#: Cells longer than this (characters) are cut: a submission cannot make the step slow.
MAX_CELL_CHARS = 50_000

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_FALLBACK_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d*)?|\S")
_BUILTINS = set(dir(builtins))
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}


@dataclasses.dataclass
class Tokens:
    """Normalised tokens of one cell and the (0-based) source line of each."""

    values: List[str]
    lines: List[int]


def _raw_code_tokens(source: str) -> List[Tuple[int, str, int]]:
    """(type, text, line) of Python tokens; a regex split where the tokenizer gives up (a syntax error)."""
    # IPython magics and shell escapes are not Python: blank them, keeping the line numbers.
    source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        return [(t.type, t.string, t.start[0] - 1) for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type not in _SKIPPED]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        source = re.sub(r"#[^\n]*", "", source)
        found = []
        for number, line in enumerate(source.split("\n")):
            for match in _FALLBACK_TOKEN.finditer(line):
                text = match.group(0)
                kind = tokenize.NAME if text[0].isalpha() or text[0] == "_" else (
                    tokenize.NUMBER if text[0].isdigit() else tokenize.OP)
                found.append((kind, text, number))
        return found


def code_tokens(source: str, known_names: Set[str]) -> Tokens:
    """Normalised tokens of Python code: the student's own names become ``V`` (module docstring)."""
    values, lines = [], []
    raw = _raw_code_tokens(source[:MAX_CELL_CHARS])
    for index, (kind, text, line) in enumerate(raw):
        if kind == tokenize.STRING or tokenize.tok_name.get(kind, "").startswith("FSTRING"):
            value = "S"
        elif kind == tokenize.NUMBER:
            value = "N"
        elif kind == tokenize.NAME:
            after_dot = index > 0 and raw[index - 1][1] == "."
            on_self = after_dot and index > 1 and raw[index - 2][1] == "self"
            if keyword.iskeyword(text) or text in _BUILTINS or text in known_names or (after_dot and not on_self):
                value = text
            else:
                value = "V"
        else:
            value = text
        values.append(value)
        lines.append(line)
    return Tokens(values, lines)


def text_tokens(source: str) -> Tokens:
    """Lower-cased words of a written answer, with their lines."""
    values, lines = [], []
    for number, line in enumerate(source[:MAX_CELL_CHARS].split("\n")):
        for word in _WORD.findall(line.lower()):
            values.append(word)
            lines.append(number)
    return Tokens(values, lines)


def kgram_hashes(values: Sequence[str], k: int = K) -> List[int]:
    """A hash of every run of ``k`` tokens (one per start position): the same in every process and run."""
    import hashlib

    return [int.from_bytes(hashlib.blake2b("\x1f".join(values[i:i + k]).encode("utf-8", "replace"),
                                          digest_size=8).digest(), "big")
            for i in range(len(values) - k + 1)]


def winnow(hashes: Sequence[int], window: int = WINDOW) -> Dict[int, List[int]]:
    """Robust winnowing: the rightmost smallest hash of every window; {hash: [positions]}."""
    chosen: Dict[int, List[int]] = {}
    if not hashes:
        return chosen
    if len(hashes) <= window:
        position = min(range(len(hashes)), key=lambda i: (hashes[i], -i))
        return {hashes[position]: [position]}
    previous = -1
    for start in range(len(hashes) - window + 1):
        position = min(range(start, start + window), key=lambda i: (hashes[i], -i))
        if position != previous:
            chosen.setdefault(hashes[position], []).append(position)
            previous = position
    return chosen


@dataclasses.dataclass
class CellPrint:
    """One answer cell of one submission: its fingerprints and what they cover."""

    source: str
    tokens: Tokens
    fingerprints: Dict[int, List[int]]  # hash -> token positions where its run starts
    own_tokens: int  # tokens not inside a run the released notebook contains


def fingerprint_cell(source: str, is_code: bool, known_names: Set[str], starter: Set[int],
                     starter_lines: Set[str] = frozenset()) -> CellPrint:
    """Fingerprints of one cell without the starter code.

    ``starter``: hashes of every token run of the released notebook (a run found there is not
    the student's); ``starter_lines``: the stripped lines of the released answer cells (the
    signature, the docstring, the question of a written answer): their tokens are not the
    student's, and a run made of them only is dropped.
    """
    tokens = code_tokens(source, known_names) if is_code else text_tokens(source)
    source_lines = source[:MAX_CELL_CHARS].split("\n")
    given = [source_lines[line].strip() in starter_lines if line < len(source_lines) else False
             for line in tokens.lines]
    hashes = kgram_hashes(tokens.values)
    covered = list(given)
    for start, value in enumerate(hashes):
        if value in starter:
            covered[start:start + K] = [True] * len(covered[start:start + K])
    fingerprints = {}
    for value, positions in winnow(hashes).items():
        positions = [p for p in positions if not all(given[p:p + K])]
        if positions and value not in starter:
            fingerprints[value] = positions
    own = sum(1 for c in covered if not c) if hashes else sum(1 for g in given if not g)
    return CellPrint(source, tokens, fingerprints, own)


def cell_weight(own_tokens: int) -> float:
    """How much a cell counts: 0 up to SHORT_TOKENS own tokens, 1 from FULL_TOKENS, linear between."""
    return min(1.0, max(0.0, (own_tokens - SHORT_TOKENS) / (FULL_TOKENS - SHORT_TOKENS)))


@dataclasses.dataclass
class PairResult:
    """How similar two submissions (or one and the solution) are."""

    first: str
    second: str
    similarity: float  # weighted shared fingerprints / weighted mean fingerprints, 0..1
    share_first: float  # of the first's weighted fingerprints, how many the second has too
    share_second: float
    shared_tokens: float  # weighted tokens of the first covered by shared fingerprints
    cells: List[str]  # cells with shared fingerprints, in notebook order
    flagged: bool


@dataclasses.dataclass
class SimilarityReport:
    """Everything the class report shows about copied work."""

    pairs: List[PairResult]  # every pair with something in common, flagged first, then by evidence
    solution: Dict[str, PairResult]  # each student against the published solution
    prints: Dict[str, Dict[str, CellPrint]]  # student -> cell -> fingerprints (and the solution under SOLUTION)
    order: List[str]  # answer cells in notebook order
    skipped: Dict[str, str]  # students not compared, and why
    seconds: float = 0.0

    @property
    def flagged(self) -> List[PairResult]:
        return [p for p in self.pairs if p.flagged]


#: The name the published solution has in a report.
SOLUTION = "published solution"


def _covered_tokens(cell: CellPrint, hashes: Iterable[int]) -> int:
    covered = set()
    for value in hashes:
        for start in cell.fingerprints.get(value, ()):
            covered.update(range(start, start + K))
    return len(covered)


def compare(first: str, second: str, prints: Dict[str, Dict[str, CellPrint]], order: Sequence[str]) -> PairResult:
    """Compare two fingerprinted submissions cell by cell (module docstring: weighting, flag rule)."""
    shared_sum = total_first = total_second = shared_tokens = 0.0
    cells = []
    for cell in order:
        a, b = prints[first].get(cell), prints[second].get(cell)
        if a is None or b is None:
            continue
        weight = cell_weight(min(a.own_tokens, b.own_tokens))
        total_first += weight * len(a.fingerprints)
        total_second += weight * len(b.fingerprints)
        common = a.fingerprints.keys() & b.fingerprints.keys()
        if not common:
            continue
        cells.append(cell)
        shared_sum += weight * len(common)
        shared_tokens += weight * _covered_tokens(a, common)
    mean_total = (total_first + total_second) / 2
    similarity = shared_sum / mean_total if mean_total else 0.0
    flagged = similarity >= FLAG_SIMILARITY and shared_tokens >= FLAG_SHARED_TOKENS
    return PairResult(first, second, similarity, shared_sum / total_first if total_first else 0.0,
                      shared_sum / total_second if total_second else 0.0, shared_tokens, cells, flagged)


def answer_cells(notebook, answer_ids: Set[str]) -> Dict[str, Tuple[str, bool]]:
    """{grade_id: (source, is_code)} of a notebook's answer cells (the first of each id)."""
    found: Dict[str, Tuple[str, bool]] = {}
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict):
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id in answer_ids and grade_id not in found:
            source = cell.get("source", "")
            if isinstance(source, list):
                source = "".join(str(part) for part in source)
            if isinstance(source, str):
                found[grade_id] = (source, cell.get("cell_type") == "code")
    return found


def _defined_names(source: str) -> Set[str]:
    """Names a released cell imports or defines (functions, classes): the notebook's own vocabulary."""
    import ast

    source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def starter_material(release_notebook, answer_ids: Iterable[str] = ()) -> Tuple[Set[int], Set[str], Set[str]]:
    """(hashes of every token run in the released notebook, the names it imports or defines,
    the stripped lines of its answer cells ``answer_ids``)."""
    names: Set[str] = set()
    for cell in release_notebook.cells:
        if cell.cell_type == "code":
            names.update(_defined_names(cell.source))
    starter: Set[int] = set()
    for cell in release_notebook.cells:
        tokens = code_tokens(cell.source, names) if cell.cell_type == "code" else text_tokens(cell.source)
        starter.update(kgram_hashes(tokens.values))
    lines = set()
    for source, _ in answer_cells(release_notebook, set(answer_ids)).values():
        lines.update(line.strip() for line in source.split("\n") if line.strip())
    return starter, names, lines


def compare_class(notebooks: Dict[str, Optional[object]], release_notebook, solution_notebook,
                  answer_ids: Sequence[str]) -> SimilarityReport:
    """Fingerprint every student's answer cells and compare all pairs and each with the solution.

    ``notebooks``: {student: notebook (nbformat node or dict) or None when there is none to read};
    ``answer_ids``: the answer cells' grade_ids in notebook order.
    """
    import time

    started = time.monotonic()
    starter, names, given_lines = starter_material(release_notebook, answer_ids)
    wanted = set(answer_ids)
    prints: Dict[str, Dict[str, CellPrint]] = {}
    skipped: Dict[str, str] = {}
    for student, notebook in notebooks.items():
        if notebook is None:
            skipped[student] = "no graded notebook to read"
            continue
        cells = answer_cells(notebook, wanted)
        prints[student] = {cell: fingerprint_cell(source, is_code, names, starter, given_lines)
                           for cell, (source, is_code) in cells.items()}
    students = sorted(prints)
    prints[SOLUTION] = {cell: fingerprint_cell(source, is_code, names, starter, given_lines)
                        for cell, (source, is_code) in answer_cells(solution_notebook, wanted).items()}
    # Only pairs that share a fingerprint are compared in full (an index from hash to students).
    index: Dict[Tuple[str, int], List[str]] = {}
    for student in students:
        for cell, cell_print in prints[student].items():
            for value in cell_print.fingerprints:
                index.setdefault((cell, value), []).append(student)
    candidates = set()
    for holders in index.values():
        for i, first in enumerate(holders):
            for second in holders[i + 1:]:
                candidates.add((first, second))
    pairs = [compare(first, second, prints, answer_ids) for first, second in sorted(candidates)]
    # Most evidence first: flagged pairs, then similarity discounted where little code is shared.
    pairs = sorted((p for p in pairs if p.cells), key=lambda p: (
        not p.flagged, -p.similarity * min(1.0, p.shared_tokens / FLAG_SHARED_TOKENS), p.first, p.second))
    solution = {student: compare(student, SOLUTION, prints, answer_ids) for student in students}
    return SimilarityReport(pairs, solution, prints, list(answer_ids), skipped, time.monotonic() - started)


def matched_lines(report: SimilarityReport, first: str, second: str, cell: str) -> Tuple[Set[int], Set[int]]:
    """Source lines (0-based) of ``cell`` in each of the two that lie in a shared fingerprint's run."""
    a, b = report.prints[first][cell], report.prints[second][cell]
    common = a.fingerprints.keys() & b.fingerprints.keys()
    result = []
    for side in (a, b):
        lines = set()
        for value in common:
            for start in side.fingerprints[value]:
                lines.update(side.tokens.lines[start:start + K])
        result.append(lines)
    return result[0], result[1]


# -- reading a class, writing the report -----------------------------------------------------

def compare_submissions(root, lab_info, students: Sequence[str], autograded_folder) -> SimilarityReport:
    """Compare the graded notebooks of ``students`` (``autograded_folder(student)/<notebook>``) in the course at ``root``.

    The released notebook (``release/<lab>/``) gives the starter code, the published
    ``solutions/<lab>/`` notebook (or, without it, ``source/<lab>/``) the solution; answer
    cells are the lab's ``solution`` cells.
    """
    import json
    from pathlib import Path

    import nbformat

    root = Path(root)
    name = lab_info.notebook_name
    release = nbformat.read(str(root / "release" / lab_info.lab / name), as_version=4)
    # The published solution; where solutions/ is not there (a scratch course), the instructor's
    # notebook in source/ has the same answer cells (solutions/ is generated from it).
    solution_path = root / "solutions" / lab_info.lab / name
    if not solution_path.is_file():
        solution_path = root / "source" / lab_info.lab / name
    solution = nbformat.read(str(solution_path), as_version=4)
    answer_ids = [cell for cell in lab_info.order if lab_info.cells[cell].solution]
    notebooks: Dict[str, Optional[dict]] = {}
    for student in students:
        path = Path(autograded_folder(student)) / name
        try:
            # Plain JSON: what nbgrader graded; a file that is not a notebook is skipped, not fatal.
            notebook = json.loads(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None
        except (OSError, ValueError, RecursionError):
            notebook = None
        notebooks[student] = notebook if isinstance(notebook, dict) else None
    return compare_class(notebooks, release, solution, answer_ids)


def _spreadsheet_rows(report: SimilarityReport) -> List[list]:
    rows = []
    for pair in report.pairs + [report.solution[s] for s in sorted(report.solution)]:
        rows.append([pair.first, pair.second, round(pair.similarity, 3), round(pair.share_first, 3),
                     round(pair.share_second, 3), round(pair.shared_tokens), "yes" if pair.flagged else "no",
                     " ".join(pair.cells)])
    return rows


def write_csv(report: SimilarityReport, path) -> None:
    """similarity.csv: one row per pair with something in common, and one per student against the solution."""
    import csv

    from dlmed.grader.sanitize import spreadsheet_safe

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["first", "second", "similarity", "share_of_first", "share_of_second",
                         "shared_weighted_tokens", "flagged", "cells_in_common"])
        for row in _spreadsheet_rows(report):
            writer.writerow([spreadsheet_safe(value) for value in row])


#: Lines and characters per line shown of one cell in the side-by-side view.
SHOWN_LINES, SHOWN_CHARS = 200, 160
#: Side-by-side views in the page (the most similar pairs; all pairs are in similarity.csv).
SHOWN_PAIRS = 40


def _side(source: str, marked: Set[int]) -> str:
    import html

    lines = source.split("\n")
    shown = []
    for number, line in enumerate(lines[:SHOWN_LINES]):
        text = html.escape(line[:SHOWN_CHARS] + ("..." if len(line) > SHOWN_CHARS else ""))
        shown.append(f"<mark>{text}</mark>" if number in marked else text)
    if len(lines) > SHOWN_LINES:
        shown.append(html.escape(f"... ({len(lines) - SHOWN_LINES} more lines)"))
    return "<pre>" + "\n".join(shown) + "</pre>"


def side_by_side(report: SimilarityReport, pair: PairResult) -> str:
    """HTML: each cell the two have in common, their sources side by side, matching lines marked (escaped)."""
    import html

    parts = []
    for cell in pair.cells:
        left, right = matched_lines(report, pair.first, pair.second, cell)
        parts.append(f"<tr><th colspan='2'>{html.escape(cell)}</th></tr><tr>"
                     f"<td>{_side(report.prints[pair.first][cell].source, left)}</td>"
                     f"<td>{_side(report.prints[pair.second][cell].source, right)}</td></tr>")
    return (f"<table class='sbs'><tr><th>{html.escape(pair.first)}</th><th>{html.escape(pair.second)}</th></tr>"
            + "".join(parts) + "</table>")


def html_section(report: SimilarityReport) -> str:
    """The class report's section on copied work (every student-written text escaped)."""
    import html

    esc = html.escape
    flagged = report.flagged
    against_solution = [p for p in report.solution.values() if p.flagged]
    parts = [
        f"<h2 id='similarity'>Similar submissions ({len(flagged)} pairs flagged)</h2>",
        "<p>Only what students wrote is compared, exercise by exercise: the answer cells and written answers, "
        "without what the released notebook already contained. Code is compared as normalised Python tokens "
        "(names students chose, comments, strings, numbers and layout do not count), with winnowing "
        "fingerprints as MOSS, JPlag and Dolos use them, so renamed variables, moved lines and new comments "
        "do not hide a copy. <b>Weighting by length:</b> a cell counts with weight "
        f"(n &minus; {SHORT_TOKENS}) / {FULL_TOKENS - SHORT_TOKENS}, between 0 and 1, where n is the smaller "
        f"number of tokens the two students wrote there: answers of {SHORT_TOKENS} tokens or fewer (a one-line "
        f"accuracy that every correct student writes alike) count nothing, cells of {FULL_TOKENS} tokens or "
        "more count fully, and a longer cell has more fingerprints. <b>Similarity</b> is the weighted share "
        "of fingerprints the two have in common (of their mean number); a pair is flagged at "
        f"{100 * FLAG_SIMILARITY:.0f}% or more when they share at least {FLAG_SHARED_TOKENS} weighted tokens. "
        "A flag is a reason to look, not proof: the matching lines are marked below.</p>",
    ]
    if report.skipped:
        parts.append("<p>Not compared (no graded notebook): "
                     + ", ".join(esc(s) for s in sorted(report.skipped)) + ".</p>")
    top = flagged or report.pairs[:5]
    if top:
        parts.append("<table><tr><th>students</th><th>similarity</th><th>share of each</th>"
                     "<th>shared tokens</th><th>exercises in common</th></tr>")
        for pair in top:
            parts.append(f"<tr><td>{esc(pair.first)} &amp; {esc(pair.second)}{' (flagged)' if pair.flagged else ''}</td>"
                         f"<td class='num'>{100 * pair.similarity:.0f}%</td>"
                         f"<td class='num'>{100 * pair.share_first:.0f}% / {100 * pair.share_second:.0f}%</td>"
                         f"<td class='num'>{pair.shared_tokens:.0f}</td><td>{esc(', '.join(pair.cells))}</td></tr>")
        parts.append("</table>")
        if not flagged:
            parts.append("<p>No pair is flagged; the most similar pairs are listed for comparison.</p>")
    if len(flagged) > SHOWN_PAIRS:
        parts.append(f"<p>Side by side below: the {SHOWN_PAIRS} most similar flagged pairs.</p>")
    for pair in sorted(flagged, key=lambda p: -p.similarity)[:SHOWN_PAIRS]:
        parts.append(f"<details><summary>{esc(pair.first)} &amp; {esc(pair.second)}: "
                     f"{100 * pair.similarity:.0f}% similar, side by side</summary>{side_by_side(report, pair)}</details>")
    parts.append(f"<h3>Compared with the published solution ({len(against_solution)} flagged)</h3>")
    if against_solution:
        for pair in sorted(against_solution, key=lambda p: -p.similarity)[:SHOWN_PAIRS]:
            parts.append(f"<details><summary>{esc(pair.first)}: {100 * pair.similarity:.0f}% like "
                         f"solutions/, side by side</summary>{side_by_side(report, pair)}</details>")
    else:
        parts.append("<p>No submission is flagged as close to the published solution.</p>")
    parts.append("<p>All pairs and each student against the solution: similarity.csv.</p>")
    return "\n".join(parts)
