"""nbgrader configuration for the workshop. Run nbgrader from this folder (the course root)."""

import os

from dlmed.course.grading import CELL_TIMEOUT_SECONDS, IGNORED_STDERR_PATTERN

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "dlmed-workshop"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.solution_directory = "solutions"

# The exchange (release, collect and feedback for the students' Assignment List): exchange/ in
# this folder when `./course.sh exchange` made it (one machine, no JupyterHub); otherwise
# nbgrader's default, /srv/nbgrader/exchange, or what the hub's configuration sets.
_course_exchange = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exchange")
if os.path.isdir(_course_exchange):
    c.Exchange.root = _course_exchange

# Per-cell limit for autograde and validate. In grading mode (NBGRADER_EXECUTION is set)
# the notebooks train for a few steps only, so this is a guard against endless loops.
c.Execute.timeout = CELL_TIMEOUT_SECONDS
c.Execute.interrupt_on_timeout = True

# Library warnings and progress bars on stderr must not zero a student's test cell.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = IGNORED_STDERR_PATTERN

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Solutions: no hidden tests, no solution markers, and no execution (executing would run the
# labs in lab mode, i.e. full training; solutions are handed out without outputs).
# Preprocessors are named by import strings, never passed as classes: the Formgrader shows this
# configuration as JSON ("Current configuration"), and classes there are not serialisable.
c.GenerateSolution.preprocessors = [
    "nbgrader.preprocessors.IncludeHeaderFooter",
    "nbgrader.preprocessors.LockCells",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.ClearMarkScheme",
    "dlmed.course.grading.HideHiddenTests",
    "dlmed.course.grading.StripSolutionMarkers",
]

# Everything a student controls (outputs, written answers, metadata) reaches an instructor's
# browser only as inert content (dlmed/grader/sanitize.py). First layer: the autograded notebooks
# themselves are cleaned, after execution and before scores are saved, so the Formgrader,
# feedback and any later viewer read clean files; `dlmed grade` runs the same steps.
c.Autograde.autograde_preprocessors = [
    "nbgrader.preprocessors.Execute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "dlmed.course.grading.SanitizeStudentContent",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Second layer: the HTML exporters that render notebooks clean them again (the Formgrader's
# exporter runs HTMLExporter.preprocessors; feedback runs GenerateFeedback.preprocessors) and
# let nbconvert sanitise HTML outputs too.
c.HTMLExporter.preprocessors = ["dlmed.course.grading.SanitizeStudentContent"]
c.HTMLExporter.sanitize_html = True

# Feedback HTML: no hidden test code, not even in tracebacks; student content made inert.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "dlmed.course.grading.HideHiddenTests",
    "dlmed.course.grading.SanitizeStudentContent",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

# `nbgrader zip_collect` (and `dlmed grade LAB --zip EXPORT.zip`): find student ids in the file
# names of Canvas and Moodle zip exports (see dlmed.course.grading.lms_submission); set
# c.FileNameCollectorPlugin.named_regexp to use your own regular expression instead.
c.ZipCollectApp.collector_plugin = "dlmed.course.grading.LmsCollector"
