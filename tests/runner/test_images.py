"""Chart PNGs: drawn with plotly.js's finance bundle, and with the full bundle for any other trace type."""

from __future__ import annotations

import plotly.graph_objects as go
import psutil
import pytest

from runner.images import FINANCE_PLOTLYJS, chart_pngs, needs_full_plotlyjs

pytestmark = pytest.mark.slow

LAYOUT = {"width": 300, "height": 200, "margin": {"l": 10, "r": 10, "t": 10, "b": 10}}


def _fig(*traces: go.BaseTraceType) -> dict:
    return go.Figure(list(traces), layout=LAYOUT).to_dict()


def test_the_finance_bundle_ships_with_the_runner():
    head = FINANCE_PLOTLYJS.read_bytes()[:200].decode()
    assert "plotly.js (finance - minified)" in head and (FINANCE_PLOTLYJS.parent / "LICENSE.plotly.txt").is_file()


def test_which_figures_need_the_full_bundle():
    assert not needs_full_plotlyjs(_fig(go.Candlestick(x=[1], open=[1], high=[2], low=[0], close=[1]), go.Bar(y=[1])))
    assert not needs_full_plotlyjs({"data": [{"y": [1, 2]}]})  # no type: scatter
    assert needs_full_plotlyjs(_fig(go.Bar(y=[1]), go.Heatmap(z=[[1, 2], [3, 4]])))


def test_every_trace_type_is_drawn_in_one_call():
    # a heatmap is beyond the finance bundle (which would leave the chart empty): the full bundle draws it
    empty, candles, heatmap, bars = chart_pngs(
        [
            _fig(),
            _fig(go.Candlestick(x=[1, 2, 3], open=[1, 2, 3], high=[2, 3, 4], low=[0.5, 1, 2], close=[1.5, 2.5, 3.5])),
            _fig(go.Heatmap(z=[[1, 2], [3, 4]])),
            _fig(go.Bar(y=[3, 1, 2])),
        ],
        width=300,
        height=200,
    )
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in (empty, candles, heatmap, bars))
    assert len({empty, candles, heatmap, bars}) == 4, "every chart is drawn, none is left empty"
    assert not [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name()], "both browsers closed"
