"""05_monitoring: lake coverage and gaps, quarantine, split basis per symbol, silver checkpoints, the retention
views, run history.

collect(settings, recent_sessions=30, ...) -> MonitoringSnapshot     (reads every source once)
overview_section(snapshot), lake_section(...), ...                   (what the notebook shows)
"""

from condvest.monitoring.snapshot import (
    MonitoringParams,
    MonitoringSnapshot,
    Section,
    collect,
    lake_section,
    overview_section,
    retention_section,
    runs_section,
    silver_section,
    splits_section,
)

__all__ = [
    "MonitoringParams",
    "MonitoringSnapshot",
    "Section",
    "collect",
    "lake_section",
    "overview_section",
    "retention_section",
    "runs_section",
    "silver_section",
    "splits_section",
]
