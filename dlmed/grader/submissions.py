"""Finding the submissions of a lab: learning-platform zip exports, students, fingerprints.

Submissions are in ``submitted/<student>/<lab>/`` (put there by ``nbgrader collect``, by
hand, or from an LMS zip export by :func:`import_zips`). A submission's fingerprint changes
with any of its files, the lab and the limits, so the journal knows when to grade again.
"""

import hashlib
import shutil
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence

from dlmed import course
from dlmed.grader.journal import GRADER_VERSION


def check_zip(path: Path) -> None:
    """Refuse an archive whose members would land outside the folder it is extracted to."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise course.CourseError(f"{path}: the member {name!r} would be written outside the "
                                         f"extraction folder; refusing to import this zip")


def import_zips(root: Path, lab: str, zips: Sequence[Path], log_folder: Path) -> None:
    """Put LMS zip exports where ``nbgrader zip_collect`` looks and run it (its log in ``log_folder``)."""
    archive = root / "downloaded" / lab / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    for zip_path in zips:
        zip_path = Path(zip_path)
        if not zip_path.is_file():
            raise course.CourseError(f"no such zip file: {zip_path}")
        check_zip(zip_path)
        shutil.copy2(zip_path, archive / zip_path.name)
    course.run_nbgrader(["zip_collect", lab, "--force"], root, log_name=str(log_folder / "zip_collect.log"))


def list_students(submitted_folder: Path, lab: str, only: Optional[Sequence[str]] = None) -> List[str]:
    """Student ids with a folder for ``lab`` in ``submitted_folder`` (only those in ``only``, if given)."""
    found = sorted(p.parent.name for p in submitted_folder.glob(f"*/{lab}") if p.is_dir())
    if only:
        wanted = set(only)
        found = [s for s in found if s in wanted]
    return found


def fingerprint(folder: Path, lab_fingerprint: str, limits) -> str:
    """A digest of every file in the submission ``folder``, the lab and the limits (and the grader's version)."""
    digest = hashlib.sha256()
    digest.update(f"{GRADER_VERSION}|{lab_fingerprint}|{limits}\n".encode())
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
