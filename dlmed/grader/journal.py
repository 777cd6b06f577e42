"""The class grader's journal: one JSON file per graded student, and the grading log.

``grading/<lab>/results/<student>.json`` records each finished student at once, with a
fingerprint of the submission, the lab and the limits; a rerun reuses the entries that are
still up to date (:meth:`Journal.up_to_date`), so an interrupted run continues where it
stopped. ``grading/<lab>/grade.log`` says, one line per event, what the grader did.
"""

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

#: Bump when a change of the grader can change scores: results of older versions are regraded.
GRADER_VERSION = "2"  # 2: a kernel that dies is restarted (one exercise lost, not the rest)

Scores = Dict[str, Tuple[Optional[float], float]]  # one student: {grade_id: (score, max score)}


@dataclasses.dataclass
class StudentResult:
    """One student's outcome, as the report and the journal keep it."""

    student: str
    status: str  # "graded", "not gradable", "grader error"
    scores: Scores = dataclasses.field(default_factory=dict)
    reason: str = ""
    notes: List[str] = dataclasses.field(default_factory=list)
    events: List[dict] = dataclasses.field(default_factory=list)
    failures: Dict[str, str] = dataclasses.field(default_factory=dict)  # test cell -> last line of its error
    seconds: float = 0.0
    hidden_seconds: List[float] = dataclasses.field(default_factory=list)  # each hidden-test part's sealed run
    peak_memory: int = 0
    fingerprint: str = ""
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per step (ClassGrader.record)
    reused: bool = False  # up to date from an earlier run

    @property
    def points(self) -> float:
        """Autograded points."""
        return sum(score or 0.0 for score, _ in self.scores.values() if score is not None)

    def to_json(self) -> dict:
        """The journal entry."""
        data = dataclasses.asdict(self)
        data.pop("reused")
        data["scores"] = {name: list(value) for name, value in self.scores.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> "StudentResult":
        """Read a journal entry."""
        data = dict(data)
        data["scores"] = {name: tuple(value) for name, value in data.get("scores", {}).items()}
        return cls(**data)


class Journal:
    """The journal of one lab's grading, in ``folder`` (``grading/<lab>``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.results_folder = self.folder / "results"

    def path(self, student: str) -> Path:
        """The journal entry of ``student``."""
        return self.results_folder / f"{student}.json"

    def write(self, outcome: StudentResult) -> None:
        """Record ``outcome`` (written under another name and renamed: never half an entry)."""
        path = self.path(outcome.student)
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(outcome.to_json(), indent=1), encoding="utf-8")
        os.replace(partial, path)

    def up_to_date(self, student: str, fingerprint: str, in_gradebook: bool,
                   autograded_notebook: Path) -> Optional[StudentResult]:
        """The recorded outcome of ``student`` if it still holds, else None (grade again).

        It holds when the entry is readable, made from the same ``fingerprint``, not a grader
        error, the gradebook has the submission and, for a graded one, the autograded
        notebook is still there.
        """
        path = self.path(student)
        if not path.is_file():
            return None
        try:
            result = StudentResult.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None
        if result.fingerprint != fingerprint or result.status == "grader error" or not in_gradebook:
            return None
        if result.status == "graded" and not autograded_notebook.is_file():
            return None
        result.reused = True
        return result

    def log(self, message: str) -> None:
        """Append a time-stamped line to grade.log."""
        with open(self.folder / "grade.log", "a", encoding="utf-8") as log:
            log.write(f"{datetime.datetime.now().isoformat(timespec='seconds')} {message}\n")
