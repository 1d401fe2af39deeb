"""The real vendor's plans, played by the offline server: refusals classified with the vendor's words, a free key's
pace, cursors on the configured host, DELAYED answers never final (issue 20).

The lake is a temporary folder and nothing goes to Postgres; the free plan's minute is shortened to one second
on both sides (the server's ``minute``, the client's ``HttpLimits.rate_window``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from condvest import calendar as cal
from condvest import manifest
from condvest.errors import AuthError, NotYetAvailable, ParameterError, PlanLimit
from condvest.fetch import FetchParams, SessionOutcome, run_fetch
from condvest.offline.market import SyntheticMarket
from condvest.offline.plans import PLANS, TIMEFRAME_MSG, TODAY_MSG
from condvest.offline.server import serve_in_thread
from condvest.polygon import Answer, Pacer, PolygonClient, classify
from condvest.settings import HttpLimits, Secret, Settings
from condvest.storage import LocalStore

KEY = "vendor-key-5c1e"
FRIDAY = dt.date(2025, 10, 17)
EVENING = dt.datetime(2025, 10, 17, 18, 30, tzinfo=cal.NEW_YORK)
WINDOW = 1.5  # the vendor's minute, shortened on the server and in the client alike
LIMITS = HttpLimits(backoff_base=0.01, backoff_cap=0.05, rate_window=WINDOW)


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=8, seed=5)


def settings(tmp_path, srv, **http) -> Settings:
    return Settings(
        lake_uri=str(tmp_path / "lake"),
        runs_uri=str(tmp_path / "runs"),
        home=tmp_path / ".condvest",
        polygon_base_url=srv.base_url,
        polygon_api_key=Secret(KEY),
        as_of=FRIDAY,
        http=HttpLimits(**{**LIMITS.__dict__, **http}),
    )


def fetch(cfg: Settings, **params):
    params.setdefault("write_postgres", False)
    return asyncio.run(run_fetch(cfg, FetchParams(**params), progress=False, now=EVENING))


def bronze(cfg: Settings) -> pd.DataFrame:
    store = LocalStore(cfg.lake_uri)
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas() for o in store.list("bronze/raw_ohlcv/")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "date"])


# -- classification (pure) ---------------------------------------------------------------------------------


def _body(message: str) -> bytes:
    return f'{{"status":"NOT_AUTHORIZED","request_id":"r1","message":"{message}"}}'.encode()


def test_only_a_401_blames_the_key_and_every_refusal_keeps_the_vendors_words():
    grouped = "/v2/aggs/grouped/locale/us/market/stocks/2025-10-17"
    cases = [
        (401, "Unknown API Key", AuthError),
        (403, TODAY_MSG.replace("'", "\\u0027"), NotYetAvailable),
        (403, TIMEFRAME_MSG.replace("'", "\\u0027"), PlanLimit),
        (403, "You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing", PlanLimit),
    ]
    for status, message, kind in cases:
        with pytest.raises(kind) as info:
            classify(Answer(status, _body(message)), path=grouped, date="2025-10-17")
        err = info.value
        words = message.replace("\\u0027", "'")
        assert err.vendor == words and words in str(err) and err.status == status
        assert ("check the API key" in str(err)) == (kind is AuthError)
    with pytest.raises(PlanLimit) as info:
        classify(Answer(403, _body(TIMEFRAME_MSG)), path=grouped, date="2025-10-17")
    assert grouped in str(info.value)  # what was asked


# -- a free key ------------------------------------------------------------------------------------------------


def test_a_free_key_after_the_close_stores_every_earlier_session_and_warns_today(tmp_path, market):
    with serve_in_thread(market, api_key=KEY, plan="free", now=EVENING, minute=WINDOW) as srv:
        cfg = settings(tmp_path, srv)
        report = fetch(cfg, max_backfill_days=5)
        by_day = {r.session: r for r in report.sessions}
        assert report.status == "ok", report.failed
        today = by_day[FRIDAY]
        assert (
            today.status == SessionOutcome.WARN and "Attempted to request today's data before end of day" in today.error
        )
        assert "check the API key" not in today.error
        earlier = cal.last_n_sessions(FRIDAY, 5)[:-1]
        assert all(by_day[d].status == SessionOutcome.DONE for d in earlier)
        held = manifest.read_sessions(LocalStore(cfg.lake_uri), earlier[0], FRIDAY)
        assert sorted(held) == earlier  # today is not recorded: the next run fetches it
        assert set(bronze(cfg)["date"]) == set(earlier)
        srv.set_now(EVENING + dt.timedelta(hours=6))  # the next morning: Friday has ended
        report = fetch(cfg, max_backfill_days=5)
        assert [r.session for r in report.sessions] == [FRIDAY] and report.status == "ok"
        assert report.sessions[0].status == SessionOutcome.DONE


def test_a_free_keys_gap_fill_completes_by_itself_with_few_wasted_requests(tmp_path, market):
    with serve_in_thread(market, api_key=KEY, plan="free", now=EVENING + dt.timedelta(hours=6), minute=WINDOW) as srv:
        cfg = settings(tmp_path, srv)  # the defaults: 16 in flight, 5 retries, no rate set
        t0 = time.monotonic()
        report = fetch(cfg, max_backfill_days=30)
        elapsed = time.monotonic() - t0
        report.raise_for_status()
        assert len(report.sessions) == 30 and all(r.status == SessionOutcome.DONE for r in report.sessions)
        sent = [r for r in srv.requests if r.endpoint != "unknown"]
        answered = [r for r in sent if r.status == 200]
        assert len(sent) < 2 * len(answered), (len(sent), len(answered))
        # 30 grouped, one splits and one market-status request at 5 a minute: about 6.7 minutes on the real plan
        assert elapsed < 8.5 * WINDOW, elapsed


def test_a_configured_rate_is_kept_without_a_single_429(tmp_path, market):
    window = 2 * WINDOW  # the pace's 5% margin is 150 ms here: more than a loaded machine's scheduling jitter
    now = EVENING + dt.timedelta(hours=6)
    with serve_in_thread(market, api_key=KEY, plan="free", now=now, minute=window) as srv:
        cfg = settings(tmp_path, srv, requests_per_minute=5, rate_window=window)
        fetch(cfg, max_backfill_days=8).raise_for_status()
        assert [r.status for r in srv.requests].count(429) == 0
        arrivals = sorted(r.at for r in srv.requests)
        assert all(b - a >= window / 5 * 0.9 for a, b in zip(arrivals, arrivals[1:], strict=False))


def test_history_beyond_the_plan_fails_naming_the_vendors_reason(tmp_path, market):
    with serve_in_thread(market, api_key=KEY, plan="free", now=EVENING, minute=WINDOW) as srv:
        cfg = settings(tmp_path, srv)
        with pytest.raises(PlanLimit) as info:
            fetch(cfg, start="2020-01-02", end="2020-01-31", symbols=market.symbols[0])
        assert "Your plan doesn't include this data timeframe" in str(info.value)
        assert "check the API key" not in str(info.value) and "/range/1/day/2020-01-02" in str(info.value)


def test_an_unknown_key_fails_telling_to_check_the_key(tmp_path, market):
    with serve_in_thread(market, api_key="another-key", now=EVENING) as srv:
        with pytest.raises(AuthError, match="check the API key.*Unknown API Key"):
            fetch(settings(tmp_path, srv), max_backfill_days=2)


# -- DELAYED, unclosed sessions --------------------------------------------------------------------------


def test_a_delayed_answer_is_never_a_complete_session(tmp_path, market):
    with serve_in_thread(market, api_key=KEY, plan="starter", now=EVENING) as srv:
        cfg = settings(tmp_path, srv)
        report = fetch(cfg, max_backfill_days=2)
        today = {r.session: r for r in report.sessions}[FRIDAY]
        assert today.status == SessionOutcome.WARN and "DELAYED" in today.error
        assert FRIDAY not in manifest.read_sessions(LocalStore(cfg.lake_uri), FRIDAY, FRIDAY)
        assert FRIDAY not in set(bronze(cfg)["date"])


def test_a_date_that_has_not_closed_is_refused_before_any_request(tmp_path, market):
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        cfg = settings(tmp_path, srv)
        noon = dt.datetime(2025, 10, 17, 12, tzinfo=cal.NEW_YORK)
        with pytest.raises(ParameterError, match="has not closed"):
            asyncio.run(run_fetch(cfg, FetchParams(date="2025-10-17", write_postgres=False), progress=False, now=noon))
        assert srv.requests == []


# -- cursors on the configured host ------------------------------------------------------------------------


def test_next_url_on_another_host_is_followed_on_the_configured_host_and_the_key_stays_home(market):
    with serve_in_thread(market, api_key="other-hosts-key", now=EVENING) as elsewhere:
        host_plan = PLANS["developer"].__class__("elsewhere", next_origin=elsewhere.base_url)
        with serve_in_thread(market, api_key=KEY, plan=host_plan, now=EVENING) as home:
            sym = market.symbols[0]
            cfg = Settings(polygon_base_url=home.base_url, polygon_api_key=Secret(KEY), http=LIMITS)

            async def go():
                async with PolygonClient.open(cfg) as client:
                    return await client.range_daily(sym, dt.date(2025, 6, 2), FRIDAY, limit=7)

            bars = asyncio.run(go())
            days = [cal.session_date_from_epoch_ms(b["t"]) for b in bars]
            assert days == cal.sessions_between(max(dt.date(2025, 6, 2), market.listing_date(sym)), FRIDAY)
            assert len(home.requests) > 3 and elsewhere.requests == []


# -- each bar where it belongs -----------------------------------------------------------------------------


def quarantine(cfg: Settings) -> pd.DataFrame:
    store = LocalStore(cfg.lake_uri)
    keys = [o.key for o in store.list("bronze/_quarantine/")]
    frames = [pq.read_table(io.BytesIO(store.get(k))).to_pandas() for k in keys]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "date", "reason"])


def test_a_bar_stamped_on_another_day_is_quarantined_not_filed_there(tmp_path, market):
    thursday = dt.date(2025, 10, 16)
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        cfg = settings(tmp_path, srv)
        srv.faults.add("misdated", path=f"/stocks/{FRIDAY}", count=1)
        report = fetch(cfg, date=FRIDAY.isoformat(), skip_market_check=True)
        res = report.sessions[0]
        assert res.quarantined == 1 and res.bronze_rows == len(market.grouped(FRIDAY)) - 1
        q = quarantine(cfg)
        assert q["reason"].tolist() == [f"dated {thursday}, not the session asked for ({FRIDAY})"]
        assert set(bronze(cfg)["date"]) == {FRIDAY}  # nothing filed as Thursday's


def test_a_range_bar_outside_the_range_asked_for_is_quarantined(tmp_path, market):
    sym = market.symbols[0]
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        cfg = settings(tmp_path, srv)
        srv.faults.add("misdated", path=f"/ticker/{sym}/", count=1)
        start = dt.date(2025, 10, 6)
        report = fetch(cfg, start=start.isoformat(), end=FRIDAY.isoformat(), symbols=sym)
        q = quarantine(cfg)
        assert (
            len(q) == 1
            and q["reason"][0]
            == f"dated {start - dt.timedelta(days=7)}, outside the range asked for ({start}..{FRIDAY})"
        )
        assert report.sessions[0].quarantined == 1 and start not in set(bronze(cfg)["date"])
        assert start - dt.timedelta(days=7) not in set(bronze(cfg)["date"])


# -- final bars --------------------------------------------------------------------------------------------


def test_a_session_revised_after_the_close_is_stored_revised_by_the_next_daily_run(tmp_path, market):
    saturday = dt.datetime(2025, 10, 18, 0, 30, tzinfo=cal.NEW_YORK)  # the free plan has Friday, provisional
    monday = dt.datetime(2025, 10, 20, 18, 30, tzinfo=cal.NEW_YORK)  # Monday has closed: Friday is final
    with serve_in_thread(market, api_key=KEY, plan="free", now=saturday, minute=WINDOW) as srv:

        def run(now: dt.datetime):
            srv.set_now(now)
            cfg = settings(tmp_path, srv).with_(as_of=now.date())
            return cfg, asyncio.run(run_fetch(cfg, FetchParams(max_backfill_days=3, write_postgres=False), now=now))

        def stored(cfg) -> pd.DataFrame:
            df = bronze(cfg).sort_values("ingested_at").drop_duplicates(["symbol", "date"], keep="last")
            return df[df["date"] == FRIDAY].set_index("symbol").sort_index()

        final = {b["T"]: b for b in market.grouped(FRIDAY, monday.date())}
        cfg, first = run(saturday)
        assert {r.session: r.status for r in first.sessions}[FRIDAY] == SessionOutcome.DONE
        provisional = stored(cfg)
        assert all(provisional.loc[s, "volume"] < final[s]["v"] for s in final)  # the vendor's first numbers

        cfg, second = run(monday)
        by_day = {r.session: r for r in second.sessions}
        assert second.plan.settle == (FRIDAY,) and by_day[FRIDAY].status == SessionOutcome.DONE
        assert by_day[FRIDAY].revised == len(final) and second.summary()["revised"] == len(final)
        settled = stored(cfg)
        assert settled["volume"].to_dict() == {s: float(b["v"]) for s, b in final.items()}
        assert settled["transactions"].to_dict() == {s: b["n"] for s, b in final.items()}
        assert dt.date(2025, 10, 16) not in by_day  # Thursday was fetched final: never asked again

        cfg, third = run(monday + dt.timedelta(hours=6))  # Tuesday 00:30: Monday arrives, Friday is settled
        assert FRIDAY not in {r.session for r in third.sessions} and third.plan.settle == ()


# -- survivorship-free history ----------------------------------------------------------------------------------


def test_a_history_backfill_of_every_symbol_holds_the_delisted_ones(tmp_path, market):
    gone, last = market.symbols[2], dt.date(2025, 10, 8)
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        srv.delist(gone, last)
        cfg = settings(tmp_path, srv)
        report = fetch(cfg, start="2025-10-01", end=FRIDAY.isoformat())
        report.raise_for_status()
        days = cal.sessions_between(dt.date(2025, 10, 1), FRIDAY)
        assert [r.endpoint for r in srv.requests].count("grouped") == len(days)  # one request per session
        assert not any(r.endpoint in ("tickers", "range") for r in srv.requests)  # not today's ticker list
        held = bronze(cfg)
        assert sorted(held.loc[held["symbol"] == gone, "date"]) == [d for d in days if d <= last]
        assert len(held) == sum(len(market.grouped(d)) for d in days) - sum(1 for d in days if d > last)
        assert sorted(manifest.read_sessions(LocalStore(cfg.lake_uri), days[0], days[-1])) == days


def test_a_learned_pace_is_kept_then_relaxed_after_calm_windows():
    pacer = Pacer(None, 1.0)
    pace = 1.05  # the window and its margin
    assert pacer.interval == 0.0  # unlimited: no pace at all
    t0 = time.monotonic()
    for i in range(5):
        pacer.answered(t0 - 0.5 + i * 0.01)
    assert pacer.rate_limited(t0, None) == pytest.approx(pace, abs=0.05)  # paused for the vendor's window
    assert pacer.interval == pytest.approx(pace / 5)  # then 5 a window, as the vendor answered
    assert pacer.rate_limited(t0 - 0.1, None) <= pace and pacer.interval == pytest.approx(pace / 5)  # same burst
    pacer.answered(t0 + 3.0)  # calm, but not for long enough
    assert pacer.interval == pytest.approx(pace / 5)
    pacer.answered(t0 + 7.0)  # five windows without a 429: twice the pace
    assert pacer.interval == pytest.approx(pace / 10)


def test_a_misdated_bar_in_a_history_backfill_of_every_symbol_is_quarantined(tmp_path, market):
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        cfg = settings(tmp_path, srv)
        srv.faults.add("misdated", path="/stocks/2025-10-14", count=1)
        report = fetch(cfg, start="2025-10-13", end=FRIDAY.isoformat())
        by_day = {r.session: r for r in report.sessions}
        assert by_day[dt.date(2025, 10, 14)].quarantined == 1
        assert quarantine(cfg)["reason"].tolist() == ["dated 2025-10-13, not the session asked for (2025-10-14)"]
        held = bronze(cfg)
        assert len(held) == sum(len(market.grouped(d)) for d in by_day) - 1
