"""Vendor plotly.js's finance bundle for the chart PNGs (``runner/static/plotly-finance.min.js`` and its licence) at
the version of plotly.js that the installed plotly package ships (``plotly.offline.get_plotlyjs_version()``).

    .venv/bin/python tools/vendor_plotly.py            rewrite the bundle and its licence (needs npm)
    .venv/bin/python tools/vendor_plotly.py --check    exit 1 when the vendored bundle is another version

Run it after an upgrade of the plotly package (tests/runner/test_plotly_bundle.py fails until then). The bundle
is ``dist/plotly-finance.min.js`` of the npm package ``plotly.js`` at that version, which this fetches with
``npm pack plotly.js@<version>`` (about 22 MB); the same tarball's ``dist/plotly.min.js`` must be byte-identical
to the plotly package's own copy, which ties the two. (The standalone npm package
``plotly.js-finance-dist-min`` holds the same file, byte for byte, but is not published for every version.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.images import FINANCE_PLOTLYJS, finance_plotlyjs_version  # noqa: E402

LICENSE = FINANCE_PLOTLYJS.parent / "LICENSE.plotly.txt"


def plotly_package() -> tuple[str, bytes]:
    """The plotly.js version the plotly package ships, and its full bundle's bytes."""
    import plotly
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version(), (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def npm_files(version: str, names: list[str]) -> dict[str, bytes]:
    """Files of the npm package ``plotly.js@<version>`` (paths inside its tarball, below ``package/``)."""
    with tempfile.TemporaryDirectory(prefix="vendor-plotly-") as tmp:
        cmd = ["npm", "pack", f"plotly.js@{version}", "--silent", "--pack-destination", tmp]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        [tgz] = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as tar:
            return {name: tar.extractfile(f"package/{name}").read() for name in names}  # type: ignore[union-attr]


def vendor() -> int:
    version, full = plotly_package()
    files = npm_files(version, ["dist/plotly-finance.min.js", "dist/plotly.min.js", "LICENSE"])
    if files["dist/plotly.min.js"] != full:
        print(f"plotly.js@{version} on npm is not the plotly package's plotly.min.js: nothing written", file=sys.stderr)
        return 1
    bundle = files["dist/plotly-finance.min.js"]
    if f"plotly.js (finance - minified) v{version}\n" not in bundle[:200].decode():
        print(f"plotly.js@{version}'s finance bundle names another version: nothing written", file=sys.stderr)
        return 1
    FINANCE_PLOTLYJS.write_bytes(bundle)
    LICENSE.write_bytes(files["LICENSE"])
    print(f"{FINANCE_PLOTLYJS.relative_to(ROOT)}: plotly.js finance bundle v{version} ({len(bundle):,} bytes)")
    return 0


def check() -> int:
    version, _ = plotly_package()
    vendored = finance_plotlyjs_version(FINANCE_PLOTLYJS)
    if vendored != version:
        print(f"vendored finance bundle v{vendored}, plotly ships v{version}: run tools/vendor_plotly.py")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the vendored bundle is another version")
    return check() if parser.parse_args().check else vendor()


if __name__ == "__main__":
    sys.exit(main())
