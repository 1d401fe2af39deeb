"""Pure core: settings, calendar, lake paths, bar parsing and checks, the manifest."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from condvest import calendar as cal
from condvest import manifest
from condvest.bars import bars_frame, check_bars, check_envelope, dedupe
from condvest.errors import AuthError, BadPayload, ConfigError, ParameterError
from condvest.lake import bronze_daily_key, check_symbol, parse_bronze_key
from condvest.settings import Retention, Settings
from condvest.storage import LocalStore

NY = ZoneInfo("America/New_York")
TZS = ["UTC", "Asia/Tokyo", "America/Los_Angeles"]


# --- settings -------------------------------------------------------------------------------------------------


def test_settings_defaults_and_seed_names():
    s = Settings.from_env({})
    assert s.lake_uri == "./lake" and s.polygon_base_url == "https://api.polygon.io"
    s = Settings.from_env({"S3_DATALAKE_BUCKET": "dev-condvest-datalake", "POLYGON_API_KEY": "sekrit-123"})
    assert s.lake_uri == "s3://dev-condvest-datalake"
    assert "sekrit-123" not in repr(s) and "sekrit-123" not in str(s.describe())
    assert s.secrets() == ["sekrit-123"]


def test_settings_reject_malformed_values():
    with pytest.raises(ConfigError, match="CONDVEST_AS_OF"):
        Settings.from_env({"CONDVEST_AS_OF": "2025-13-01"})
    with pytest.raises(ConfigError, match="CONDVEST_RETENTION"):
        Settings.from_env({"CONDVEST_RETENTION": "0 months"})
    with pytest.raises(ConfigError, match="POLYGON_BASE_URL"):
        Settings.from_env({"POLYGON_BASE_URL": "ftp://x"})


@pytest.mark.parametrize(
    ("as_of", "cutoff"),
    [
        ("2025-10-17", "2022-09-17"),
        ("2028-02-29", "2025-01-29"),
        ("2025-03-31", "2022-02-28"),
        ("2024-04-30", "2021-03-30"),
    ],
)
def test_retention_cutoff(as_of, cutoff):
    assert Retention().cutoff(dt.date.fromisoformat(as_of)) == dt.date.fromisoformat(cutoff)


def test_retention_parse():
    assert Retention.parse("3 years 1 month") == Retention(3, 1)
    assert Retention.parse("37 months") == Retention(0, 37)
    with pytest.raises(ParameterError):
        Retention.parse("forever")


# --- calendar -------------------------------------------------------------------------------------------------


def test_calendar_knows_old_holidays_and_half_days():
    assert not cal.is_session(dt.date(1962, 12, 25))  # XNYS gets this one wrong
    assert not cal.is_session(dt.date(2025, 7, 4))
    assert not cal.is_session(dt.date(2025, 10, 18))  # a Saturday
    assert cal.is_session(dt.date(2025, 11, 28))  # half day after Thanksgiving
    assert cal.previous_session(dt.date(2025, 7, 7)) == dt.date(2025, 7, 3)
    assert cal.sessions_between(dt.date(2025, 12, 24), dt.date(2025, 12, 29)) == [
        dt.date(2025, 12, 24),
        dt.date(2025, 12, 26),
        dt.date(2025, 12, 29),
    ]


def _with_tz(tz: str, fn):
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@given(day=st.dates(min_value=dt.date(1962, 1, 2), max_value=dt.date(2035, 12, 31)))
@settings(max_examples=150, deadline=None)
def test_session_date_from_either_stamp_is_the_new_york_date_in_every_host_zone(day):
    for stamp in (cal.ny_midnight_epoch_ms(day), cal.ny_close_epoch_ms(day)):
        got = {_with_tz(tz, lambda s=stamp: cal.session_date_from_epoch_ms(s)) for tz in TZS}
        assert got == {day}
        frame = {tz: _with_tz(tz, lambda s=stamp: bars_frame([_bar(s)], symbol="X")["date"].iloc[0]) for tz in TZS}
        assert set(frame.values()) == {day}


def test_parsing_is_identical_in_subprocesses_with_other_host_zones():
    code = (
        "import datetime as dt;from condvest import calendar as c;from condvest.bars import bars_frame;"
        "d=[dt.date(2024,3,8)+dt.timedelta(days=i) for i in range(0,400,7)];"
        "r=[{'o':1,'h':2,'l':1,'c':2,'v':1,'t':f(x)} for x in d for f in (c.ny_midnight_epoch_ms,c.ny_close_epoch_ms)];"
        "print(bars_frame(r,symbol='X')['date'].astype(str).str.cat(sep=','))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "TZ": tz}, capture_output=True, text=True, check=True
        ).stdout
        for tz in TZS
    }
    assert len(outs) == 1


# --- lake paths -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../etc", "A/B", "", "x;DROP TABLE raw_ohlcv", "A B", "..", "a" * 30])
def test_symbols_that_could_escape_a_path_are_rejected(bad):
    with pytest.raises(ParameterError):
        check_symbol(bad)


def test_bronze_keys_round_trip():
    key = bronze_daily_key("BRK.B", dt.date(2025, 10, 17))
    assert key == "bronze/raw_ohlcv/symbol=BRK.B/date=2025-10-17.parquet"
    assert parse_bronze_key(key) == ("BRK.B", dt.date(2025, 10, 17))
    assert parse_bronze_key("bronze/raw_ohlcv/symbol=A/data.parquet") == ("A", None)


# --- Polygon payloads -----------------------------------------------------------------------------------------


def _bar(t, **kw):
    b = {"o": 10.0, "h": 11.0, "l": 9.5, "c": 10.5, "v": 1000.0, "vw": 10.2, "n": 12, "t": t}
    b.update(kw)
    return b


def test_envelope_shapes_from_polygon():
    assert check_envelope({"status": "OK", "resultsCount": 0, "queryCount": 0, "adjusted": True}) == []
    with pytest.raises(AuthError):
        check_envelope({"status": "NOT_AUTHORIZED", "message": "Unknown API Key", "request_id": "x"})
    with pytest.raises(BadPayload, match="ERROR"):
        check_envelope({"status": "ERROR", "error": "Something went wrong"})
    with pytest.raises(BadPayload, match="'h'"):
        check_envelope({"status": "OK", "results": [{"o": 1, "l": 1, "c": 1, "v": 1, "t": 1}]})
    with pytest.raises(BadPayload):
        check_envelope({"status": "OK", "resultsCount": 3})


finite = st.floats(min_value=0.0001, max_value=1e6, allow_nan=False)


@given(
    o=finite,
    c=finite,
    spread=st.floats(0, 100),
    v=st.floats(0, 1e9),
    day=st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1)),
)
@settings(max_examples=200, deadline=None)
def test_parsed_bars_keep_values_exactly_and_valid_bars_pass(o, c, spread, v, day):
    hi, lo = max(o, c) + spread, max(0.0, min(o, c) - spread)
    df = bars_frame([_bar(cal.ny_close_epoch_ms(day), o=o, c=c, h=hi, l=lo, v=v, T="ZZ")])
    row = df.iloc[0]
    assert (row["open"], row["close"], row["high"], row["low"], row["volume"]) == (o, c, hi, lo, v)
    assert row["date"] == day
    good, bad = check_bars(df)
    assert len(good) == 1 and bad.empty


def test_broken_bars_are_quarantined_with_reasons():
    t = cal.ny_close_epoch_ms(dt.date(2025, 10, 17))
    df = bars_frame([_bar(t, T="OK1"), _bar(t, T="HI", h=10.0), _bar(t, T="NEG", v=-5.0), _bar(t, T="LOW", l=10.8)])
    good, bad = check_bars(df)
    assert list(good["symbol"]) == ["OK1"]
    reasons = dict(zip(bad["symbol"], bad["reason"], strict=True))
    assert reasons == {"HI": "close > high", "NEG": "volume < 0", "LOW": "low > open; low > close"}


def test_dedupe_keys_on_symbol_and_session_not_the_whole_row():
    day = dt.date(2025, 10, 17)
    df = bars_frame(
        [
            _bar(cal.ny_midnight_epoch_ms(day), T="A"),
            _bar(cal.ny_close_epoch_ms(day), T="A", c=10.7),
            _bar(cal.ny_close_epoch_ms(day), T="B"),
        ]
    )
    out, dropped = dedupe(df)
    assert dropped == 1 and len(out) == 2
    assert out.set_index("symbol").loc["A", "close"] == 10.7  # the last one seen wins


def test_fractional_volume_survives():
    df = bars_frame([_bar(cal.ny_close_epoch_ms(dt.date(2025, 10, 17)), v=1234.5678, T="F")])
    assert df["volume"].iloc[0] == 1234.5678
    assert isinstance(df, pd.DataFrame)


# --- manifest -------------------------------------------------------------------------------------------------


def test_manifest_gap_detection_and_concurrent_updates(tmp_path):
    store = LocalStore(tmp_path)
    sessions = cal.sessions_between(dt.date(2025, 12, 22), dt.date(2026, 1, 6))
    e = manifest.SessionEntry("all", 10, 10, "grouped")
    manifest.record_sessions(store, {sessions[0]: e, sessions[-1]: e})
    assert manifest.missing_sessions(store, sessions) == sessions[1:-1]
    # subsets: a session fetched for AAPL only is complete for AAPL, not for everyone
    manifest.record_sessions(store, {sessions[1]: manifest.SessionEntry(("AAPL",), 1, 1, "range")})
    assert sessions[1] not in manifest.missing_sessions(store, sessions, ["AAPL"])
    assert sessions[1] in manifest.missing_sessions(store, sessions)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: manifest.record_sessions(store, {d: e}), sessions))
    assert manifest.missing_sessions(store, sessions) == []
    # two years, two objects; nothing else is listed
    assert sorted(o.key for o in store.list("bronze/")) == [
        "bronze/_manifest/sessions_2025.json",
        "bronze/_manifest/sessions_2026.json",
    ]


# --- Postgres connection settings -----------------------------------------------------------------------------


def test_rds_settings_build_a_dsn_that_never_prints_its_password():
    from condvest.postgres import resolve_dsn

    s = Settings.from_env(
        {
            "RDS_ENDPOINT": "db.example.internal:6543",
            "RDS_USERNAME": "postgres",
            "RDS_PASSWORD": "p@ss:w/rd",
            "RDS_DB_NAME": "condvest",
        }
    )
    dsn = resolve_dsn(s)
    assert dsn.reveal() == "postgresql://postgres:p%40ss%3Aw%2Frd@db.example.internal:6543/condvest?sslmode=prefer"
    assert "p@ss" not in repr(dsn) and "p@ss" not in repr(s)
    with pytest.raises(ConfigError, match="RDS_ENDPOINT"):
        resolve_dsn(Settings.from_env({"RDS_ENDPOINT": "db.example.internal"}))


def test_embedded_cluster_is_reused_and_listens_on_loopback_only(pg_cluster):
    import psycopg

    assert pg_cluster.start().reveal() == pg_cluster.start().reveal()
    with psycopg.connect(pg_cluster.dsn("postgres").reveal()) as c:
        assert c.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert c.execute("SELECT current_user").fetchone()[0] == "condvest"


def test_importing_the_package_does_nothing_and_the_public_api_resolves():
    code = (
        "import sys, os, logging; before = set(os.environ.items());"
        "import condvest;"
        "assert 'pandas' not in sys.modules and 'duckdb' not in sys.modules and 'psycopg' not in sys.modules;"
        "assert set(os.environ.items()) == before and not logging.getLogger().handlers;"
        "[getattr(condvest, n) for n in condvest.__all__]; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr
