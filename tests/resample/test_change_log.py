"""A daily 02_resample on S3 reads what changed (bronze's change log, the manifest, the session's batch) and lists
no bronze prefix; its silver equals the documented bars of bronze, and a write the log cannot explain (a fetch
in history mode) makes it list bronze again."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

from condvest import calendar as cal
from condvest.bronze import read_bronze_bytes, write_daily_files
from condvest.fetch import FetchParams, run_fetch
from condvest.lake import BRONZE_PREFIX, CHANGES_PREFIX, bronze_daily_key
from condvest.manifest import ALL, SessionEntry, record_sessions
from condvest.resample import ResampleParams, run_resample
from condvest.settings import Secret, Settings
from condvest.storage import LocalStore, S3Store, open_store
from tests.fixtures.resample import assert_silver_matches, bronze_table, reference_rows

AS_OF = dt.date(2025, 10, 17)
NS = (3, 5)


def _fetch(settings, day: dt.date, **kw) -> None:
    p = FetchParams(skip_market_check=True, write_postgres=False, as_of=day.isoformat(), **kw)
    asyncio.run(run_fetch(settings.with_(as_of=day), p, progress=False)).raise_for_status()


def _counting_store(settings, s3_server) -> tuple[S3Store, Counter]:
    """The lake through a boto3 client of the test's own, counting the prefixes of every listing it sends."""
    client = s3_server.client(secret_key=s3_server.secret_key)  # a new client: the hook is the test's alone
    prefixes: Counter = Counter()

    def count(params, **_kw) -> None:
        prefixes[params.get("Prefix", "")] += 1

    client.meta.events.register("before-parameter-build.s3.ListObjectsV2", count)
    return S3Store(settings.lake_uri, endpoint_url=settings.s3_endpoint_url, client=client), prefixes


def _bronze_listings(prefixes: Counter, store: S3Store) -> list[str]:
    data = store.prefix + BRONZE_PREFIX
    return [p for p in prefixes if p.startswith(data) or data.startswith(p)]


def test_a_daily_resample_on_s3_lists_no_bronze_prefix(s3_settings, s3_server, polygon_server):
    settings = s3_settings.with_(
        polygon_base_url=polygon_server.base_url, polygon_api_key=Secret(polygon_server.api_key)
    )
    sessions = cal.last_n_sessions(AS_OF, 8)
    _fetch(settings, sessions[-3], max_backfill_days=6)  # six sessions of history, grouped
    run_resample(settings, ResampleParams(",".join(map(str, NS)))).raise_for_status()  # full: lists bronze
    plain = open_store(settings=settings)

    for day in sessions[-2:]:  # two daily runs, each fetched then resampled
        _fetch(settings, day, max_backfill_days=6)  # a daily run: the missing session, the settle window
        store, prefixes = _counting_store(settings, s3_server)
        report = run_resample(settings, ResampleParams(",".join(map(str, NS))), store=store)
        assert {r.mode for r in report.results} == {"incremental"} and report.results[0].bars_written > 0
        assert _bronze_listings(prefixes, store) == [], dict(prefixes)
        assert sum(prefixes.values()) < 20, dict(prefixes)  # a handful of small listings, not bronze's pages
        assert_silver_matches(plain, NS)
        assert not list(plain.list(CHANGES_PREFIX + "/"))  # the change objects read are gone once committed

    # a correction written through bronze's writer, outside a fetch: in the log, read without listing
    symbols = sorted(reference_rows(plain)["symbol"].unique())
    key = bronze_daily_key(symbols[0], sessions[-1])
    fix = read_bronze_bytes(key, plain.get(key)).to_pandas()
    fix["close"] = fix["high"]
    write_daily_files(plain, fix)
    store, prefixes = _counting_store(settings, s3_server)
    report = run_resample(settings, ResampleParams(",".join(map(str, NS))), store=store)
    assert {r.mode for r in report.results} == {"incremental"} and _bronze_listings(prefixes, store) == []
    assert_silver_matches(plain, NS)

    # a history-mode fetch writes data.parquet objects and no change object: the manifest says so, bronze is listed
    _fetch(settings, AS_OF, start=sessions[0].isoformat(), end=sessions[-1].isoformat(), symbols=",".join(symbols[:2]))
    store, prefixes = _counting_store(settings, s3_server)
    run_resample(settings, ResampleParams(",".join(map(str, NS))), store=store).raise_for_status()
    assert _bronze_listings(prefixes, store), "a history write must make the resampler list bronze"
    assert_silver_matches(plain, NS)


class _Listing(LocalStore):
    """A local lake that remembers the prefix of every listing (the store's own ``list``, counted)."""

    def __init__(self, root) -> None:  # noqa: ANN001
        super().__init__(root)
        self.prefixes: list[str] = []

    def list(self, prefix: str, start_after: str | None = None):  # noqa: ANN201
        self.prefixes.append(prefix)
        return super().list(prefix, start_after)


def test_a_file_written_twice_between_runs_is_read_at_its_current_version(tmp_path):
    """Two change objects name one daily file at two versions: the run heads it, and silver holds the second."""
    store = _Listing(tmp_path / "lake")
    settings = Settings(lake_uri=str(tmp_path / "lake"))
    days = cal.sessions_between(dt.date(2024, 3, 1), dt.date(2024, 4, 30))
    for k, sym in enumerate(("AAA", "BBB")):
        write_daily_files(store, bronze_table(sym, days[:30], k, None).to_pandas(), run_id="hist")
    record_sessions(store, {d: SessionEntry(ALL, 2, 2, "grouped", "hist") for d in days[:30]})
    run_resample(settings, ResampleParams("3,5"), store=store).raise_for_status()

    write_daily_files(store, bronze_table("AAA", [days[30]], 7, None).to_pandas(), run_id="day")
    record_sessions(store, {days[30]: SessionEntry(("AAA",), 1, 1, "grouped", "day")})
    write_daily_files(store, bronze_table("AAA", [days[30]], 8, None).to_pandas())  # corrected at once
    store.prefixes.clear()
    report = run_resample(settings, ResampleParams("3,5"), store=store)
    assert {r.mode for r in report.results} == {"incremental"}
    assert not [p for p in store.prefixes if p.startswith(BRONZE_PREFIX)], store.prefixes
    assert_silver_matches(store, NS)
