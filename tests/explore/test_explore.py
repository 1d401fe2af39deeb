"""06_explore: DuckDB views over bronze and silver, the figures, and the notebook run by the runner writing
nothing to the lake."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from condvest.calendar import last_n_sessions, sessions_between
from condvest.errors import ParameterError
from condvest.explore import ExploreParams, candles_figure, intervals_figure, open_lake, shape_figure
from condvest.resample import ResampleParams, run_resample
from condvest.settings import Settings
from condvest.storage import open_store
from runner.execute import RunOptions, run_notebook
from tests.fixtures.paths import ROOT
from tests.fixtures.resample import write_daily, write_history

DAYS = last_n_sessions(dt.date(2025, 10, 17), 60)


def _lake_state(root) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(folder, f))
            out[os.path.relpath(os.path.join(folder, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def small_lake(tmp_path):
    settings = Settings(lake_uri=str(tmp_path / "lake"), runs_uri=str(tmp_path / "runs"), home=tmp_path / ".condvest")
    store = open_store(settings=settings)
    write_history(store, "AAA", DAYS[:50], seed=1)
    write_history(store, "BBB", DAYS[20:55], seed=2)
    for d in DAYS[50:]:
        write_daily(store, "AAA", d, seed=3)
    run_resample(settings, ResampleParams(intervals="3,5")).raise_for_status()
    return settings


def test_views_hold_bronze_deduplicated_and_each_silver_interval(small_lake):
    store = open_store(settings=small_lake)
    before = {o.key: o.etag for o in store.list("")}
    with open_lake(small_lake, ExploreParams(symbols="aaa", interval=5)) as lake:
        views = lake.views().set_index("view")
        assert list(views.index) == ["daily", "silver_3d", "silver_5d"]
        assert views.loc["daily", "rows"] == 60 + 35 and views.loc["daily", "symbols"] == 2
        assert views.loc["silver_5d", "rows"] == 12 + 7  # AAA 60 sessions, BBB 35
        assert lake.symbols == ("AAA",)
        bars = lake.bars("AAA")
        assert len(bars) == 12 and set(bars["sessions"]) == {5}
        assert bars["volume"].sum() == pytest.approx(lake.bars("AAA", 1)["volume"].sum())
        assert lake.sql("SELECT count(*) AS n FROM silver_3d WHERE symbol = $s", {"s": "BBB"}).n[0] == 12
        per_year = lake.symbols_per_year()
        assert per_year["rows"].sum() == 95
        candles = candles_figure(lake)
        assert [t.type for t in candles.data] == ["candlestick", "bar"]
        assert candles.layout.xaxis.matches == "x2" or candles.layout.xaxis2.matches == "x"
        side = intervals_figure(lake, "AAA", (1, 3, 5, 21))
        assert [t.type for t in side.data] == ["candlestick"] * 3, "an interval without silver bars is left out"
        assert shape_figure(lake).data[0].type == "bar"
        with pytest.raises(ParameterError, match="interval"):
            lake.bars("AAA", 8)
    assert {o.key: o.etag for o in store.list("")} == before


def test_window_parameters_are_checked_and_applied(small_lake):
    with pytest.raises(ParameterError, match="end"):
        open_lake(small_lake, ExploreParams(start="2025-10-01", end="2025-09-01"))
    with open_lake(
        small_lake, ExploreParams(symbols="AAA", interval=1, start=DAYS[10].isoformat(), end=DAYS[19].isoformat())
    ) as lake:
        assert len(lake.bars("AAA")) == 10


def test_raise_for_status_names_a_listed_symbol_without_bars(small_lake):
    with open_lake(small_lake, ExploreParams(symbols="AAA,ZZZ,YYY", compare="3,1")) as lake:
        assert lake.params.compare == (1, 3)
        assert lake.bars("ZZZ").empty  # its charts are empty: the run fails at its end, naming it
        with pytest.raises(ParameterError, match="no bar in the lake for YYY, ZZZ") as err:
            lake.raise_for_status()
        assert err.value.parameter == "symbols"
    with open_lake(small_lake, ExploreParams(symbols="AAA,BBB")) as lake:
        lake.raise_for_status()
    with open_lake(small_lake, ExploreParams()) as lake:  # "": the first symbol in bronze
        assert lake.symbols == ("AAA",)
        lake.raise_for_status()


@pytest.mark.slow
def test_notebook_runs_through_the_runner_and_writes_nothing_to_the_lake(small_lake, tmp_path, monkeypatch):
    monkeypatch.setenv("CONDVEST_LAKE_URI", small_lake.lake_uri)
    before = _lake_state(small_lake.lake_uri)
    runs = tmp_path / "explore-runs"
    options = RunOptions(runs_uri=str(runs), root=ROOT, progress_bar=False)
    # the three questions, one parameter edit each: a relative period, the cross-section at a date, the gaps
    edits = {"symbols": "AAA,BBB", "interval": 3, "start": "-1M", "returns_on": DAYS[54].isoformat()}
    result = run_notebook("06_explore", edits, settings=small_lake, options=options)
    assert result.ok, result.summary()
    assert _lake_state(small_lake.lake_uri) == before, "06_explore must not write to the lake"
    page = (runs / result.html_key).read_text()
    assert "AAA: 3-session bars, with volume" in page and "BBB: 3-session bars, with volume" in page
    assert "open bar (2 of 3 sessions)" in page  # BBB's 35 sessions
    assert DAYS[49].isoformat() in page and DAYS[54].isoformat() in page, "the cross-section's two sessions"
    assert "phased per symbol" in page and "Gaps against the NYSE calendar" in page

    unknown = run_notebook("06_explore", {"symbols": "ZZZQ"}, settings=small_lake, options=options)
    assert not unknown.ok
    assert "no bar in the lake for ZZZQ (unknown symbol; the lake holds 2 symbols: AAA, BBB)" in unknown.summary()


# -- the three first questions, each one parameter edit (issue 23) ------------------------------------------------


def test_q1_bars_of_one_symbol_over_a_relative_period(small_lake):
    with open_lake(small_lake, ExploreParams(symbols="AAA", interval=1, start="-1M")) as lake:
        bars = lake.bars("AAA")
        assert list(bars["date"].dt.date) == sessions_between(dt.date(2025, 9, 17), dt.date(2025, 10, 17))
    with open_lake(small_lake, ExploreParams(symbols="AAA", interval=1, start="-2W", end="2025-10-10")) as lake:
        assert list(lake.bars("AAA")["date"].dt.date) == sessions_between(dt.date(2025, 9, 26), dt.date(2025, 10, 10))
    for bad in ("-3X", "-0M", "-M", "3M"):
        with pytest.raises(ParameterError, match=r"-3M \(D days, W weeks, M months, Y years\)|ISO date") as err:
            ExploreParams(start=bad).check()
        assert err.value.parameter == "start"


def test_q2_a_cross_section_aligned_on_the_calendar(small_lake):
    on, base = DAYS[54], DAYS[49]  # BBB's bars are DAYS[20:55]: its own session count differs from AAA's
    with open_lake(small_lake, ExploreParams(returns_over=5, returns_on=on.isoformat())) as lake:
        got = lake.cross_section().set_index("symbol")
        daily = lake.sql("SELECT symbol, date, close FROM daily")
        daily = daily.assign(date=daily["date"].dt.date).set_index(["symbol", "date"])["close"]
        for sym in ("AAA", "BBB"):
            assert (got.loc[sym, "from"], got.loc[sym, "to"]) == (base, on)
            assert got.loc[sym, "return"] == pytest.approx(daily[(sym, on)] / daily[(sym, base)] - 1)
        assert list(got.index) == list(got.sort_values("return", ascending=False).index), "best first"
    with open_lake(small_lake, ExploreParams(returns_over=21)) as lake:  # the latest session: BBB ended before
        latest = lake.cross_section()
        assert list(latest["to"].unique()) == [DAYS[-1]] and latest["from"].iloc[0] == DAYS[-22]
        assert latest.iloc[-1]["symbol"] == "BBB" and latest.iloc[-1]["note"] == f"no bar on {DAYS[-1]}"
        with pytest.raises(ParameterError, match="2025-10-18 is not an NYSE session") as err:
            lake.cross_section(on=dt.date(2025, 10, 18))
        assert err.value.parameter == "returns_on"


def test_q3_a_symbols_gaps_against_the_nyse_calendar(small_lake):
    store = open_store(settings=small_lake)
    write_history(store, "CCC", DAYS[:30] + DAYS[32:], seed=4)  # two sessions without a bar
    write_history(store, "NYC", sessions_between(dt.date(2001, 9, 4), dt.date(2001, 9, 28)), seed=5)  # 9/11
    write_history(store, "HUR", sessions_between(dt.date(2012, 10, 22), dt.date(2012, 11, 2)), seed=6)  # Sandy
    with open_lake(small_lake, ExploreParams(symbols="CCC,HUR,NYC")) as lake:
        gaps = lake.gaps()
        assert gaps.to_dict("records") == [{"symbol": "CCC", "first": DAYS[30], "last": DAYS[31], "sessions": 2}]
        assert lake.gaps("NYC").empty and lake.gaps("HUR").empty, "the market's closures are no gap"
        days = lake.sessions("CCC")
        assert len(days) == 60 and list(days.loc[~days["bar"], "date"]) == DAYS[30:32]
        in_sql = lake.sql(
            "SELECT count(*) AS n FROM sessions WHERE date BETWEEN $a AND $b", {"a": DAYS[0], "b": DAYS[-1]}
        )
        assert in_sql.n[0] == 60, "the view sessions holds the NYSE calendar"


def test_an_unknown_symbol_is_named_with_the_symbols_the_lake_holds(small_lake):
    with open_lake(small_lake, ExploreParams(symbols="AAA,ZZZQ")) as lake:
        assert candles_figure(lake, "ZZZQ").layout.title.text == (
            "ZZZQ: unknown, no bar in the lake (the lake holds 2 symbols: AAA, BBB)"
        )
        assert "ZZZQ: unknown" in intervals_figure(lake, "ZZZQ").layout.title.text
        assert lake.gaps().symbol.unique().tolist() in ([], ["AAA"])
        with pytest.raises(ParameterError, match=r"ZZZQ \(unknown symbol; the lake holds 2 symbols: AAA, BBB\)"):
            lake.raise_for_status()


def test_the_open_bar_is_marked_and_tick_labels_stay_apart(small_lake):
    with open_lake(small_lake, ExploreParams(symbols="BBB", interval=3)) as lake:  # 35 sessions: 11 bars and 2 of 3
        fig = candles_figure(lake)
        assert [t.name for t in fig.data] == ["3d", "open bar (2 of 3 sessions)", "volume"]
        assert len(fig.data[0].x) == 11 and len(fig.data[1].x) == 1
        assert fig.layout.annotations[0].text == "open: 2 of 3 sessions"
        side = intervals_figure(lake, "BBB", (1, 3, 5))
        axes = [side.layout[k] for k in ("xaxis", "xaxis2", "xaxis3")]
        assert all(a.nticks == 4 and "<br>" in a.tickformat for a in axes)
