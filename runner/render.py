"""The run log a person reads: a header cell, and an html page that renders offline.

* ``executed_page_cells(nb)``: what an executed notebook's pages show: progress bars in their final state (or
  not at all), no widget reprs, no note about the source notebook's stored reference outputs.
* ``with_header(nb, header)``: a markdown cell first in the executed notebook (ipynb and html) naming the
  run id, pipeline and stage, status, duration, parameters, code version, host and links to the previous
  and next stage's pages.
* ``run_page(nb, scrubber, title=..., plotly_src=...)``: nbconvert's lab template with no external script
  (require.js, MathJax and the widget manager come from CDNs in the template: they are left out), the
  page title naming the notebook and the run, and plotly figures drawn by one plotly.js file that the
  page references relatively (``plotly_src``; ``PLOTLY_FILE`` is written once per run folder by the
  runner), so a run folder stays small and self-contained. Without ``plotly_src`` plotly.js is inlined.

Plotly figures are stored in notebooks as ``application/vnd.plotly.v1+json``, which nbconvert does not
render: each gets a ``text/html`` rendering (a div and a ``Plotly.newPlot`` call).
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.scrub import Scrubber
from runner.widgets import settle_widgets

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
#: recorded for the run index, not for people (a notebook shows what it wants under other mimetypes)
_HIDDEN_MIMETYPES = ("application/vnd.condvest.result+json",)
HEADER_TAG = "condvest-run-header"
#: a markdown cell about the outputs stored in the source notebook (nbval's reference outputs of the offline
#: demo market): true of the unexecuted source only, so an executed notebook's pages leave it out
REFERENCE_NOTE_TAG = "reference-note"
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"(?:https?:)?//[^\"]*\"[^>]*>\s*</script>\s*", re.I)


def plotly_file() -> str:
    """The file name of the shared plotly.js, versioned so that runs of different plotly versions coexist."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


#: the runs store's folder of files the pages share (``static/plotly-<version>.min.js``)
STATIC_FOLDER = "static"


def plotly_key() -> str:
    """Where the runs store keeps the plotly.js every page shares (written once per store and version)."""
    return f"{STATIC_FOLDER}/{plotly_file()}"


def plotly_src_for(page_key: str) -> str:
    """The shared plotly.js relative to a page at ``page_key`` (``r1/x.html`` -> ``../static/plotly-...js``)."""
    return "../" * page_key.count("/") + plotly_key()


def plotly_scripts(src: str) -> str:
    """The script tags of a page: the runs store's shared plotly.js at ``src``, else (a run folder downloaded on
    its own with ``python -m runner bundle``, which puts a copy beside each page) the copy beside the page."""
    return (
        f'<script src="{html.escape(src, quote=True)}"></script>\n'
        "<script>/* a run folder on its own: the copy of plotly.js beside the page */\n"
        f"if (!window.Plotly) document.write('<script src=\"{plotly_file()}\"><\\/script>');</script>\n"
    )


def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


@dataclass(frozen=True)
class StageLink:
    """Another stage's page, relative to this one."""

    notebook: str
    href: str


