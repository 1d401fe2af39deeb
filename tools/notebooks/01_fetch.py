CELLS = [
    ("md", """
# 01 · Fetch daily bars

Daily OHLCV bars from the Polygon REST API into the lake's **bronze** layer (the source of truth) and
the Postgres **`raw_ohlcv`** cache (only the retention window, 3 years + 1 month by default).

* **Daily mode** (default): the latest complete NYSE session, plus every session of the last
  `max_backfill_days` sessions that the bronze manifest does not hold (*smart backfill*). Holidays and
  weekends come from the NYSE calendar and are never fetched nor counted as missing.
* **`date`**: one named session. **`start`/`end`**: a historical backfill, merged into each symbol's
  `symbol=X/data.parquet` history file.
* `symbols="all"` makes one grouped-daily request a session; a comma list makes one range request a symbol.

Bronze is written first (the run fails if it fails): one file per symbol and session, plus one batch
object per session that 02_resample reads instead of thousands of files. Then Postgres, then the manifest. Bars that break
`low ≤ open, close ≤ high` or `volume ≥ 0` go to `bronze/_quarantine/` with their reason.
The API key comes from `POLYGON_API_KEY` or `POLYGON_API_KEY_SECRET_ARN`, never from a parameter.

The market-status answer (`/v1/marketstatus/now`) is recorded in the report; whether a session is due
is decided by the NYSE calendar and the manifest. (The replaced system skipped whenever the status
said "closed", which at the scheduled 06:00 ET run is always.) A run on a weekend or holiday therefore
still fills gaps, and says "skipped" only when bronze already holds every session.
"""),
    ("parameters", """
date = None  # one session to fetch, "YYYY-MM-DD"; None: the latest complete session (+ missing ones)
symbols = "all"  # "all" (one grouped request a session) or a comma list such as "AAPL,MSFT"
force = False  # fetch the latest session again even when bronze holds it; skips the market check
skip_market_check = False  # do not ask /v1/marketstatus/now first
backfill_missing = True  # also fetch sessions missing from the bronze manifest
max_backfill_days = 30  # how many sessions back gap detection looks
start = None  # historical backfill: first date "YYYY-MM-DD" (with end)
end = None  # historical backfill: last date "YYYY-MM-DD"
as_of = None  # the run's "today" in New York, "YYYY-MM-DD"; None: today (or CONDVEST_AS_OF)
write_postgres = True  # also upsert the retention window into Postgres raw_ohlcv
"""),
    ("md", "## Settings\nWhere this run reads and writes (secrets are only reported as set or missing)."),
    ("code", """
from condvest.display import show_result
from condvest.fetch.run import FetchParams, run_fetch
from condvest.settings import Settings

settings = Settings.from_env()
settings.describe()
"""),
    ("md", "## Fetch\nParameters are checked before anything is fetched or written."),
    ("code", """
report = await run_fetch(settings, FetchParams(date=date, symbols=symbols, force=force,
                                               skip_market_check=skip_market_check,
                                               backfill_missing=backfill_missing,
                                               max_backfill_days=max_backfill_days, start=start, end=end,
                                               as_of=as_of, write_postgres=write_postgres))
report.totals()
"""),
    ("md", "## Outcome\nWhat the run did (no timings, so the same market and lake always give the same table)."),
    ("code", """
# NBVAL_CHECK_OUTPUT
report.summary()
"""),
    ("md", "## Per session\nRows from the source, duplicates dropped, rows quarantined, rows written to bronze and "
           "Postgres, and seconds per session."),
    ("code", """
report.table()
"""),
    ("md", "## Result\nRecorded in the run index; a failed session fails the run here, after the tables above."),
    ("code", """
show_result(report.totals())
report.raise_for_failures()
"""),
]
