"""The memory a container gives this process, and DuckDB's memory limit sized from it.

A Batch or Fargate job runs in a cgroup whose memory limit is the job's memory: a process that grows past it is
killed (OOM), so DuckDB's limit (``condvest.duck.connect``'s ``memory_limit``) must leave room for the rest of
the process (Python, pyarrow buffers, the kernel's own state: about 1 GB, README's
``CONDVEST_DUCKDB_MEMORY_LIMIT`` row). ``Settings.from_env`` takes ``default_memory_limit()`` when
``CONDVEST_DUCKDB_MEMORY_LIMIT`` is unset:

    no cgroup limit (a laptop, a plain host)    3GB, as before
    a limit of L (cgroup v2 memory.max, v1      max(L / 2, L - 1 GiB): a 2 GB container gives DuckDB 1 GB,
    memory.limit_in_bytes)                      an 8 GB one 7 GB
"""

from __future__ import annotations

from pathlib import Path

#: DuckDB's memory limit when the process has no container limit
UNLIMITED_DEFAULT = "3GB"
#: what the process needs beside DuckDB's buffers (BENCHMARKS.md: each process stays about 1 GB above the limit)
HEADROOM = 1 << 30
#: cgroup v1 writes a huge number (about 2^63, page-aligned) for "no limit"
_NO_LIMIT = 1 << 60
_V2 = "memory.max"
_V1 = "memory/memory.limit_in_bytes"


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit (bytes) of this process's cgroup under ``root`` (v2, then v1); ``None`` when there is
    none or it cannot be read."""
    for name in (_V2, _V1):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        if text.isdigit():
            value = int(text)
            return value if 0 < value < _NO_LIMIT else None
    return None


def memory_limit_for(limit: int | None) -> str:
    """DuckDB's memory limit in a container of ``limit`` bytes (``None``: no limit); see the module docstring."""
    if limit is None:
        return UNLIMITED_DEFAULT
    return f"{max(limit // 2, limit - HEADROOM) >> 20}MB"


def default_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> str:
    """DuckDB's memory limit sized from this process's container (``cgroup_memory_limit``)."""
    return memory_limit_for(cgroup_memory_limit(root))
