"""The class grader (``dlmed grade``; README, "Grading a class"), in the order it works:

- :mod:`~dlmed.grader.classgrade`: :func:`grade_class` and the :class:`ClassGrader` that runs the steps;
- :mod:`~dlmed.grader.submissions`: finding submissions (LMS zips, students, fingerprints);
- :mod:`~dlmed.grader.lab`: the lab as the gradebook knows it;
- :mod:`~dlmed.grader.repair`: staging a submission, repairing what nbgrader cannot read;
- :mod:`~dlmed.grader.runner`: running notebooks in sandboxes, the reference check;
- :mod:`~dlmed.grader.sandbox`: isolation and limits for one notebook (``python -m dlmed.grader.sandbox``);
- :mod:`~dlmed.grader.zygote`: warm starts, sandboxes and kernels forked from a process with the libraries imported;
- :mod:`~dlmed.grader.executor`: executing a notebook in the sandbox, test cell by test cell;
- :mod:`~dlmed.grader.guard`: the integrity guard inside the student's kernel;
- :mod:`~dlmed.grader.seal`: the sealed fork of the kernel that runs the hidden tests;
- :mod:`~dlmed.grader.gradebook`: recording into nbgrader's gradebook with nbgrader's own code;
- :mod:`~dlmed.grader.journal`: the per-student journal that makes reruns resume;
- :mod:`~dlmed.grader.report`: the class report;
- :mod:`~dlmed.grader.sanitize`: student content made inert before a browser shows it.

A new grading rule goes into the step it belongs to. Nothing happens on import.
"""
