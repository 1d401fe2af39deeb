"""02_resample's candlestick panels: one x axis for the daily and silver panels (zoom one, all follow)."""

from __future__ import annotations

import datetime as dt

from condvest.calendar import last_n_sessions
from condvest.resample import ResampleParams, candlestick_figure, run_resample
from condvest.settings import Settings
from condvest.storage import open_store
from tests.fixtures.resample import write_history


def test_candlestick_panels_share_their_x_axis(tmp_path):
    settings = Settings(lake_uri=str(tmp_path / "lake"), runs_uri=str(tmp_path / "runs"))
    write_history(open_store(settings=settings), "AAA", last_n_sessions(dt.date(2025, 10, 17), 40), seed=1)
    run_resample(settings, ResampleParams(intervals="5,21")).raise_for_status()
    fig = candlestick_figure(settings, "AAA", intervals=(1, 5, 21))
    axes = [fig.layout[name] for name in ("xaxis", "xaxis2", "xaxis3")]
    assert [a.matches for a in axes] == ["x3", "x3", None], "every panel follows the bottom panel's x axis"
    assert [len(t.x) for t in fig.data] == [40, 8, 2]
