"""Importing the package: no side effects, and the import graph stays clean."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_does_nothing_and_the_public_api_resolves():
    code = (
        "import sys, os, logging; before = set(os.environ.items());"
        "import condvest;"
        "assert 'pandas' not in sys.modules and 'duckdb' not in sys.modules and 'psycopg' not in sys.modules;"
        "assert set(os.environ.items()) == before and not logging.getLogger().handlers;"
        "[getattr(condvest, n) for n in condvest.__all__]; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr
