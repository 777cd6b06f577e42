"""The ``dlmed`` command: build the course, check the reference grades, grade a class.

    dlmed build          regenerate release/ and solutions/ from source/
    dlmed check          autograde each lab's solution and blank notebook, print the score table
    dlmed all            both
    dlmed grade LAB      grade every submission of LAB: sandboxed, in parallel, resumable;
                         feedback and a class report (README: "Grading a class")
    dlmed export LAB     the gradebook of LAB (autograded and hand-graded) as CSV files for
                         Canvas's and Moodle's gradebook import, and nbgrader's grades.csv
"""

import argparse
import sys
from pathlib import Path

from dlmed import course


def _grade_parser(subparsers, common):
    from dlmed.grader.sandbox import Limits

    defaults = Limits()
    grade = subparsers.add_parser(
        "grade", parents=[common], help="grade every submission of a lab (sandboxed, parallel, resumable)",
        description="Grade every submission of LAB in submitted/<student>/LAB/ (or in LMS zip exports): "
                    "each in its own sandbox with limits, several at a time; scores go to nbgrader's "
                    "gradebook, feedback to feedback/, the class report to grading/LAB/. An interrupted "
                    "run continues where it stopped when started again.")
    grade.add_argument("lab", help="the assignment id, e.g. lab1")
    grade.add_argument("--jobs", "-j", type=int, default=None, help="submissions graded at a time (default: number of cores)")
    grade.add_argument("--zip", action="append", default=[], type=Path, metavar="FILE",
                       help="a zip export of a learning platform to import first with nbgrader zip_collect (repeatable)")
    grade.add_argument("--force", action="store_true", help="grade again submissions that are up to date")
    grade.add_argument("--student", action="append", default=None, help="only this student (repeatable)")
    grade.add_argument("--no-feedback", action="store_true", help="do not run nbgrader generate_feedback afterwards")
    grade.add_argument("--skip-reference-check", action="store_true",
                       help="do not first check that the instructor's solution passes every test in the sandbox")
    grade.add_argument("--cell-timeout", type=int, default=defaults.cell_timeout, metavar="S",
                       help=f"seconds one cell may run (default {defaults.cell_timeout})")
    grade.add_argument("--notebook-timeout", type=int, default=defaults.notebook_timeout, metavar="S",
                       help=f"seconds a whole notebook may run (default {defaults.notebook_timeout})")
    grade.add_argument("--memory", type=float, default=defaults.memory_bytes / 2**30, metavar="GIB",
                       help=f"memory per submission in GiB (default {defaults.memory_bytes / 2**30:g})")
    grade.add_argument("--max-processes", type=int, default=defaults.max_processes, metavar="N",
                       help=f"processes and threads per submission (default {defaults.max_processes})")
    grade.add_argument("--max-file-size", type=float, default=defaults.max_file_bytes / 2**20, metavar="MIB",
                       help=f"largest file a submission may write, in MiB (default {defaults.max_file_bytes / 2**20:g})")
    grade.add_argument("--isolation", choices=["auto", "namespaces", "bubblewrap", "seatbelt", "basic"], default="auto",
                       help="'namespaces' (Linux as root) or 'bubblewrap' (Linux without root, with bwrap): "
                            "no network, no course files; 'seatbelt' (macOS, sandbox-exec: most of that); "
                            "'basic': limits only; "
                            "default: the strongest this machine allows (the run says which and why)")
    grade.add_argument("--data-dir", type=Path, default=None,
                       help="data folder the kernels read (default: $DLMED_DATA or ~/dlmed-data)")
    grade.add_argument("--hide", action="append", default=[], type=Path, metavar="DIR",
                       help="another folder the kernels must not see (repeatable)")
    grade.add_argument("--no-progress", action="store_true", help="no progress bar")
    grade.add_argument("--cold-start", action="store_true",
                       help="start every kernel from scratch instead of forking it from one that has the "
                            "libraries imported (slower; warm starts are used only with 'namespaces')")


def _grade(root: Path, args) -> int:
    import os

    from dlmed.grader.sandbox import Limits, skip_uri_grammar

    skip_uri_grammar()  # before nbformat is imported: the grader starts its zygote 1.5 s sooner
    from dlmed.grader.classgrade import GradeSettings, grade_class

    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    memory_bytes=int(args.memory * 2**30), max_processes=args.max_processes,
                    max_file_bytes=int(args.max_file_size * 2**20))
    settings = GradeSettings(
        lab=args.lab, jobs=args.jobs or os.cpu_count() or 1, limits=limits, isolation=args.isolation,
        force=args.force, zips=args.zip, feedback=not args.no_feedback, check_reference=not args.skip_reference_check,
        data_dir=args.data_dir, students=args.student, progress=not args.no_progress, hide=args.hide,
        warm_start=not args.cold_start)
    try:
        outcomes = grade_class(root, settings)
    except KeyboardInterrupt:
        print("\nInterrupted. What was graded is recorded; run the same command again to continue.",
              file=sys.stderr)
        return 130
    return 1 if any(o.status == "grader error" for o in outcomes) else 0


def _export_parser(subparsers, common):
    export = subparsers.add_parser(
        "export", parents=[common], help="write LAB's grades for Canvas's and Moodle's gradebook import",
        description="Read LAB's grades from nbgrader's gradebook (autograded plus the written answers graded "
                    "in the Formgrader) and write grading/LAB/export/: canvas.csv (Canvas: Grades, Import), "
                    "moodle.csv (Moodle: the assignment's Upload grading worksheet), moodle_gradebook.csv "
                    "(Moodle: Grades, Import, CSV file; students with an e-mail in the gradebook) and "
                    "grades.csv (nbgrader's export layout). Students imported from a Canvas or Moodle zip "
                    "keep the platform's id.")
    export.add_argument("lab", help="the assignment id, e.g. lab1")
    export.add_argument("--canvas-assignment", default=None, metavar="TITLE",
                        help="the grade column's header in canvas.csv: 'Lab 1 (12345)' fills Canvas assignment "
                             "12345; a title alone makes a new assignment (default: LAB)")


def main(argv=None) -> int:
    """Entry point of the ``dlmed`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dlmed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=None, help="course root (default: found from the current folder)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "regenerate release/ and solutions/ from source/"),
                       ("check", "autograde each lab's solution and blank notebook"), ("all", "build, then check")):
        sub = subparsers.add_parser(name, parents=[common], help=text)
        sub.add_argument("--lab", action="append", help="only this lab (repeatable); default: every lab in source/")
    _grade_parser(subparsers, common)
    _export_parser(subparsers, common)
    args = parser.parse_args(argv)
    try:
        root = course.find_course_root(args.root)
        if args.command == "grade":
            return _grade(root, args)
        if args.command == "export":
            from dlmed.grader.export import export_lab

            export_lab(root, args.lab, args.canvas_assignment)
            return 0
        if args.command in ("build", "all"):
            print(f"Regenerating release/ and solutions/ in {root} ...", flush=True)
            course.generate(root, args.lab)
            print("release/ and solutions/ regenerated from source/.", flush=True)
        if args.command in ("check", "all"):
            print("Autograding the reference solutions and the blank notebooks (grading mode) ...", flush=True)
            ok, report = course.check_reference(root, root / "build" / "reference-grading", args.lab)
            print(report)
            print("\nReference grades as expected." if ok else "\nReference grades NOT as expected.")
            return 0 if ok else 1
    except course.CourseError as error:
        print(f"dlmed {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
