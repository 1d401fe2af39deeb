"""Whether the process a record names is alive, asked of the one who can know: this host's kernel.

A record (a lake lock's holder, a run's ``running`` index record) names its process with ``host`` (the host name),
``pid`` and ``pid_started`` (the process's start time in clock ticks since boot, from ``/proc/<pid>/stat`` on
Linux; ``None`` elsewhere), so that a pid reused by another process after a reboot or a wrap-around is not taken
for the recorded one. A record of another host cannot be checked here (``process_alive`` answers ``None``): its
readers fall back on the age of the record by the store's clock.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def host_name() -> str:
    return socket.gethostname()


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22); ``None`` when there is no
    such process, it is a zombie, or the system has no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def this_process() -> dict[str, Any]:
    """``host``, ``pid`` and ``pid_started`` of this process, as records name it."""
    pid = os.getpid()
    return {"host": host_name(), "pid": pid, "pid_started": process_started(pid)}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def process_alive(rec: dict[str, Any]) -> bool | None:
    """Whether the process ``rec`` names (``host``, ``pid``, optionally ``pid_started``) is alive: ``True``/``False``
    for a process of this host, ``None`` when the record names another host or no usable pid (unknown here)."""
    pid, host = rec.get("pid"), rec.get("host")
    if not isinstance(host, str) or host != host_name() or isinstance(pid, bool) or not isinstance(pid, int):
        return None
    if pid <= 0:
        return None
    if not _pid_exists(pid):
        return False
    started, recorded = process_started(pid), rec.get("pid_started")
    if os.path.isdir("/proc") and started is None:
        return False  # a zombie: it ended, its parent has not collected it yet
    if isinstance(recorded, int) and not isinstance(recorded, bool) and started is not None:
        return started == recorded  # another process that got the same pid is not the recorded one
    return True
