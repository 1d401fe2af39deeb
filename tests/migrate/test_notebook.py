"""notebooks/03_migrate.ipynb run by papermill: on a lake without an export, and migrating one with a backup."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import papermill as pm
import pytest

from condvest.lake import DMS_PREFIX
from condvest.offline.dms import write_dms_export
from condvest.offline.market import SyntheticMarket
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT

NOTEBOOK = ROOT / "notebooks" / "03_migrate.ipynb"


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lake: Path, **params: object) -> dict:
    monkeypatch.setenv("CONDVEST_LAKE_URI", str(lake))
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK), str(out), parameters=params, progress_bar=False, cwd=str(tmp_path), kernel_name="python3"
    )
    return json.loads(out.read_text())


def _text(nb: dict, cell_id: str) -> str:
    cell = next(c for c in nb["cells"] if c.get("id") == cell_id)
    return "".join("".join(o.get("data", {}).get("text/plain", "")) for o in cell["outputs"])


@pytest.mark.slow
def test_notebook_on_a_lake_without_an_export(tmp_path, monkeypatch) -> None:
    nb = _run(tmp_path, monkeypatch, tmp_path / "lake")
    assert "nothing_to_migrate" in _text(nb, "migrate")
    assert "Empty DataFrame" in _text(nb, "failures")


@pytest.mark.slow
def test_notebook_migrates_and_backs_up(tmp_path, monkeypatch) -> None:
    store = LocalStore(tmp_path / "lake")
    market = SyntheticMarket(8, seed=3)
    write_dms_export(store, market, dt.date(2021, 1, 4), dt.date(2021, 3, 31), n_files=3)
    nb = _run(tmp_path, monkeypatch, store.root, backup_source=True)
    assert "migrated" in _text(nb, "migrate") and "passed" in _text(nb, "migrate")
    assert "moved" in _text(nb, "cleanup")
    assert not list(store.list(DMS_PREFIX + "/")) and len(list(store.list("public/raw_ohlcv_backup/"))) == 3
    again = _run(tmp_path, monkeypatch, store.root)
    assert "nothing_to_migrate" in _text(again, "migrate")
