"""The run store a person can browse: ``<runs>/index.html`` (every run, newest first: status, notebook, pipeline,
duration, the failing line, links to its page and notebook) and a pipeline's overview page
``<runs>/<pipeline run id>/index.html`` (its stages in order), both rewritten from the run index after each run;
and ``bundle``, a run folder made readable on its own (offline, away from the runs store).

The pages are plain html with relative links, so they work from a local folder, a synced copy or a static
website on the bucket. Two runs finishing at the same moment each rewrite ``index.html`` from the records they
read; the next run's rewrite lists both.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from condvest.errors import ObjectNotFound, ParameterError
from condvest.runs import newest_records, read_records
from condvest.storage import Store
from runner.render import plotly_file, plotly_js, plotly_key

__all__ = ["INDEX_PAGE", "bundle_run", "pipeline_page", "runs_page", "unique_run", "write_browse_pages"]

log = logging.getLogger(__name__)

INDEX_PAGE = "index.html"
#: the newest runs ``index.html`` lists (``python -m runner list`` reads them all)
MAX_LISTED = 300

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
table { border-collapse: collapse; } th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; } code { font-size: 12px; }
.ok { color: #1a7f37; } .failed, .killed { color: #c62828; font-weight: 600; } .running { color: #9a6700; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _rel(key: str | None, base: str) -> str | None:
    """``key`` (relative to the runs root) as a link from a page in folder ``base`` (``""``: the root)."""
    if not isinstance(key, str) or not key:
        return None
    return key.removeprefix(base + "/") if base and key.startswith(base + "/") else "../" * bool(base) + key


def _failure(error: Any) -> str:
    if not isinstance(error, Mapping):
        return ""
    message = str(error.get("evalue") or "").strip().splitlines()
    where = f"cell {error.get('cell')}" if error.get("cell") is not None else "a cell"
    if error.get("lineno") is not None:
        where += f", line {error.get('lineno')}"
    text = error.get("line") or error.get("source")
    return (
        f"{where}" + (f" `{text}`" if text else "") + f": {error.get('ename')}" + (f": {message[0]}" if message else "")
    )


def _duration(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return ""


def _page(title: str, intro: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(rows_cell for rows_cell in r) + "</tr>" for r in rows)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body><h1>{_e(title)}</h1>\n<p>{intro}</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n</body></html>\n"
    )


def _row(rec: Mapping[str, Any], base: str, *, with_pipeline: bool) -> list[str]:
    status = str(rec.get("status") or "")
    page, nb = _rel(rec.get("html"), base), _rel(rec.get("ipynb"), base)
    run = f'<a href="{_e(page)}">{_e(rec.get("run_id"))}</a>' if page else _e(rec.get("run_id"))
    files = f' <a href="{_e(nb)}">ipynb</a>' if nb else ""
    cells = [
        f"<td>{_e(str(rec.get('started_at') or '')[:19].replace('T', ' '))}</td>",
        f'<td class="{_e(status)}">{_e(status)}</td>',
        f"<td>{_e(str(rec.get('notebook') or '').removesuffix('.ipynb'))}</td>",
        f"<td>{run}{files}</td>",
        f'<td class="num">{_e(_duration(rec.get("duration_s")))}</td>',
    ]
    if with_pipeline:
        pid = rec.get("pipeline_run_id")
        label = f"{rec.get('pipeline')} stage {rec.get('stage')}" if rec.get("stage") else rec.get("pipeline")
        link = f'<a href="{_e(pid)}/{INDEX_PAGE}">{_e(label)}</a>' if pid else ""
        cells.insert(3, f"<td>{link}</td>")
    cells.append(f"<td><code>{_e(_failure(rec.get('error')))}</code></td>")
    return cells


def runs_page(records: Iterable[Mapping[str, Any]], total: int | None = None) -> str:
    """``<runs>/index.html``: the runs given, newest first (at most ``MAX_LISTED``); ``total``: how many runs the
    index holds in all (the records given when not said)."""
    recs = sorted(records, key=lambda r: str(r.get("started_at") or ""), reverse=True)[:MAX_LISTED]
    total = max(total or 0, len(recs))
    failed = sum(1 for r in recs if r.get("status") not in ("ok", "running"))
    if total > len(recs):
        intro = (
            f"{total} runs; the newest {len(recs)} are listed, {failed} of them not ok, newest first. "
            "<code>python -m runner list</code> reads them all."
        )
    else:
        intro = (
            f"{total} runs, {failed} not ok, newest first. "
            "<code>python -m runner list</code> and <code>show</code> read the same index."
        )
    header = ["started (UTC)", "status", "notebook", "pipeline", "run (page)", "duration", "failure"]
    rows = [_row(r, "", with_pipeline=True) for r in recs]
    return _page("Runs", intro, header, rows)


def pipeline_page(pipeline_run_id: str, records: Iterable[Mapping[str, Any]]) -> str:
    """``<runs>/<pipeline run id>/index.html``: the pipeline's stages (or a sharded run's parts) in order."""
    recs = sorted(
        (r for r in records if r.get("pipeline_run_id") == pipeline_run_id),
        key=lambda r: (r.get("stage") or 0, str(r.get("started_at") or "")),
    )
    name = next((r.get("pipeline") for r in recs if r.get("pipeline")), "pipeline")
    states = [str(r.get("status")) for r in recs]
    state = "ok" if states and all(s == "ok" for s in states) else next((s for s in states if s != "ok"), "empty")
    intro = f"Pipeline <b>{_e(name)}</b>, run <code>{_e(pipeline_run_id)}</code>: {len(recs)} run(s), " + (
        f'<span class="{_e(state)}">{_e(state)}</span>. <a href="../{INDEX_PAGE}">All runs</a>.'
    )
    header = ["started (UTC)", "status", "notebook", "stage", "run (page)", "duration", "failure"]
    rows = []
    for r in recs:
        row = _row(r, pipeline_run_id, with_pipeline=False)
        row.insert(3, f"<td>{_e(r.get('stage') or '')}</td>")
        rows.append(row)
    return _page(f"{name} · {pipeline_run_id}", intro, header, rows)


def write_browse_pages(store: Store, pipeline_run_id: str | None = None, newest: int = MAX_LISTED) -> None:
    """Rewrite ``index.html`` (and ``<pipeline_run_id>/index.html``) from the ``newest`` records of the run index:
    every run pays one LIST and at most ``newest`` GETs, however long the history (a pipeline's own runs are among
    the newest). Never raises for a page (the run is recorded already): a warning says what went wrong."""
    try:
        records, total = newest_records(store, newest)
        store.put(INDEX_PAGE, runs_page(records, total).encode())
        if pipeline_run_id:
            store.put(f"{pipeline_run_id}/{INDEX_PAGE}", pipeline_page(pipeline_run_id, records).encode())
    except Exception as exc:  # noqa: BLE001  a browse page is a convenience; the run and its index are written
        log.warning("runs index page not written runs=%s error=%s", store.uri, f"{type(exc).__name__}: {exc}"[:300])


def unique_run(ids: Iterable[Any], text: str) -> str:
    """The run id (or pipeline run id) among ``ids`` that is ``text`` or the only one starting with it;
    ``ParameterError`` naming the candidates when it is ambiguous, or when none matches."""
    known = sorted({i for i in ids if isinstance(i, str) and i})
    if text in known:
        return text
    matches = [i for i in known if i.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
        raise ParameterError(f"{text!r} starts {len(matches)} run ids ({shown}); give more of it", parameter="run")
    raise ParameterError(f"no run {text!r} in the run index (python -m runner list)", parameter="run")


def bundle_run(store: Store, run: str, out: Path) -> Path:
    """Copy a run's folder (a run id, or a pipeline or sharded run's id: the whole folder) from the runs store into
    ``out/<folder>/`` with plotly.js beside each page, so its pages render offline on their own (e-mailed,
    downloaded, opened from a laptop). Returns the folder written; ``ParameterError`` when the index has no
    such run."""
    records = read_records(store)
    mine = [r for r in records if r.get("run_id") == run or r.get("pipeline_run_id") == run]
    keys = [k for r in mine for k in (r.get("html"), r.get("ipynb")) if isinstance(k, str)]
    if not keys:
        raise ParameterError(f"no run {run!r} with pages in the run index (python -m runner list)", parameter="run")
    folder = out / keys[0].split("/")[0]
    js: bytes | None = None
    for key in sorted({o.key for k in keys for o in store.list(k.rsplit("/", 1)[0] + "/")}):
        target = out / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))
        if key.endswith(".html") and b"Plotly.newPlot" in target.read_bytes():
            js = js if js is not None else _shared_plotly(store)
            (target.parent / plotly_file()).write_bytes(js)
    if any(r.get("pipeline_run_id") == run for r in mine):
        (folder / INDEX_PAGE).write_text(pipeline_page(run, records))
    (folder / "run.json").write_text(json.dumps(mine, indent=1, default=str))
    return folder


def _shared_plotly(store: Store) -> bytes:
    """The store's shared plotly.js, or the installed plotly's (the same version: the name carries it)."""
    try:
        return store.get(plotly_key())
    except ObjectNotFound:
        return plotly_js()
