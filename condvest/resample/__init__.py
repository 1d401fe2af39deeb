"""02_resample: compaction of bronze, DuckDB resampling into Fibonacci-interval silver bars, the charts.

    compact_bronze(settings, CompactionParams(keep_sessions=10)) -> CompactionReport
    run_resample(settings, ResampleParams(intervals="3,5,8,13,21,34", force_full_resample=False)) -> ResampleReport
    checkpoint_table(settings) -> pandas.DataFrame
    read_bars(settings, symbol, interval) / candlestick_figure(...)      (the silver charts)

Modules: ``params`` (the parameters, checked once: ``ResampleParams.check() -> CheckedResample``,
``CompactionParams.check() -> CheckedCompaction``), ``run`` (the run), ``engine`` (the bar SQL), ``write`` (silver
month files), ``state`` (what the checkpoints name), ``compaction``, ``charts``, ``result``; the checkpoints
themselves (``condvest.checkpoints``), the DuckDB reading of bronze (``condvest.lake_read``) and the readable
export (``condvest.dms``) are the core's.
"""

from condvest.checkpoints import checkpoint_table
from condvest.resample.charts import candlestick_figure, default_symbol, read_bars
from condvest.resample.compaction import CompactionReport, compact_bronze
from condvest.resample.params import (
    DEFAULT_INTERVALS,
    CheckedCompaction,
    CheckedResample,
    CompactionParams,
    ResampleParams,
)
from condvest.resample.result import IntervalResult, ResampleReport
from condvest.resample.run import run_resample

__all__ = [
    "DEFAULT_INTERVALS",
    "CheckedCompaction",
    "CheckedResample",
    "CompactionParams",
    "CompactionReport",
    "IntervalResult",
    "ResampleParams",
    "ResampleReport",
    "candlestick_figure",
    "checkpoint_table",
    "compact_bronze",
    "default_symbol",
    "read_bars",
    "run_resample",
]
