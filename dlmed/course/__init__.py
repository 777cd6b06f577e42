"""The course author's tooling: building the course, the students' self-check, the ``dlmed`` command.

- :mod:`dlmed.course.build`: regenerate ``release/`` and ``solutions/`` with nbgrader,
  autograde in a scratch course, read and print score tables (``dlmed build``/``check``/``all``).
- :mod:`dlmed.course.grading`: the nbgrader glue: what nbgrader, the self-check and the class
  grader share (test cells, nbgrader's failure rule, time limits), nbgrader preprocessors
  and the LMS zip collector, named in ``nbgrader_config.py``.
- :mod:`dlmed.course.selfcheck`: the pytest plugin behind ``pytest release/lab1``.
- :mod:`dlmed.course.cli`: the ``dlmed`` command (``build``, ``check``, ``all``, ``grade``).

The build steps are also reachable as ``dlmed.course.<name>`` (``from dlmed import course``;
``course.generate(root)``), which is how the tests, the benchmarks and the class grader
call them. Nothing happens on import: nbgrader is imported only when a step needs it.
"""

from dlmed.course.build import (
    CourseError,
    Scores,
    add_submission,
    autograde,
    autograde_total,
    check_reference,
    find_course_root,
    format_score_table,
    generate,
    lab_notebook_name,
    list_labs,
    make_workspace,
    read_scores,
    run_nbgrader,
)

__all__ = [
    "CourseError", "Scores", "add_submission", "autograde", "autograde_total", "check_reference",
    "find_course_root", "format_score_table", "generate", "lab_notebook_name", "list_labs",
    "make_workspace", "read_scores", "run_nbgrader",
]
