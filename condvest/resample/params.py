"""02_resample's parameters, checked once (pure, no I/O): ``ResampleParams(...).check() -> CheckedResample`` and
``CompactionParams(...).check() -> CheckedCompaction``, or ``ParameterError`` naming the parameter."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from condvest import params
from condvest.shards import Shard

__all__ = ["DEFAULT_INTERVALS", "CheckedCompaction", "CheckedResample", "CompactionParams", "ResampleParams"]

DEFAULT_INTERVALS = "3,5,8,13,21,34"


@dataclass(frozen=True)
class ResampleParams:
    """02_resample's parameters. ``intervals``: bar lengths in sessions (``"3,5,8"`` or ints);
    ``force_full_resample``: recompute every bar instead of only what changed; ``shard``/``shard_group``: one
    part of a sharded full rebuild or its commit (``condvest.resample.sharded``); the notebook's other
    parameters, checked here too so that a bad one stops the run before compaction writes anything:
    ``compact``, ``compact_keep_sessions`` and the chart's ``symbol`` ("" : the first symbol)."""

    intervals: str | Iterable[int] = DEFAULT_INTERVALS
    force_full_resample: bool = False
    compact: bool = True
    compact_keep_sessions: int = 10
    symbol: str = ""
    shard: str = ""
    shard_group: str = ""

    def check(self) -> CheckedResample:
        """Every parameter checked (``ParameterError`` before any write)."""
        force = params.flag(self.force_full_resample, "force_full_resample")
        compact = params.flag(self.compact, "compact")
        keep = params.count(self.compact_keep_sessions, "compact_keep_sessions", 0)
        symbol = params.symbol(self.symbol, "symbol") if self.symbol != "" else ""
        shard = self.sharding()
        return CheckedResample(params.intervals(self.intervals), force, compact, keep, symbol, shard)

    def sharding(self) -> Shard | None:
        """The shard of a sharded full rebuild (``shard="I/N"`` stages part I, ``"commit/N"`` writes silver;
        ``shard_group``: the id they share), or ``None``."""
        return Shard.parse(self.shard, self.shard_group)

    @property
    def compacts(self) -> bool:
        """Whether the notebook compacts bronze first: never in a shard (it would delete shared objects)."""
        shard = self.sharding()
        return bool(self.compact) and (shard is None or shard.is_commit)


@dataclass(frozen=True)
class CheckedResample:
    """``ResampleParams`` parsed: the intervals sorted and unique, the shard parsed (``None``: not sharded)."""

    intervals: tuple[int, ...]
    force_full_resample: bool = False
    compact: bool = True
    compact_keep_sessions: int = 10
    symbol: str = ""
    shard: Shard | None = None

    @property
    def compacts(self) -> bool:
        """Whether the notebook compacts bronze first: never in a shard (it would delete shared objects)."""
        return self.compact and (self.shard is None or self.shard.is_commit)


@dataclass(frozen=True)
class CompactionParams:
    """``keep_sessions``: the newest session dates that stay as daily files; ``min_fold_sessions``: fold only
    once at least this many dates are due (so histories are rewritten every few sessions, not daily)."""

    keep_sessions: int = 10
    min_fold_sessions: int = 5

    def check(self) -> CheckedCompaction:
        keep = params.count(self.keep_sessions, "keep_sessions", 0)
        return CheckedCompaction(keep, max(1, params.count(self.min_fold_sessions, "min_fold_sessions", 0)))


@dataclass(frozen=True)
class CheckedCompaction:
    """``CompactionParams`` checked; ``min_fold_sessions`` is at least 1."""

    keep_sessions: int
    min_fold_sessions: int
