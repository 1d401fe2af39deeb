"""05_monitoring: what the lake, the splits, the silver checkpoints, the Postgres retention policy and the runs
look like.

    snapshot = collect(settings, recent_sessions=30, runs_shown=20)   # one read of every source
    lake_section(snapshot), splits_section(snapshot), silver_section(snapshot), retention_section(snapshot),
    runs_section(snapshot)

Reading is cheap by design: the bronze manifest (one JSON object a year) against the NYSE calendar, the
quarantine and silver listings, the splits and basis objects (two small objects), the checkpoints, the
Postgres retention views and the run index. Bronze objects themselves are never listed. A source that
does not exist yet (an empty lake, a database without the retention policy, no runs) gives an empty
frame and a one-line note saying what would fill it; an unreachable Postgres is reported in the
retention section rather than failing the whole page. The table
and figure builders are pure (frames in, frames or plotly figures out).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from condvest import retention
from condvest.calendar import FIRST_SUPPORTED, last_n_sessions, latest_complete_session, sessions_between
from condvest.checkpoints import all_checkpoints, checkpoint_frame
from condvest.errors import DatabaseError
from condvest.lake import MANIFEST_PREFIX, QUARANTINE_PREFIX, SILVER_PREFIX
from condvest.manifest import ALL, SessionEntry, read_sessions
from condvest.monitoring.params import MonitoringParams
from condvest.monitoring.runs_view import bronze_changed_after_resample, failed_runs
from condvest.monitoring.styles import styled_runs, styled_states
from condvest.monitoring.truth import Truth, read_truth
from condvest.postgres import connect
from condvest.retention import RetentionViews, distribution_figure, retention_log_figure
from condvest.runs import read_index
from condvest.settings import Settings
from condvest.splits import basis_frame, read_basis, read_splits
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

_MANIFEST_YEAR = re.compile(re.escape(MANIFEST_PREFIX) + r"/sessions_(\d{4})\.json$")
_QUARANTINE_DATE = re.compile(re.escape(QUARANTINE_PREFIX) + r"/date=(\d{4}-\d{2}-\d{2})/")
_SILVER_FILE = re.compile(re.escape(SILVER_PREFIX) + r"/silver_(\d+)d/year=(\d{4})/month=(\d{2})/[^/]+\.parquet$")
COVERAGE_COLUMNS = ["year", "expected", "full", "partial", "missing", "coverage_pct", "rows", "first", "last"]
SESSION_COLUMNS = ["date", "status", "rows", "symbols", "source", "run_id", "gaps"]
_TIME = "%Y-%m-%d %H:%M:%S"
_RETENTION_NOTES = {
    "skipped": "skipped (read_postgres=False)",
    "not deployed": "nothing yet: the retention policy is not deployed (run 04_retention with mode='deploy')",
    "previous pipeline": "the previous pipeline's tables, not adopted yet (run 04_retention with mode='adopt';"
    " mode='dry-run' shows what it does)",
}
RUN_COLUMNS = ["started_at", "notebook", "status", "duration_s", "failure", "pipeline", "run_id", "html_url"]


# --------------------------------------------------------------------------------------------- lake


def read_manifest(store: Store, through: dt.date) -> dict[dt.date, SessionEntry]:
    """Every manifest entry up to ``through``: one listing of ``bronze/_manifest/`` for the years it holds, then
    one GET per year object."""
    years = sorted(int(m.group(1)) for o in store.list(MANIFEST_PREFIX + "/") if (m := _MANIFEST_YEAR.match(o.key)))
    if not years or years[0] > through.year:
        return {}
    return read_sessions(store, max(dt.date(years[0], 1, 1), FIRST_SUPPORTED), through)


def session_status(entries: Mapping[dt.date, SessionEntry], sessions: Sequence[dt.date]) -> pd.DataFrame:
    """One row per calendar session: ``full`` (every symbol), ``partial`` (a symbol subset) or ``missing``;
    ``gaps`` names the symbols a fetch found without a bar inside their trading life (WARN: a halt)."""
    rows = [
        (d, "missing", 0, 0, "", "", "")
        if (e := entries.get(d)) is None
        else (d, "full" if e.scope == ALL else "partial", e.rows, e.symbols, e.source, e.run_id, ",".join(e.gaps))
        for d in sessions
    ]
    return pd.DataFrame(rows, columns=SESSION_COLUMNS)


def gaps(sessions: pd.DataFrame) -> pd.DataFrame:
    """The sessions bronze does not hold for every symbol (what a default 01_fetch would backfill)."""
    out = sessions.loc[sessions["status"] != "full", ["date", "status", "symbols", "run_id", "gaps"]]
    return out.reset_index(drop=True)


def coverage_by_year(entries: Mapping[dt.date, SessionEntry], through: dt.date) -> pd.DataFrame:
    """Sessions expected (NYSE calendar, from the first session the manifest holds up to ``through``) against
    sessions held, per year, newest year first."""
    held = sorted(d for d in entries if d <= through)
    if not held:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    st = session_status(entries, sessions_between(max(held[0], FIRST_SUPPORTED), through))
    st = st.assign(year=[d.year for d in st["date"]], held=st["date"].where(st["status"] != "missing"))
    for status in ("full", "partial", "missing"):
        st[status] = st["status"] == status
    df = st.groupby("year").agg(
        expected=("date", "size"), full=("full", "sum"), partial=("partial", "sum"), missing=("missing", "sum"),
        rows=("rows", "sum"), first=("held", "min"), last=("held", "max"),
    )  # fmt: skip
    df["coverage_pct"] = (100.0 * df["full"] / df["expected"]).round(1)
    return df.reset_index()[COVERAGE_COLUMNS].sort_values("year", ascending=False).reset_index(drop=True)


def quarantine_counts(store: Store) -> pd.DataFrame:
    """Quarantined rows per session (files under ``bronze/_quarantine/``, each read whole: they are rare)."""
    import pyarrow.parquet as pq

    per_day: dict[str, dict[str, Any]] = {}
    for o in store.list(QUARANTINE_PREFIX + "/"):
        m = _QUARANTINE_DATE.match(o.key)
        if not m or not o.key.endswith(".parquet"):
            continue
        table = pq.read_table(io.BytesIO(store.get(o.key)), columns=["symbol", "reason"])
        day = per_day.setdefault(m.group(1), {"files": 0, "rows": 0, "symbols": set(), "reasons": set()})
        day["files"] += 1
        day["rows"] += table.num_rows
        day["symbols"].update(table.column("symbol").to_pylist())
        for reason in table.column("reason").to_pylist():
            day["reasons"].update(r.strip() for r in (reason or "").split(";") if r.strip())
    rows = [
        (dt.date.fromisoformat(d), v["files"], v["rows"], len(v["symbols"]), ", ".join(sorted(v["reasons"])))
        for d, v in sorted(per_day.items(), reverse=True)
    ]
    return pd.DataFrame(rows, columns=["date", "files", "rows", "symbols", "reasons"])


def silver_file_counts(store: Store) -> pd.DataFrame:
    """Silver month files per interval, with the months they span: ten listings at once, one per first digit of
    the interval (``silver/silver_1``..``silver_9``, ``silver_0``), instead of one listing of ``silver/`` page
    after page (S3 lists 1,000 keys a round trip; the seed's silver holds 4,584 files)."""
    per: dict[int, list[tuple[str, int]]] = {}
    prefixes = [f"{SILVER_PREFIX}/silver_{d}" for d in range(10)]
    with ThreadPoolExecutor(max_workers=len(prefixes)) as pool:
        for listed in pool.map(lambda prefix: list(store.list(prefix)), prefixes):
            for o in listed:
                if m := _SILVER_FILE.match(o.key):
                    per.setdefault(int(m.group(1)), []).append((f"{m.group(2)}-{m.group(3)}", o.size))
    rows = []
    for n, files in sorted(per.items()):
        months = sorted(month for month, _ in files)
        rows.append((n, len(files), round(sum(size for _, size in files) / 1e6, 2), months[0], months[-1]))
    return pd.DataFrame(rows, columns=["interval", "files", "mb", "first_month", "last_month"])


# --------------------------------------------------------------------------------------------- runs


def _notebook(name: Any) -> str:
    return str(name).removesuffix(".ipynb") if isinstance(name, str) else ""


def _failure(err: Any) -> str:
    if not isinstance(err, dict):
        return ""
    message = str(err.get("evalue") or "").strip().splitlines()
    return f"cell {err.get('cell')}: {err.get('ename')}" + (f": {message[0][:120]}" if message else "")


def recent_runs(runs: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """The last ``limit`` runs of the index, newest first, with the failing cell of failed runs."""
    df = runs.sort_values("started_at", kind="stable").tail(limit).iloc[::-1]
    df = df.assign(started_at=df["started_at"].dt.strftime(_TIME), notebook=[_notebook(n) for n in df["notebook"]],
                   duration_s=df["duration_s"].round(1), failure=[_failure(e) for e in df["error"]])  # fmt: skip
    return df[RUN_COLUMNS].fillna({"pipeline": "", "html_url": ""}).reset_index(drop=True)


def runs_by_notebook(runs: pd.DataFrame) -> pd.DataFrame:
    """Per notebook: runs, ok, failed, the last run's status and time, the median duration, the last failure."""
    cols = ["notebook", "runs", "ok", "failed", "last_status", "last_started", "median_duration_s", "last_failure"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    df = runs.sort_values("started_at", kind="stable")
    df = df.assign(notebook=[_notebook(n) for n in df["notebook"]], ok=df["status"] == "ok",
                   failure=[_failure(e) for e in df["error"]])  # fmt: skip
    df["failed"] = df["status"].isin(["failed", "killed"])  # a run still going is neither
    out = df.groupby("notebook").agg(
        runs=("run_id", "size"), ok=("ok", "sum"), failed=("failed", "sum"), last_status=("status", "last"),
        last_started=("started_at", "last"), median_duration_s=("duration_s", "median"),
        last_failure=("failure", lambda f: next((x for x in reversed(list(f)) if x), "")),
    )  # fmt: skip
    out["last_started"] = out["last_started"].dt.strftime(_TIME)
    out["median_duration_s"] = out["median_duration_s"].round(1)
    return out.reset_index()[cols]


# --------------------------------------------------------------------------------------------- figures


def coverage_figure(coverage: pd.DataFrame) -> Any:
    """Stacked bars per year: sessions held for every symbol, for a subset of symbols, and missing."""
    import plotly.graph_objects as go

    df = coverage.sort_values("year")
    fig = go.Figure()
    for col, color in (("full", "#2ca02c"), ("partial", "#ff7f0e"), ("missing", "#d62728")):
        fig.add_bar(x=df["year"], y=df[col], name=col, marker_color=color)
    title = "Bronze sessions per year against the NYSE calendar"
    fig.update_layout(barmode="stack", title=title, xaxis_title="year", yaxis_title="sessions", height=340)
    return fig


def sessions_figure(sessions: pd.DataFrame) -> Any:
    """Rows per session (the manifest's counts) on a trading-session axis: one slot per NYSE session, so
    weekends and holidays leave no gap; missing sessions as red crosses on the axis."""
    import plotly.graph_objects as go

    order = [str(d) for d in sessions["date"]]
    fig = go.Figure()
    for status, color in (("full", "#1f77b4"), ("partial", "#ff7f0e")):
        part = sessions[sessions["status"] == status]
        fig.add_bar(x=[str(d) for d in part["date"]], y=part["rows"], name=status, marker_color=color)
    gone = sessions[sessions["status"] == "missing"]
    marker = {"symbol": "x", "size": 10, "color": "#d62728"}
    fig.add_scatter(x=[str(d) for d in gone["date"]], y=[0] * len(gone), mode="markers", name="missing", marker=marker)
    fig.update_layout(title="Rows per session in bronze", xaxis_title="session", yaxis_title="rows", height=360)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, nticks=12)
    return fig


def checkpoint_figure(checkpoints: pd.DataFrame) -> Any:
    """Bars per silver interval (complete and still-open), labelled with the last session processed."""
    import plotly.graph_objects as go

    x = [f"{n}d" for n in checkpoints["interval"]]
    labels = [f"last {d}" for d in checkpoints["last_processed_session"]]
    fig = go.Figure()
    fig.add_bar(x=x, y=checkpoints["complete_bars"], name="complete bars")
    fig.add_bar(x=x, y=checkpoints["partial_bars"], name="open bars", text=labels, textposition="outside")
    title = "Silver bars per interval (label: last session processed)"
    fig.update_layout(barmode="stack", title=title, xaxis_title="interval", yaxis_title="bars", height=340)
    return fig


def runs_figure(runs: pd.DataFrame) -> Any:
    """Each run's duration over time, one colour per notebook; failed runs as crosses."""
    import plotly.express as px

    df = runs.assign(notebook=[_notebook(n) for n in runs["notebook"]])
    labels = {"started_at": "started (UTC)", "duration_s": "seconds"}
    symbols = {"ok": "circle", "failed": "x"}
    fig = px.scatter(df, x="started_at", y="duration_s", color="notebook", symbol="status", symbol_map=symbols,
                     hover_data=["run_id"], labels=labels, title="Runs over time")  # fmt: skip
    fig.update_traces(marker={"size": 9})
    fig.update_layout(height=360)
    return fig


# --------------------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class MonitoringSnapshot:
    """Everything the monitoring page shows, read once by ``collect``."""

    as_of: dt.date
    latest_session: dt.date  # the newest complete session on ``as_of``
    coverage: pd.DataFrame  # per year, newest first
    sessions: pd.DataFrame  # the last ``chart_sessions`` sessions and their status
    missing: pd.DataFrame  # sessions not held in full among the last ``recent_sessions``
    recent_sessions: int  # sessions checked for gaps (fewer than asked when the manifest starts later)
    quarantine: pd.DataFrame
    silver_files: pd.DataFrame
    checkpoints: pd.DataFrame
    runs: pd.DataFrame  # the whole run index, oldest first
    runs_shown: int = 20
    postgres: str = "skipped"  # ok | not deployed | skipped | unreachable: <why>
    retention: RetentionViews | None = None
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is empty
    splits: pd.DataFrame = field(default_factory=pd.DataFrame)  # per symbol: basis date and newer splits
    silver_warning: str = ""  # bronze changed after the last resample (``runs_view``), else ""
    truth: Truth | None = None  # suspect moves still open, the last Postgres-against-bronze comparison

    def summary(self) -> dict[str, Any]:
        """The headline figures (for the run index)."""
        return {
            "latest_session": self.latest_session.isoformat(),
            "missing_recent_sessions": len(self.missing),
            "quarantined_rows": int(self.quarantine["rows"].sum()),
            "silver_intervals": len(self.checkpoints),
            "runs": len(self.runs),
            "failed_runs": int(self.runs["status"].isin(["failed", "killed"]).sum()),
            "postgres": self.postgres,
            "rebased_symbols": int((self.splits["basis"] != "unknown").sum()) if len(self.splits) else 0,
            "symbols_behind_a_split": int((self.splits["status"] == "behind").sum()) if len(self.splits) else 0,
            **(self.truth.summary() if self.truth else {}),
        }

    def raise_for_status(self) -> None:
        """Nothing to raise: monitoring reports what it finds (``look`` states), it never fails a run on it."""

    def to_frame(self) -> pd.DataFrame:
        """One line per section: its state (ok / look) and what it found."""
        return self.overview()

    def overview(self) -> pd.DataFrame:
        """One line per section: ``look`` when something deserves a glance (a gap in the recent window, silver
        behind bronze, no retention policy, a notebook whose last run failed, an empty source), else ``ok``."""
        s = self.summary()
        failing = sorted(runs_by_notebook(self.runs).query("last_status != 'ok'")["notebook"])
        silver = sorted({str(d) for d in self.checkpoints["last_processed_session"].dropna()})
        held = self.sessions.loc[self.sessions["status"] != "missing", "date"]
        bronze = str(held.max()) if len(held) else ""
        hot = self.retention.distribution if self.retention else pd.DataFrame()
        detail = {
            "lake": f"{s['missing_recent_sessions']} of the last {self.recent_sessions} sessions not held in full, "
            f"newest held {bronze or 'none'} (latest complete {self.latest_session}); "
            f"{s['quarantined_rows']} rows quarantined",
            "silver": f"{s['silver_intervals']} intervals, last session processed {', '.join(silver) or 'none'}"
            + (f"; {self.silver_warning}" if self.silver_warning else ""),
            "retention": f"{int(hot['hot_records'].sum())} rows in raw_ohlcv, "
            f"{int(hot['archived_records'].sum())} in raw_ohlcv_archive"
            if len(hot)
            else "raw_ohlcv is empty",
            "splits": f"{s['rebased_symbols']} symbol(s) with a recorded basis, "
            f"{s['symbols_behind_a_split']} with a split newer than their basis",
            **({"truth": self.truth.detail()} if self.truth else {}),
            "runs": f"{s['runs']} runs, {s['failed_runs']} failed"
            + (f"; last run failed: {', '.join(failing)}" if failing else ""),
        }
        look = {
            "lake": s["missing_recent_sessions"] > 0,
            "silver": (bool(silver) and silver[0] < bronze) or bool(self.silver_warning),
            "retention": self.postgres != "ok",
            "splits": s["symbols_behind_a_split"] > 0,
            "truth": bool(self.truth and self.truth.look),
            "runs": bool(failing),
        }
        rows = [(k, "look" if k in self.notes or look[k] else "ok", self.notes.get(k) or v) for k, v in detail.items()]
        if failing:  # a notebook whose last run failed is a failure, not a glance
            rows[-1] = ("runs", "fail", rows[-1][2])
        return pd.DataFrame(rows, columns=["section", "state", "detail"]).set_index("section")


def read_retention(settings: Settings) -> tuple[str, RetentionViews | None]:
    """``("ok", views)`` when the policy is deployed, else ``("not deployed" | "previous pipeline" |
    "unreachable: <why>", None)``."""
    try:
        conn = connect(settings, autocommit=True, start_embedded=False)
    except DatabaseError as exc:
        log.warning("postgres=unreachable error=%r", str(exc))
        return f"unreachable: {exc}", None
    try:
        if not retention.is_deployed(conn):
            return ("previous pipeline" if retention.legacy_tables(conn) else "not deployed"), None
        return "ok", retention.read_views(conn)
    finally:
        conn.close()


def collect(settings: Settings, p: MonitoringParams | None = None, *, store: Store | None = None) -> MonitoringSnapshot:
    """Read every source once (see ``MonitoringParams``); parameters are checked before anything is read. The
    sources are independent, so they are read at the same time (on S3 each is one or more round trips)."""
    c = (p or MonitoringParams()).check()
    recent, chart, shown, read_postgres = c.recent_sessions, c.chart_sessions, c.runs_shown, c.read_postgres
    latest = latest_complete_session(day := c.as_of or settings.today())
    store = store or open_store(settings=settings)
    with ThreadPoolExecutor(max_workers=8) as pool:
        reads = {
            "entries": pool.submit(read_manifest, store, latest),
            "checkpoints": pool.submit(all_checkpoints, store),
            "runs": pool.submit(read_index, settings, expand_results=False),
            "retention": pool.submit(read_retention, settings) if read_postgres else None,
            "splits": pool.submit(read_splits, store),
            "basis": pool.submit(read_basis, store),
            "quarantine": pool.submit(quarantine_counts, store),
            "silver": pool.submit(silver_file_counts, store),
            "truth": pool.submit(read_truth, store, last_n_sessions(latest, recent)[0]),
        }
        got = {k: f.result() if f is not None else None for k, f in reads.items()}
    entries, docs, runs, basis = got["entries"], got["checkpoints"], got["runs"], got["basis"]
    pg, views = got["retention"] if read_postgres else ("skipped", None)
    window = last_n_sessions(latest, max(recent, chart))
    if entries:  # sessions before the first one the manifest holds are history not in bronze yet, not gaps
        window = [d for d in window if d >= min(entries)]
    status = session_status(entries, window)
    checkpoints = checkpoint_frame(docs)
    notes = {}
    if not entries:
        notes["lake"] = "nothing yet: the bronze manifest holds no session (run 01_fetch or 03_migrate)"
    if checkpoints.empty:
        notes["silver"] = "nothing yet: no silver checkpoint (run 02_resample)"
    if views is None:
        notes["retention"] = _RETENTION_NOTES.get(pg, f"Postgres {pg}")
    splits = basis_frame(got["splits"], basis)  # empty is normal: no split seen yet
    if runs.empty:
        notes["runs"] = f"nothing yet: no run recorded under {settings.runs_uri} (python -m runner run NOTEBOOK)"
    snapshot = MonitoringSnapshot(
        as_of=day,
        latest_session=latest,
        coverage=coverage_by_year(entries, latest),
        sessions=status.tail(chart).reset_index(drop=True),
        missing=gaps(status.tail(recent)),
        recent_sessions=min(recent, len(window)),
        quarantine=got["quarantine"],
        silver_files=got["silver"],
        checkpoints=checkpoints,
        runs=runs,
        runs_shown=shown,
        postgres=pg,
        retention=views,
        notes=notes,
        splits=splits,
        silver_warning=bronze_changed_after_resample(entries, basis, docs),
        truth=got["truth"],
    )
    log.info("monitoring_collected %s", " ".join(f"{k}={v!r}" for k, v in snapshot.summary().items()))
    return snapshot


# --------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """Captioned tables, figures and short texts, or a one-line note when the source is absent; displays itself
    in a notebook (Markdown captions, then each item)."""

    note: str = ""
    items: tuple[tuple[str, Any], ...] = ()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        def text(t: str) -> None:
            display({"text/markdown": t, "text/plain": t}, raw=True)

        if self.note:
            text(f"*{self.note}*")
        with pd.option_context("display.max_colwidth", None, "display.max_rows", 200):
            for caption, item in self.items:
                if caption:
                    text(f"**{caption}**")
                if isinstance(item, str):
                    text(item)
                else:
                    display(item)


def overview_section(s: MonitoringSnapshot) -> Section:
    """The overview table, shown with its details unabridged and its states coloured."""
    return Section("", (("", styled_states(s.overview())),))


def lake_section(s: MonitoringSnapshot) -> Section:
    """Missing sessions of the recent window, rows per session, sessions per year, quarantine, silver files."""
    items: tuple[tuple[str, Any], ...] = ()
    if "lake" not in s.notes:
        if len(s.missing):
            items += ((f"Sessions not held in full among the last {s.recent_sessions}", s.missing),)
        else:
            items += (("", f"No session missing among the last {s.recent_sessions}."),)
        items += (("", sessions_figure(s.sessions)), ("", coverage_figure(s.coverage)))
    items += (
        ("Quarantined rows per session", s.quarantine if len(s.quarantine) else "none"),
        ("Silver files per interval", s.silver_files if len(s.silver_files) else "none"),
    )
    return Section(s.notes.get("lake", ""), items)


def splits_section(s: MonitoringSnapshot) -> Section:
    """Per symbol with a known split or basis: the basis date of its bronze history and any newer split."""
    if s.splits.empty:
        return Section("nothing yet: no split known (01_fetch reads the splits of every session it fetches)")
    table = s.splits.assign(_o=s.splits["status"] != "behind").sort_values(["_o", "symbol"]).drop(columns="_o")
    return Section(
        "", (("Price basis per symbol (behind: a split newer than the basis)", table.reset_index(drop=True)),)
    )


def truth_section(s: MonitoringSnapshot) -> Section:
    """Suspect moves no split explains (with the split check), and what the last sync of Postgres with bronze found."""
    return Section("", s.truth.items()) if s.truth else Section("not read")


def silver_section(s: MonitoringSnapshot) -> Section:
    """The checkpoint of each silver interval and its bars."""
    if s.checkpoints.empty:
        return Section(s.notes["silver"])
    return Section("", (("", s.checkpoints), ("", checkpoint_figure(s.checkpoints))))


def retention_section(s: MonitoringSnapshot) -> Section:
    """The three retention views (archive statistics, rows per month, the last archive runs)."""
    v = s.retention
    if v is None:
        return Section(s.notes["retention"])
    items: list[tuple[str, Any]] = [("The archive (v_archive_statistics)", v.statistics)]
    items.append(("", distribution_figure(v.distribution) if len(v.distribution) else "raw_ohlcv is empty"))
    if len(v.log):
        items += [("Last archive runs (v_retention_log_summary)", v.log), ("", retention_log_figure(v.log))]
    else:
        items.append(("", "No archive run logged yet (04_retention with mode='archive')."))
    return Section("", tuple(items))


def runs_section(s: MonitoringSnapshot) -> Section:
    """Runs per notebook, the last runs, and durations over time."""
    if s.runs.empty:
        return Section(s.notes["runs"])
    per_notebook = ("Per notebook", styled_runs(runs_by_notebook(s.runs)))
    last = (f"Last {s.runs_shown} runs, newest first", styled_runs(recent_runs(s.runs, s.runs_shown)))
    failed = failed_runs(s.runs, s.runs_shown)
    bad = (f"Failed runs, newest first ({len(failed)})", styled_runs(failed) if len(failed) else "none")
    return Section("", (per_notebook, last, bad, ("", runs_figure(s.runs))))
