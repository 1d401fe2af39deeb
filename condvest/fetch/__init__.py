"""01_fetch: Polygon daily bars into bronze (the source of truth), the Postgres cache and the manifest.

    run_fetch(settings, FetchParams(...)) -> FetchReport
    plan(params, today, missing) -> FetchPlan        (pure: which sessions a run fetches, and why)

Modules: ``plan`` (parameters and the sessions to fetch), ``run`` (the run: source, bronze, Postgres,
manifest), ``pg_cache`` (the Postgres upsert of the retention window), ``rebase`` (the splits of the
fetched sessions, and the re-fetch of a split symbol's whole history on the current price basis), ``sharded``
(a history backfill split by symbol: the shards' staged outcomes, and their commit).
"""

from condvest.fetch.plan import FetchParams, FetchPlan, backfill_window, plan
from condvest.fetch.rebase import RebaseReport
from condvest.fetch.run import FetchReport, SessionResult, run_fetch

__all__ = [
    "FetchParams",
    "FetchPlan",
    "FetchReport",
    "RebaseReport",
    "SessionResult",
    "backfill_window",
    "plan",
    "run_fetch",
]
