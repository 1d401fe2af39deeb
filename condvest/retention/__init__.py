"""04_retention: the Postgres retention policy: deploy it, preview it (dry run), run it (archive), its views.

    run_retention(settings, RetentionParams(mode="deploy", ...)) -> RetentionOutcome   (connects, runs, reads)
        modes: deploy, dry-run, archive, adopt (the previous pipeline's tables converted in place), sync (raw_ohlcv
        compared with bronze over the window, session by session, and re-filled from it)
    sync(conn, store, cutoff, as_of) -> SyncReport            (the cache follows bronze; no API call)
    plan(settings, RetentionParams(...)) -> RetentionPlan     (pure; checks parameters)
    execute(conn, plan) -> RetentionOutcome                   (on a connection of your own)
    read_views(conn) -> RetentionViews, distribution_figure / retention_log_figure

Modules: ``params`` (the parameters, checked once: ``RetentionParams.check() -> CheckedRetention``), ``policy``
(the SQL files applied, the procedure called), ``adopt`` (the previous pipeline's tables
converted in place), ``views`` (the monitoring views and their charts), ``sync`` (Postgres against bronze);
``python -m condvest.retention deploy|dry-run|archive|adopt`` is its command line.
"""

from condvest.retention.adopt import AdoptionPlan, AdoptionReport, adopt, inspect, legacy_tables
from condvest.retention.params import METHODS, MODES, CheckedRetention, RetentionParams
from condvest.retention.policy import (
    POLICY_FILES,
    ArchiveResult,
    DeployReport,
    RetentionOutcome,
    RetentionPlan,
    archive,
    cutoff,
    deploy,
    dry_run,
    ensure_partitions,
    execute,
    is_deployed,
    plan,
    retention_cutoff,
    run_retention,
)
from condvest.retention.sync import SyncReport, sync
from condvest.retention.views import (
    RetentionViews,
    archive_statistics,
    distribution,
    distribution_figure,
    read_views,
    retention_log,
    retention_log_figure,
)

__all__ = [
    "METHODS",
    "MODES",
    "POLICY_FILES",
    "AdoptionPlan",
    "AdoptionReport",
    "ArchiveResult",
    "CheckedRetention",
    "DeployReport",
    "RetentionOutcome",
    "RetentionParams",
    "RetentionPlan",
    "RetentionViews",
    "SyncReport",
    "adopt",
    "archive",
    "archive_statistics",
    "cutoff",
    "deploy",
    "distribution",
    "distribution_figure",
    "dry_run",
    "ensure_partitions",
    "execute",
    "inspect",
    "is_deployed",
    "legacy_tables",
    "plan",
    "read_views",
    "retention_cutoff",
    "retention_log",
    "retention_log_figure",
    "run_retention",
    "sync",
]
