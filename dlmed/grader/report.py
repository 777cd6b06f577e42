"""The class report of ``dlmed grade``: a CSV for the spreadsheet, a page for the debrief.

:func:`write_report` writes into ``grading/<lab>/``:

- ``scores.csv``: one row per student: status, autograded points, each test cell's score,
  time, memory, why a run stopped, the grader's notes (repairs, tampering);
- ``report.html``: a self-contained page (figures embedded) with the score histogram, the
  pass rate per exercise, the exercises most students failed with their most common
  failure messages, and the submissions that need the instructor's attention;
- ``figures/*.png``: the same figures as files, for slides;
- ``similarity.csv`` and a section of the page on copied work, when the grader compared the
  submissions (:mod:`dlmed.grader.similarity`).

Every text cell of the CSV files is made safe for spreadsheets
(:func:`dlmed.grader.sanitize.spreadsheet_safe`), every text on the page is escaped.
"""

import base64
import collections
import datetime
import html
import io
from pathlib import Path
from typing import Dict, List


#: Event kinds that mean the student's code did something the instructor should look at.
ATTENTION_EVENTS = {"tampering-undone", "changed-during-test", "result-removed", "stopped", "kernel-died", "timeout",
                    "output-truncated", "kernel-restarted"}


def _pass_rates(lab, outcomes) -> Dict[str, float]:
    graded = [o for o in outcomes if o.status != "grader error"]
    rates = {}
    for cell, points in lab.test_cells.items():
        passed = sum(1 for o in graded if (o.scores.get(cell, (0, points))[0] or 0) >= points)
        rates[cell] = passed / len(graded) if graded else 0.0
    return rates


def _percent(outcome, total_points) -> float:
    return 100.0 * outcome.points / total_points if total_points else 0.0


