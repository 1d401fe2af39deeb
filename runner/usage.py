"""What a run used, in the units the cloud bills: vCPU-seconds and GB-seconds (BENCHMARKS.md turns them into dollars).

    meter = UsageMeter.start()        as the run starts (polls the process tree on a daemon thread)
    ...                               the notebook runs in its kernel (a child process), charts in Chromium
    usage = meter.stop()              Usage(vcpu_seconds=..., gb_seconds=..., peak_rss_gb=..., wall_s=...)

``vcpu_seconds``: CPU time (user + system) of the runner process and of every process below it (the kernel,
the chart browser, a shard's DuckDB threads), counted from the run's start: what a Fargate task of N vCPUs
actually kept busy. ``gb_seconds``: the peak of the tree's summed resident memory (GB, 10^9 bytes) times the
wall seconds: the memory a container must reserve for the run, for as long as it ran. Both are polled every
``interval`` seconds, so a process living shorter than that may be missed (its CPU is then not counted).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

#: seconds between two looks at the process tree
POLL_INTERVAL = 0.2


@dataclass(frozen=True)
class Usage:
    vcpu_seconds: float
    gb_seconds: float
    peak_rss_gb: float
    wall_s: float

    def as_record(self) -> dict[str, float]:
        """The run record's fields (``vcpu_seconds``, ``gb_seconds``)."""
        return {"vcpu_seconds": round(self.vcpu_seconds, 3), "gb_seconds": round(self.gb_seconds, 3)}


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


@dataclass
class UsageMeter:
    """Polls this process and its descendants from ``start()`` to ``stop()`` (see the module docstring)."""

    interval: float = POLL_INTERVAL
    _root: psutil.Process = field(default_factory=lambda: psutil.Process(os.getpid()))
    _t0: float = 0.0
    _self_cpu0: float = 0.0
    _base: dict[tuple[int, float], float] = field(default_factory=dict)  # child -> its CPU when first seen
    _last: dict[tuple[int, float], float] = field(default_factory=dict)  # child -> its CPU when last seen
    _peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _usage: Usage | None = None

    @classmethod
    def start(cls, interval: float = POLL_INTERVAL) -> UsageMeter:
        meter = cls(interval)
        meter._t0 = time.monotonic()
        meter._self_cpu0 = _cpu(meter._root)
        meter._poll(baseline=True)  # children already there (a kernel started ahead) count from now on
        meter._thread = threading.Thread(target=meter._loop, name="condvest-usage", daemon=True)
        meter._thread.start()
        return meter

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self, baseline: bool = False) -> None:
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            children = []
        rss = 0
        try:
            rss += self._root.memory_info().rss
        except psutil.Error:
            pass
        with self._lock:
            for p in children:
                try:
                    key = (p.pid, p.create_time())
                    cpu = _cpu(p)
                    rss += p.memory_info().rss
                except psutil.Error:  # it exited meanwhile: its last look counts
                    continue
                if key not in self._base:
                    self._base[key] = cpu if baseline else 0.0
                self._last[key] = cpu
            self._peak = max(self._peak, rss)

    def stop(self) -> Usage:
        """Stop polling; the run's usage from ``start()`` until now (the same figures when stopped again)."""
        if self._usage is not None:
            return self._usage
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()
        wall = time.monotonic() - self._t0
        with self._lock:
            children = sum(self._last[k] - self._base[k] for k in self._last)
            peak_gb = self._peak / 1e9
        cpu = _cpu(self._root) - self._self_cpu0 + children
        self._usage = Usage(vcpu_seconds=cpu, gb_seconds=peak_gb * wall, peak_rss_gb=peak_gb, wall_s=wall)
        return self._usage


def usage_fields(meter: UsageMeter | None) -> dict[str, Any]:
    """The run record's usage fields from ``meter`` (stopped here), or ``None`` values without one."""
    if meter is None:
        return {"vcpu_seconds": None, "gb_seconds": None}
    return meter.stop().as_record()
