"""01_fetch: Polygon daily bars into bronze (the source of truth), the Postgres cache and the manifest.

    run_fetch(settings, FetchParams(...)) -> FetchReport
    plan(params, today, missing) -> FetchPlan        (pure: which sessions a run fetches, and why)

Modules: ``params`` (the parameters, checked once: ``FetchParams.check() -> CheckedFetch``), ``plan`` (the
sessions to fetch, and the held ones to settle), ``run`` (the run by mode: source, bronze, Postgres, manifest),
``universe`` (a history backfill of every symbol from each session's grouped answer), ``coverage`` (what each
session holds and what the manifest records), ``report`` (its result:
each session's ``SessionOutcome``), ``writer`` (a run's serialised writes: bronze, then Postgres),
``suspects`` (moves beyond the limits with no split recorded), ``rebase`` (the splits of the fetched sessions,
and the re-fetch of a split symbol's whole history on the current price basis), ``sharded`` (a history
backfill split by symbol: the shards' staged outcomes, and their commit).
"""

from condvest.fetch.params import CheckedFetch, FetchParams
from condvest.fetch.plan import FetchPlan, backfill_window, plan
from condvest.fetch.rebase import RebaseReport
from condvest.fetch.report import FetchReport, SessionOutcome, SessionResult
from condvest.fetch.run import run_fetch

__all__ = [
    "CheckedFetch",
    "FetchParams",
    "FetchPlan",
    "FetchReport",
    "RebaseReport",
    "SessionOutcome",
    "SessionResult",
    "backfill_window",
    "plan",
    "run_fetch",
]