def _figures(lab, outcomes):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    total = sum(lab.test_cells.values())
    graded = [o for o in outcomes if o.status != "grader error"]
    figures = {}

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist([o.points for o in graded], bins=[x - 0.5 for x in range(int(total) + 2)], color="#4c72b0", edgecolor="white")
    ax.set_xlabel(f"autograded points (of {total:g})")
    ax.set_ylabel("students")
    ax.set_title(f"{lab.lab}: autograded scores of {len(graded)} submissions")
    ax.set_xlim(-0.5, total + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    figures["score_histogram"] = fig

    rates = _pass_rates(lab, outcomes)
    names = list(rates)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    colours = ["#c44e52" if rate < 0.5 else "#dd8452" if rate < 0.8 else "#55a868" for rate in rates.values()]
    ax.barh(range(len(names)), [100 * rates[n] for n in names], color=colours)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("students who passed the test (%)")
    ax.set_title(f"{lab.lab}: pass rate per exercise")
    fig.tight_layout()
    figures["pass_rate_per_exercise"] = fig
    return figures


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def attention(outcome) -> List[str]:
    """Why an instructor should look at this submission (empty: nothing unusual)."""
    reasons = []
    if outcome.status != "graded":
        reasons.append(f"{outcome.status}: {outcome.reason}")
    elif outcome.reason:
        reasons.append(f"run stopped: {outcome.reason}")
    reasons += outcome.notes
    for event in outcome.events:
        if event["kind"] in ATTENTION_EVENTS and event["kind"] != "stopped":
            reasons.append(f"{event['where']}: {event['kind']}: {'; '.join(event['details'])}")
    return reasons


def write_report(folder: Path, lab, outcomes, seconds: float, isolation: str, limits, jobs: int,
                 isolation_reason: str = "", similarity=None) -> Dict[str, Path]:
    """Write scores.csv, report.html, figures/ (and similarity.csv) into ``folder``; return their paths."""
    import pandas as pd

    from dlmed.grader.sanitize import spreadsheet_safe

    folder = Path(folder)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    total = sum(lab.test_cells.values())
    rows = []
    for outcome in outcomes:
        row = {"student": outcome.student, "status": outcome.status, "points": outcome.points,
               "max_points": total, "percent": round(_percent(outcome, total), 1)}
        for cell in lab.test_cells:
            row[cell] = outcome.scores.get(cell, (None, 0))[0]
        row.update({"seconds": round(outcome.seconds, 1), "peak_memory_mb": round(outcome.peak_memory / 2**20),
                    "stopped": outcome.reason, "notes": " | ".join(attention(outcome)[1 if outcome.status != "graded" else 0:])})
        rows.append({key: spreadsheet_safe(value) for key, value in row.items()})
    table = pd.DataFrame(rows)
    paths = {"csv": folder / "scores.csv", "html": folder / "report.html"}
    table.to_csv(paths["csv"], index=False)

    import matplotlib.pyplot as plt

    images = {}
    if outcomes:
        for name, fig in _figures(lab, outcomes).items():
            png = _png(fig)
            plt.close(fig)
            (folder / "figures" / f"{name}.png").write_bytes(png)
            paths[name] = folder / "figures" / f"{name}.png"
            images[name] = base64.b64encode(png).decode()
    page = _page(lab, outcomes, images, seconds, isolation, isolation_reason, limits, jobs)
    if similarity is not None:
        from dlmed.grader import similarity as similarity_module

        paths["similarity"] = folder / "similarity.csv"
        similarity_module.write_csv(similarity, paths["similarity"])
        page = page.replace("</body></html>", similarity_module.html_section(similarity) + "</body></html>")
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def _page(lab, outcomes, images, seconds, isolation, isolation_reason, limits, jobs) -> str:
    esc = html.escape
    total = sum(lab.test_cells.values())
    graded = [o for o in outcomes if o.status == "graded"]
    scores = sorted(o.points for o in outcomes if o.status != "grader error")
    median = scores[len(scores) // 2] if scores else 0
    mean = sum(scores) / len(scores) if scores else 0
    rates = _pass_rates(lab, outcomes)
    hardest = sorted(rates, key=lambda cell: rates[cell])[:5]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(lab.lab)}: class report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}"
        "th{background:#f3f3f3}.num{text-align:right}.low{color:#b00}"
        ".sbs td{vertical-align:top;max-width:30em;overflow-x:auto}.sbs pre{margin:0;font-size:80%}"
        "mark{background:#ffe08a}</style></head><body>",
        f"<h1>{esc(lab.lab)}: class report</h1>",
        f"<p>{len(outcomes)} submissions: {len(graded)} graded, "
        f"{sum(o.status == 'not gradable' for o in outcomes)} not gradable (scored 0), "
        f"{sum(o.status == 'grader error' for o in outcomes)} grader errors (not scored: grade again). "
        f"Autograded points: mean {mean:.1f}, median {median:g} of {total:g}. "
        f"Written answers are graded by hand in the formgrader.</p>",
        f"<p>Graded {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} in {seconds:.0f} s, {jobs} at a time; "
        f"isolation '{esc(isolation)}'; limits: {esc(limits.describe())}.</p>",
        f"<p class='isolation'>Isolation '{esc(isolation)}': {esc(isolation_reason)}</p>".replace("\n", "<br>"),
    ]
    for name, title in (("score_histogram", "Scores"), ("pass_rate_per_exercise", "Pass rate per exercise")):
        if name in images:
            parts.append(f"<h2>{title}</h2><img alt='{esc(title)}' src='data:image/png;base64,{images[name]}'>")
    parts.append("<h2>Exercises most students failed</h2><table><tr><th>test</th><th>passed</th>"
                 "<th>most common failure messages</th></tr>")
    for cell in hardest:
        messages = collections.Counter(o.failures[cell] for o in outcomes if cell in o.failures)
        common = "<br>".join(f"{count}&times; {esc(message[:200])}" for message, count in messages.most_common(3))
        parts.append(f"<tr><td>{esc(cell)}</td><td class='num'>{100 * rates[cell]:.0f}%</td><td>{common}</td></tr>")
    parts.append("</table>")
    flagged = [(o, attention(o)) for o in outcomes if attention(o)]
    parts.append(f"<h2>Needs your attention ({len(flagged)})</h2>")
    if flagged:
        parts.append("<table><tr><th>student</th><th>points</th><th>what happened</th></tr>")
        for outcome, reasons in flagged:
            items = "".join(f"<li>{esc(reason[:400])}</li>" for reason in reasons)
            parts.append(f"<tr><td>{esc(outcome.student)}</td><td class='num'>{outcome.points:g}</td><td><ul>{items}</ul></td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>Nothing unusual: every submission ran normally.</p>")
    parts.append("<h2>All students</h2><table><tr><th>student</th><th>status</th><th>points</th>"
                 + "".join(f"<th title='{esc(cell)}'>{i + 1}</th>" for i, cell in enumerate(lab.test_cells)) + "</tr>")
    for outcome in outcomes:
        cells = ""
        for cell, points in lab.test_cells.items():
            score = outcome.scores.get(cell, (None, points))[0]
            text = "" if score is None else f"{score:g}"
            cells += f"<td class='num{' low' if (score or 0) < points else ''}'>{text}</td>"
        parts.append(f"<tr><td>{esc(outcome.student)}</td><td>{esc(outcome.status)}</td>"
                     f"<td class='num'>{outcome.points:g}</td>{cells}</tr>")
    parts.append("</table><p>Columns 1, 2, ...: the test cells in notebook order (hover for the name).</p></body></html>")
    return "\n".join(parts)


def summary(lab, outcomes, seconds: float) -> str:
    """A few lines for the terminal."""
    total = sum(lab.test_cells.values())
    counts = collections.Counter(o.status for o in outcomes)
    reused = sum(o.reused for o in outcomes)
    scores = [o.points for o in outcomes if o.status != "grader error"]
    mean = sum(scores) / len(scores) if scores else 0.0
    lines = [f"{lab.lab}: {len(outcomes)} submissions in {seconds:.0f} s"
             + (f" ({reused} up to date from an earlier run)" if reused else "")
             + f"; mean {mean:.1f} of {total:g} autograded points."]
    if counts.get("not gradable"):
        lines.append(f"  {counts['not gradable']} not gradable (scored 0): see the report.")
    if counts.get("grader error"):
        lines.append(f"  {counts['grader error']} GRADER ERRORS (not scored): run the command again; "
                     f"details in grading/{lab.lab}/grade.log.")
    flagged = sum(1 for o in outcomes if attention(o))
    if flagged:
        lines.append(f"  {flagged} submissions need your attention (repairs, time limits, tampering): see the report.")
    return "\n".join(lines)