@dataclass(frozen=True)
class RunHeader:
    run_id: str
    notebook: str
    status: str
    started_at: dt.datetime
    duration_s: float
    parameters: Mapping[str, Any] = field(default_factory=dict)
    code_version: str = ""
    host: str = ""
    pipeline: str | None = None
    pipeline_run_id: str | None = None
    stage: int | None = None
    stages: int | None = None
    previous: StageLink | None = None
    next: StageLink | None = None
    failing_cell: str | None = None
    attempt: int = 1
    #: a failed run's error (``ZeroDivisionError: division by zero``), the line that raised, and the failing
    #: cell's id (the status links to the cell: nbconvert's anchor ``#cell-id=<id>``)
    error: str | None = None
    error_line: str | None = None
    failing_cell_id: str | None = None
    #: links from the page to ``runs/index.html`` and, in a pipeline, to its overview page
    runs_index: str | None = None
    pipeline_index: str | None = None

    def markdown(self) -> str:
        mark = "ok" if self.status == "ok" else "**failed**"
        cell = self.failing_cell
        if cell and self.failing_cell_id:
            cell = f"[{cell}](#cell-id={self.failing_cell_id})"
        rows = [
            ("run", f"`{self.run_id}`"),
            ("notebook", f"`{self.notebook}`"),
            ("status", mark + (f" in {cell}" if cell else "")),
            ("started (UTC)", self.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")),
            ("duration", f"{self.duration_s:.1f} s"),
            ("parameters", f"`{json.dumps(dict(self.parameters), default=str)}`" if self.parameters else "defaults"),
            ("code version", f"`{self.code_version}`" if self.code_version else "unknown"),
            ("host", f"`{self.host}`" if self.host else "unknown"),
        ]
        if self.error:
            at = f" at `{_code(self.error_line)}`" if self.error_line else ""
            rows.insert(3, ("error", f"`{_code(self.error)}`{at}"))
        if self.attempt > 1:
            rows.insert(1, ("attempt", f"{self.attempt} (a retry of run `{self.run_id}`)"))
        shard = (self.parameters or {}).get("shard")
        if shard:
            rows.insert(1, ("pipeline", f"shard {shard} of sharded run `{self.pipeline_run_id}`"))
        elif self.pipeline:
            of = f" of {self.stages}" if self.stages else ""
            rows.insert(1, ("pipeline", f"`{self.pipeline}` stage {self.stage}{of} (`{self.pipeline_run_id}`)"))
            prev = f"[← {self.previous.notebook}]({self.previous.href})" if self.previous else "first stage"
            nxt = f"[{self.next.notebook} →]({self.next.href})" if self.next else "last stage"
            rows.append(("stages", f"{prev} · {nxt}"))
        if self.runs_index:
            overview = f" · [pipeline overview]({self.pipeline_index})" if self.pipeline_index else ""
            rows.append(("browse", f"[all runs]({self.runs_index}){overview}"))
        body = "\n".join(f"| {k} | {v.replace('|', '&#124;')} |" for k, v in rows)
        return f"**Run log** of `{self.notebook}`\n\n| | |\n|---|---|\n{body}\n"


def executed_page_cells(nb: Any) -> Any:
    """A copy of an executed notebook as its pages show it: progress bars in their final state or gone, no
    widget reprs (``runner.widgets.settle_widgets``), and no cell tagged ``REFERENCE_NOTE_TAG``."""
    nb = settle_widgets(nb)
    nb.cells = [c for c in nb.cells if REFERENCE_NOTE_TAG not in (c.get("metadata", {}).get("tags") or [])]
    return nb


def _code(text: str, width: int = 300) -> str:
    """``text`` on one line, fit for a Markdown code span inside a table cell."""
    one = " ".join(text.split()).replace("`", "'")
    return one if len(one) <= width else one[: width - 3] + "..."


def with_header(nb: Any, header: RunHeader) -> Any:
    """A copy of the notebook with the run's header as its first cell (tagged ``HEADER_TAG``)."""
    import nbformat

    nb = copy.deepcopy(nb)
    cell = nbformat.v4.new_markdown_cell(header.markdown(), metadata={"tags": [HEADER_TAG]})
    cell.id = "run-header"
    nb.cells.insert(0, cell)
    return nb


def _plotly_div(figure: dict[str, Any]) -> str:
    import plotly.io as pio

    return pio.to_html(
        figure, full_html=False, include_plotlyjs=False, validate=False, default_width="100%", default_height=525
    )


@dataclass(frozen=True)
class RunPage:
    html: str
    figures: int


def run_page(nb: Any, scrubber: Scrubber, *, title: str | None = None, plotly_src: str | None = None) -> RunPage:
    """The html page of an (already scrubbed) notebook; the page text is scrubbed again before plotly.js
    is added (library code, not output)."""
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)  # the widget manager would be fetched from a CDN; outputs keep their text
    if title:
        nb.metadata["title"] = title
    figures = 0
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data is not None:
                for mimetype in _HIDDEN_MIMETYPES:
                    data.pop(mimetype, None)
                if not data:
                    continue
                if PLOTLY_MIMETYPE in data:
                    data["text/html"] = _plotly_div(dict(data.pop(PLOTLY_MIMETYPE)))
                    figures += 1
            kept.append(out)
        if "outputs" in cell:
            cell.outputs = kept
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    body = _EXTERNAL_SCRIPT.sub("", scrubber.text(body))
    if figures:
        if plotly_src is not None:
            script = plotly_scripts(plotly_src)
        else:
            script = f'<script type="text/javascript">{plotly_js().decode()}</script>\n'
        at = body.find("</head>")
        body = body[:at] + script + body[at:] if at >= 0 else script + body
    return RunPage(body, figures)


def warm_up() -> None:
    """Import nbconvert and render a two-cell notebook, so that the first ``run_page`` finds its modules and
    compiled templates ready (BENCHMARKS.md: the html page's share of a run). The runner calls it in a thread
    while a notebook's cells run."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("warm-up"), nbformat.v4.new_code_cell("1")]
    HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(nb)


def notebook_html(nb: Any, scrubber: Scrubber) -> str:
    """The self-contained html page of an (already scrubbed) notebook (plotly.js inline)."""
    return run_page(nb, scrubber).html
