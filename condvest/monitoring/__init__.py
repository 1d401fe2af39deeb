"""05_monitoring: lake coverage and gaps, quarantine, split basis per symbol, suspect moves and Postgres against
bronze (``truth``), silver checkpoints, the retention views, run history.

collect(settings, MonitoringParams(recent_sessions=30, ...)) -> MonitoringSnapshot     (reads every source once)
MonitoringParams(...).check() -> CheckedMonitoring                   (``params``: pure, before anything is read)
overview_section(snapshot), lake_section(...), ...                   (what the notebook shows)
"""

from condvest.monitoring.params import CheckedMonitoring, MonitoringParams
from condvest.monitoring.runs_view import bronze_changed_after_resample, failed_runs
from condvest.monitoring.snapshot import (
    MonitoringSnapshot,
    Section,
    collect,
    lake_section,
    overview_section,
    retention_section,
    runs_section,
    silver_section,
    splits_section,
    truth_section,
)

__all__ = [
    "CheckedMonitoring",
    "MonitoringParams",
    "MonitoringSnapshot",
    "Section",
    "bronze_changed_after_resample",
    "collect",
    "failed_runs",
    "lake_section",
    "overview_section",
    "retention_section",
    "runs_section",
    "silver_section",
    "splits_section",
    "truth_section",
]
