CELLS = [
    (
        "md",
        """
# 05 · Monitoring

One page over the whole workbench, read-only: is bronze complete, how far has silver got, what does the
Postgres retention policy hold, and how did the last notebook runs go. Every section reads cheap
sources only: the bronze manifest (one small JSON object a year) against the NYSE calendar, the
quarantine and silver listings, the silver checkpoints, the retention views and the run index. Bronze
objects themselves are never listed.

A section whose source does not exist yet (an empty lake, a database without the retention policy, no
runs) says so in one line, with the notebook that would fill it. Nothing here writes anything.
""",
    ),
    (
        "parameters",
        """
recent_sessions = 30  # sessions checked for gaps (01_fetch's max_backfill_days looks at the same window)
chart_sessions = 250  # sessions in the rows-per-session chart (about a year)
runs_shown = 20  # how many of the latest runs the run table lists
read_postgres = True  # False: skip the retention section (no database connection, no embedded cluster)
as_of = None  # the run's "today" in New York, "YYYY-MM-DD"; None: today (or CONDVEST_AS_OF)
""",
    ),
    (
        "md",
        """
## Overview
One line per section. `look` means something deserves a glance: a session missing in the recent window, a
silver interval behind the newest bronze session, a database without the retention policy, a notebook whose
last run failed, or a source that is still empty.
""",
    ),
    (
        "code",
        """
from condvest import monitoring
from condvest.display import show_result
from condvest.settings import Settings

settings = Settings.from_env()
snapshot = monitoring.collect(settings, recent_sessions=recent_sessions, chart_sessions=chart_sessions,
                              runs_shown=runs_shown, read_postgres=read_postgres, as_of=as_of)
show_result(snapshot.summary())
monitoring.overview_section(snapshot)
""",
    ),
    (
        "md",
        """
## Bronze coverage per year
Sessions the NYSE calendar expects (from the first session the manifest holds up to the latest complete
session) against what the bronze manifest holds: `full` for every symbol, `partial` for a subset of
symbols (a run with a symbol list), `missing` not at all. Newest year first.

**If a recent year shows missing sessions**, run 01_fetch: its daily mode backfills the missing sessions of
its last `max_backfill_days` sessions; for older gaps give `start`/`end`. Old years missing whole stretches
usually mean the history was never migrated (03_migrate) or backfilled.
""",
    ),
    (
        "code",
        """
# NBVAL_CHECK_OUTPUT
snapshot.coverage
""",
    ),
    (
        "md",
        """
## Recent sessions, quarantine and silver files
The sessions of the last `recent_sessions` that bronze does not hold in full (counted from the first session
the manifest holds: older history that was never migrated is not a gap), the rows each session holds
(a sudden drop in rows usually means a partial grouped-daily response: re-fetch that `date` with
`force=True`), and the sessions per year. Below: rows that failed the bar checks (`low ≤ open, close ≤ high`,
`volume ≥ 0`) and sit in `bronze/_quarantine/` with their reason (they are never loaded; a burst on one day
points at the source), and the silver month files per interval.
""",
    ),
    (
        "code",
        """
monitoring.lake_section(snapshot)
""",
    ),
    (
        "md",
        """
## Silver checkpoints
One checkpoint per interval, the commit record of the last resample run: its last processed session and
its bars (complete, and the still-open trailing bar of each symbol). **If an interval lags the others or the
latest session**, run 02_resample; a checkpoint that cannot be read needs `force_full_resample=True`.
""",
    ),
    (
        "code",
        """
monitoring.silver_section(snapshot)
""",
    ),
    (
        "md",
        """
## Postgres retention
`raw_ohlcv` keeps the retention window (3 years + 1 month by default); older bars move to
`raw_ohlcv_archive`. The archive statistics, the rows per month in both tables, and the last archive runs.
**After an archive run every month before the cutoff should be archive-only**; hot rows older than that mean
the archive has not run (04_retention with `mode="archive"`, or the weekly pg_cron job). A run whose
*consistency* is `MISMATCH` or whose status is `failed` was rolled back: read its `error_message`.
""",
    ),
    (
        "code",
        """
monitoring.retention_section(snapshot)
""",
    ),
    (
        "md",
        """
## Runs
Every notebook run the runner recorded (`python -m runner run …`): per notebook the runs, failures and the
last status; the latest runs with the failing cell of failed ones; durations over time (crosses are failed
runs). **A failed run** names its cell; open its executed notebook (`html_url`) to read the traceback. A
duration that keeps growing usually means work that follows the history instead of the new data.
""",
    ),
    (
        "code",
        """
monitoring.runs_section(snapshot)
""",
    ),
]
