"""A self-contained html page of an executed notebook (nbconvert's lab template, images embedded).

Plotly figures are stored in notebooks as ``application/vnd.plotly.v1+json``, which nbconvert does not
render. Each one gets a ``text/html`` rendering (a div and a ``Plotly.newPlot`` call) and the page gets
one inline copy of plotly.js in its head, so the plots show without internet. The lab template loads
require.js from a CDN; when that loads, plotly.js would register itself as an AMD module instead of
``window.Plotly``, so ``define`` is hidden while plotly.js runs.
"""

from __future__ import annotations

import copy
from typing import Any

from runner.scrub import Scrubber

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
#: recorded for the run index, not for people (a notebook shows what it wants under other mimetypes)
_HIDDEN_MIMETYPES = ("application/vnd.condvest.result+json",)


def _plotly_div(figure: dict[str, Any]) -> str:
    import plotly.io as pio

    return pio.to_html(
        figure, full_html=False, include_plotlyjs=False, validate=False, default_width="100%", default_height=525
    )


def _plotly_head() -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<script>window.__condvest_define = window.define; window.define = undefined;</script>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        "<script>window.define = window.__condvest_define;</script>\n"
    )


def notebook_html(nb: Any, scrubber: Scrubber) -> str:
    """The html page of an (already scrubbed) notebook; the page text is scrubbed again before plotly.js
    is added (plotly.js is library code, not output)."""
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
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
    body = scrubber.text(body)
    if figures:
        at = body.find("</head>")
        body = body[:at] + _plotly_head() + body[at:] if at >= 0 else _plotly_head() + body
    return body
