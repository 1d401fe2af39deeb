"""One world: ``make lab``, ``make shell`` and ``python -m condvest.offline serve`` serve the market the demo
recorded (its symbols, seed and splits), so a session fetched after the demo continues the lake's prices."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from condvest.calendar import session_date_from_epoch_ms, sessions_between
from condvest.offline.lab import lab_services
from condvest.offline.world import WORLD_FILE, World, load_world, world_for

DEMO_DAY = dt.date(2025, 10, 17)  # the day the demo ran
LATER = dt.date(2025, 11, 14)  # the day make lab runs, weeks later


def _env(root, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "POLYGON_", "RDS_"))}
    # a configured database: make lab starts no PostgreSQL (these tests never connect to it)
    return {**env, "CONDVEST_PG_DSN": "postgresql://nobody@127.0.0.1:9/none", **extra}


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def demo_root(tmp_path):
    """A project whose demo ran on DEMO_DAY: the world it recorded under ``.condvest/``."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("")
    World.plan(DEMO_DAY).save(root / ".condvest")
    return root


def test_the_recorded_world_is_read_back_and_planned_when_absent(demo_root, tmp_path):
    saved = load_world(demo_root / ".condvest")
    assert saved == World.plan(DEMO_DAY) and (demo_root / ".condvest" / WORLD_FILE).is_file()
    assert saved.n_symbols == 50 and [s.split_to for s in saved.splits] == [2, 1]
    assert world_for(demo_root / ".condvest", LATER) == saved, "a later day keeps the demo's splits"
    assert world_for(tmp_path / "nowhere", LATER) == World.plan(LATER)
    assert world_for(demo_root / ".condvest", LATER, n_symbols=4).n_symbols == 4


def test_a_session_after_the_demos_split_fetched_from_the_labs_market_is_price_continuous(demo_root):
    world = load_world(demo_root / ".condvest")
    lake_market = world.market()  # what the demo stored: bars adjusted as of DEMO_DAY
    env = _env(demo_root, CONDVEST_AS_OF=LATER.isoformat())
    with lab_services(demo_root, env=env) as lab_env:
        base, key = lab_env["POLYGON_BASE_URL"], lab_env["POLYGON_API_KEY"]
        listed = _get(f"{base}/v3/reference/splits?apiKey={key}")["results"]
        assert [(s["ticker"], s["execution_date"]) for s in listed] == [
            (s.symbol, s.execution_date.isoformat()) for s in world.splits
        ]
        assert len(_get(f"{base}/v3/reference/tickers?limit=1000&apiKey={key}")["results"]) == world.n_symbols
        after = sessions_between(DEMO_DAY + dt.timedelta(days=1), DEMO_DAY + dt.timedelta(days=10))[0]
        for split in world.splits:
            last = lake_market.range_bars(split.symbol, DEMO_DAY, DEMO_DAY, as_of=DEMO_DAY)[-1]["c"]
            doc = _get(f"{base}/v2/aggs/ticker/{split.symbol}/range/1/day/{after}/{after}?adjusted=true&apiKey={key}")
            (bar,) = doc["results"]
            assert session_date_from_epoch_ms(bar["t"]) == after
            assert 0.7 < bar["c"] / last < 1.4, f"{split.symbol}: {last} in the lake, then {bar['c']} from the lab"


def test_the_shell_and_the_offline_server_reach_the_demos_world(demo_root):
    probe = (
        "import json, os, urllib.request; base, key = os.environ['POLYGON_BASE_URL'], os.environ['POLYGON_API_KEY'];"
        "doc = json.load(urllib.request.urlopen(base + '/v3/reference/splits?apiKey=' + key, timeout=10));"
        "print(os.environ['CONDVEST_LAKE_URI'], *[s['ticker'] for s in doc['results']])"
    )
    shell = subprocess.run(
        [sys.executable, "-m", "condvest.offline.lab", "--shell", "--", "python", "-c", probe],
        cwd=demo_root, env=_env(demo_root, CONDVEST_AS_OF=LATER.isoformat()), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr[-2000:]
    world = load_world(demo_root / ".condvest")
    assert shell.stdout.splitlines()[-1].split() == [str(demo_root / "lake"), *(s.symbol for s in world.splits)]
    assert "python -m runner run 01_fetch" in shell.stdout, "the shell says how to reach the world"

    proc = subprocess.Popen(
        [sys.executable, "-m", "condvest.offline", "serve", "--port", "0", "--api-key", "k"],
        cwd=demo_root, env={**_env(demo_root), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        url = proc.stdout.readline().split(" at ", 1)[1].split(" ", 1)[0]
        assert proc.stdout.readline().strip() == f"market: {world.describe()}"
        assert [s["ticker"] for s in _get(f"{url}/v3/reference/splits?apiKey=k")["results"]] == [
            s.symbol for s in world.splits
        ]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_the_readmes_examples_name_the_demos_symbols_and_sessions():
    """Every README example runs in the demo's world as written: its symbols are the demo market's, its dates
    sessions (ZZZQ is the one deliberately unknown symbol)."""
    import re

    from condvest.calendar import is_session
    from tests.fixtures.paths import ROOT

    lines = (ROOT / "README.md").read_text().splitlines()
    refused = ("typo", "exits 2")  # the examples of what the runner refuses are meant not to run
    text = "\n".join(line for line in lines if not any(r in line for r in refused))
    demo = set(World.plan(dt.date.today()).market().symbols)
    named = set(re.findall(r"-p symbols ([A-Z0-9.,]+)", text)) | set(re.findall(r'symbols = "([A-Z0-9.,]+)"', text))
    symbols = {s for group in named for s in group.split(",")} | set(
        re.findall(r"^bronze/raw_ohlcv/symbol=([A-Z0-9.]+)/", text, re.M)
    )
    assert symbols - {"ZZZQ"} and symbols - {"ZZZQ"} <= demo, sorted(symbols - demo)
    for day in re.findall(r"-p (?:date|returns_on) (\d{4}-\d{2}-\d{2})|returns_on = \"(\d{4}-\d{2}-\d{2})\"", text):
        day = next(d for d in day if d)
        assert is_session(dt.date.fromisoformat(day)), day
