"""02_resample's charts read only the silver month files they show, and show the same bars as a full read."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from condvest.calendar import sessions_between
from condvest.resample import ResampleParams, candlestick_figure, read_bars, run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import write_history

DAYS = sessions_between(dt.date(2021, 1, 4), dt.date(2024, 6, 28))


class CountingStore(LocalStore):
    """A local store that remembers the objects read (a test double of the test's own)."""

    def __init__(self, root) -> None:  # noqa: ANN001
        super().__init__(root)
        self.urls: list[str] = []

    def get(self, key: str) -> bytes:
        self.urls.append(key)
        return super().get(key)


def test_a_chart_of_the_last_year_reads_about_a_year_of_month_files(tmp_path):
    store = CountingStore(tmp_path / "lake")
    settings = Settings(lake_uri=str(store.root))
    write_history(store, "AAA", DAYS, 1)
    write_history(store, "BBB", DAYS[200:], 2)
    run_resample(settings, ResampleParams("5,21"), store=store)

    since = dt.date(2023, 6, 1)
    full = read_bars(settings, "AAA", 5, store=store)
    every = pd.concat(pd.read_parquet(p) for p in sorted((store.root / "silver" / "silver_5d").rglob("*.parquet")))
    every = every[every["symbol"] == "AAA"].sort_values("date").reset_index(drop=True)
    assert list(full.columns) == ["symbol", "date", "open", "high", "low", "close", "volume", "sessions"]
    for col in ("open", "high", "low", "close", "volume", "sessions"):  # a full read is every month file's bars
        assert full[col].tolist() == every[col].tolist(), col
    assert list(pd.to_datetime(full["date"])) == list(pd.to_datetime(every["date"]))
    store.urls.clear()
    part = read_bars(settings, "AAA", 5, since=since, store=store)
    months = {u for u in store.urls if "/silver_5d/" in u}
    assert 12 <= len(months) <= 14, months  # June 2023 .. June 2024, not 42 months
    want = full[pd.to_datetime(full["date"]).dt.date >= since].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.reset_index(drop=True), want)

    fig = candlestick_figure(settings, "AAA", intervals=(1, 5, 21), last_days=365, store=store)
    for trace, n in zip(fig.data, (1, 5, 21), strict=True):
        bars = read_bars(settings, "AAA", n, store=store)
        end = pd.to_datetime(bars["date"]).max()
        shown = bars[pd.to_datetime(bars["date"]) > end - pd.Timedelta(days=365)]
        assert list(pd.to_datetime(pd.Series(trace.x))) == list(pd.to_datetime(shown["date"])), f"{n}d panel"
