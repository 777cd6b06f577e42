"""The ``dlmed`` command: build the course and check the reference grades.

    dlmed build     regenerate release/ and solutions/ from source/
    dlmed check     autograde each lab's solution and blank notebook, print the score table
    dlmed all       both
"""

import argparse
import sys
from pathlib import Path

from dlmed import course


def main(argv=None) -> int:
    """Entry point of the ``dlmed`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dlmed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "check", "all"])
    parser.add_argument("--lab", action="append", help="only this lab (repeatable); default: every lab in source/")
    parser.add_argument("--root", type=Path, default=None, help="course root (default: found from the current folder)")
    args = parser.parse_args(argv)
    try:
        root = course.find_course_root(args.root)
        if args.command in ("build", "all"):
            print(f"Regenerating release/ and solutions/ in {root} ...", flush=True)
            course.generate(root, args.lab)
            print("release/ and solutions/ are up to date.", flush=True)
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
