"""04_retention: the Postgres retention policy: deploy it, preview it (dry run), run it (archive), its views.

    plan(settings, mode, retention, as_of, lock_timeout, method) -> RetentionPlan   (pure; checks parameters)
    execute(conn, plan) -> RetentionOutcome
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
]
