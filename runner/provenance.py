"""What produced a run: the code version (git commit of the project, else the installed package's version)
and the host, for the run log's header."""

from __future__ import annotations

import functools
import socket
import subprocess
from importlib import metadata
from pathlib import Path


@functools.lru_cache(maxsize=8)
def code_version(root: Path) -> str:
    """``git describe --always --dirty`` of ``root`` (e.g. ``fb9f7a7-dirty``), else ``condvest <version>``."""
    try:
        r = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=10"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if r.returncode == 0 and r.stdout.strip():
            return f"git {r.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return f"condvest {metadata.version('condvest')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def host() -> str:
    return socket.gethostname()
