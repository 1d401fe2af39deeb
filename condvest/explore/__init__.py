"""06_explore: read-only research over the lake with DuckDB (nothing is written, not even a checkpoint).

    lake = open_lake(settings, ExploreParams(symbols="AAPL,MSFT", interval=5, start=None, end=None))
    lake.views()                      the views: ``daily`` (bronze, deduplicated) and ``silver_<N>d``, with rows
    lake.bars(symbol, interval)       one symbol's bars in [start, end]
    lake.sql("...")                   your own query over those views, as a DataFrame
    candles_figure(lake, symbol)      candlesticks with volume underneath (shared x axis)
    intervals_figure(lake, symbol)    the same period at several intervals, side by side
    shape_figure(lake)                symbols per year in bronze
    lake.raise_for_status()           ParameterError naming a listed symbol without any bar in the lake

Modules: ``params`` (the parameters, checked once: ``ExploreParams.check() -> CheckedExplore``), ``lake`` (the
DuckDB views and queries), ``charts`` (plotly figures).
"""

from condvest.explore.charts import candles_figure, intervals_figure, shape_figure
from condvest.explore.lake import LakeViews, open_lake
from condvest.explore.params import CheckedExplore, ExploreParams

__all__ = [
    "CheckedExplore",
    "ExploreParams",
    "LakeViews",
    "candles_figure",
    "intervals_figure",
    "open_lake",
    "shape_figure",
]
