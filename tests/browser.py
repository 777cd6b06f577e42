"""What the real-browser tests share: Debian's Chromium through Playwright, and JupyterLab servers.

The tests skip, with the reason, where the browser or Playwright is missing (``.ci/run``
installs chromium; Playwright is in the ``browser`` extra). Screenshots go to
build/test-artefacts/browser/ for a person to look at.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
#: Screenshots of every page visited, for a person to look at.
ARTEFACTS = PROJECT_ROOT / "build" / "test-artefacts" / "browser"


def browser_or_skip():
    """Playwright's sync API, or skip the test when Chromium or Playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    return pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[browser]')")


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, log: Optional[Path] = None, env: Optional[dict] = None, user: Optional[tuple] = None):
    """JupyterLab serving ``root`` on a free port; yields (base URL, token).

    ``env`` replaces the environment (default: this process's); ``user`` is (uid, gid) to run
    the server as another Unix user (this process must be root). A server run as root gets
    ``--allow-root``. The server is stopped by its process group when the block ends.
    """
    port, token = free_port(), uuid.uuid4().hex
    log = Path(log or Path(root) / "jupyterlab.log")
    as_root = (user[0] if user else os.geteuid()) == 0
    identity = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", *(["--allow-root"] if as_root else []), "--no-browser",
             f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}"],
            cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **identity)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
