"""The chart PNGs' browser draws with the same plotly.js as the pages: the vendored finance bundle is the version
of plotly.js that the plotly package ships (after a plotly upgrade, ``tools/vendor_plotly.py`` refreshes it)."""

from __future__ import annotations

from plotly.offline import get_plotlyjs_version

from runner.images import FINANCE_PLOTLYJS, finance_plotlyjs_version


def test_the_vendored_finance_bundle_is_the_plotly_packages_version():
    vendored, shipped = finance_plotlyjs_version(FINANCE_PLOTLYJS), get_plotlyjs_version()
    assert vendored == shipped, f"finance bundle v{vendored}, plotly ships v{shipped}: run tools/vendor_plotly.py"


def test_the_version_is_read_from_the_bundles_banner(tmp_path):
    bundle = tmp_path / "b.js"
    bundle.write_text("/**\n* plotly.js (finance - minified) v9.8.7\n* Copyright\n*/\n(function(){})")
    assert finance_plotlyjs_version(bundle) == "9.8.7"
    bundle.write_text("/** something else */")
    assert finance_plotlyjs_version(bundle) is None
    assert finance_plotlyjs_version(tmp_path / "missing.js") is None
