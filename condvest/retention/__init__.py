"""04_retention: the Postgres retention policy: deploy it, preview it (dry run), run it (archive), its views.

    run_retention(settings, RetentionParams(mode="deploy", ...)) -> RetentionOutcome   (connects, runs, reads)
    plan(settings, RetentionParams(...)) -> RetentionPlan     (pure; checks parameters)
    execute(conn, plan) -> RetentionOutcome                   (on a connection of your own)
    read_views(conn) -> RetentionViews, distribution_figure / retention_log_figure

Modules: ``policy`` (the SQL files applied, the procedure called), ``views`` (the monitoring views and
their charts); ``python -m condvest.retention deploy|dry-run|archive`` is its command line.
"""

from condvest.retention.policy import (
    METHODS,
    MODES,
    POLICY_FILES,
    ArchiveResult,
    DeployReport,
    RetentionOutcome,
    RetentionParams,
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
    "ArchiveResult",
    "DeployReport",
    "RetentionOutcome",
    "RetentionParams",
    "RetentionPlan",
    "RetentionViews",
    "archive",
    "archive_statistics",
    "cutoff",
    "deploy",
    "distribution",
    "distribution_figure",
    "dry_run",
    "ensure_partitions",
    "execute",
    "is_deployed",
    "plan",
    "read_views",
    "retention_cutoff",
    "retention_log",
    "retention_log_figure",
    "run_retention",
]
