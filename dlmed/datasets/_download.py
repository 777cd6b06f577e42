"""How every data module gets a published file into the data folder: the one download mechanism.

Downloading, checking and caching is done by `pooch <https://www.fatiando.org/pooch>`_ (the
library SciPy, scikit-image and MNE use for the same job): it streams the file to a
temporary name in the data folder, checks its checksum (sha256 or md5), and renames it into
place only when it matches, so an interrupted or damaged download never looks finished.
What is added here: files already in the data folder are used as they are (so a read-only
folder such as a shared offline mirror works, and nothing is fetched twice), ``file://``
addresses are copied (a course's own mirror, and the tests), and every failure becomes one
short :class:`~dlmed.datasets.DataUnavailableError` (no chained tracebacks) whose first
lines tell a student how to go on.
"""

import dataclasses
import shutil
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse
from urllib.request import url2pathname

from dlmed.datasets import DataUnavailableError, usual_permissions


@dataclasses.dataclass(frozen=True)
class Remote:
    """Where a data set's file is published and how to recognise it.

    Attributes:
        url: the canonical address (``https://...``; ``file://...`` is copied).
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``, as pooch writes it; ``None`` where
            the publisher gives none and none could be taken here (the data module then
            checks the file's content instead, e.g. ``dsb2018``).
        filename: the file's name in the data folder.
    """

    url: str
    checksum: Optional[str]
    filename: str

    @property
    def algorithm(self) -> str:
        """The checksum's algorithm, e.g. ``"md5"`` (``"sha256"`` when there is no checksum)."""
        return self.checksum.split(":", 1)[0] if self.checksum else "sha256"

    @property
    def digest(self) -> Optional[str]:
        """The checksum's hexadecimal value, or ``None`` when none is known."""
        return self.checksum.split(":", 1)[1] if self.checksum else None


def file_checksum(path: Path, algorithm: str) -> str:
    """Return the hexadecimal checksum of the file at ``path`` (``algorithm``: "md5", "sha256")."""
    import pooch  # here, so that importing a data module does not import requests

    return pooch.file_hash(str(path), alg=algorithm)


def matches(remote: Remote, path: Path) -> bool:
    """True if the file at ``path`` has the checksum ``remote`` publishes (always, when none is known)."""
    if remote.checksum is None:
        return True
    return file_checksum(path, remote.algorithm) == remote.digest


def by_hand(remote: Remote, root: Path) -> str:
    """Lines saying how to download ``remote`` on another machine and where to put it."""
    if remote.checksum is None:
        return (
            f"  To get it by hand: on a machine with internet, download\n"
            f"    {remote.url}\n"
            f"  and copy it as {remote.filename} into {root} (its content is checked when it is read)"
        )
    return (
        f"  To get it by hand: on a machine with internet, download\n"
        f"    {remote.url}\n"
        f"  check that its {remote.algorithm.upper()} checksum is {remote.digest}, and copy it as\n"
        f"  {remote.filename} into {root}"
    )


def unavailable(what: str, root: Path, reason: str, how_to_get: str) -> DataUnavailableError:
    """The one error a student sees when a data set is missing (raise it ``from None``).

    First line: what is missing and why; then the notebook's switch to the synthetic
    stand-in, the data folder (``DLMED_DATA``), and ``how_to_get`` (by-hand instructions).
    """
    return DataUnavailableError(
        f"{what} is not on this machine: {reason}.\n"
        f"  To practise without it, set USE_SYNTHETIC_DATA = True in the notebook's data cell and run\n"
        f"  it again (a synthetic stand-in with the same layout; NOT medical data).\n"
        f"  To use the real data, put it into your data folder {root} (the folder named by the\n"
        f"  environment variable DLMED_DATA, else ~/dlmed-data; in Jupyter, restart the kernel\n"
        f"  after changing DLMED_DATA).\n"
        f"{how_to_get}"
    )


def _short(error: Exception, limit: int = 160) -> str:
    """The error as one short line (requests' messages can run to several hundred characters)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _copy_local_file(url, output_file, pooch_instance, check_only=False):
    """A pooch downloader for ``file://`` addresses: copy the file (or say whether it exists)."""
    source = Path(url2pathname(urlparse(url).path))
    if check_only:
        return source.is_file()
    shutil.copyfile(source, output_file)
    return None


def _downloader(url: str, show_progress: bool):
    """The pooch downloader for ``url``: pooch's HTTP(S) one (with its time-out), or a copy for file://."""
    import pooch

    if urlparse(url).scheme == "file":
        return _copy_local_file
    return pooch.HTTPDownloader(progressbar=show_progress)


def download(what: str, remote: Remote, root: Path, how_to_get: str, allow_download: bool = True,
             show_progress: bool = True) -> Path:
    """Download ``remote`` into ``root`` (created if needed), check it, and return its path.

    Callers look for a file already in ``root`` first; this is for when there is none.
    ``what`` names the data set and ``how_to_get`` ends the error message (see :func:`by_hand`).

    Raises:
        DataUnavailableError: downloads are off or the download failed (offline, server
            error, time-out); the message says how to go on. Raised without a chain.
        ValueError: the downloaded file's checksum is wrong; nothing is left behind.
        PermissionError: ``root`` cannot be written to.
    """
    import pooch

    root = Path(root)
    if not allow_download:
        raise unavailable(what, root, f"it is not in {root} and downloads are switched off (allow_download=False)",
                          how_to_get) from None
    try:
        path = Path(pooch.retrieve(remote.url, remote.checksum, fname=remote.filename, path=root,
                                   downloader=_downloader(remote.url, show_progress)))
    except PermissionError:
        raise  # the data folder is not writable: its own message names the folder
    except ValueError as error:  # pooch: the checksum of the download does not match
        raise ValueError(
            f"The file downloaded from {remote.url} is damaged or not the expected one ({error}). "
            f"It was deleted (it would have been {root / remote.filename}). Run again to retry; if it "
            f"keeps happening, download it with a browser, check its checksum, and copy it there."
        ) from None
    except OSError as error:  # requests' connection errors, time-outs and HTTP errors are OSErrors
        raise unavailable(what, root, f"it is not in {root} and could not be downloaded ({_short(error)})",
                          how_to_get) from None
    usual_permissions(path)  # pooch's temporary file was private; others may share this folder
    return path
