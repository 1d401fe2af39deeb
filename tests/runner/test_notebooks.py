"""Notebook shape: parameters cell, kernelspec, thin glue. Papermill runs of the notebooks are with their stages."""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.paths import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_six_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_fetch",
        "02_resample",
        "03_migrate",
        "04_retention",
        "05_monitoring",
        "06_explore",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name"), "papermill needs a kernelspec"
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], "the first code cell, and only it, is tagged parameters"
    params = "".join(tagged[0]["source"])
    for line in params.splitlines():
        if line.strip():
            assert re.match(r"^[a-z_][a-z0-9_]* = .+  # \S", line), f"parameter line without a # help: {line!r}"
    assert len(code) <= 10
    ids = [c.get("id", "") for c in cells]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-z][a-z0-9-]{1,30}", i) for i in ids), (
        f"cells need stable, readable ids (a word or two, not random hex): {ids}"
    )
    assert not any(re.fullmatch(r"[0-9a-f]{8}|c\d\d", i) for i in ids), f"generated cell ids: {ids}"
    for c in code:
        src = "".join(c["source"])
        assert not re.search(r"^\s*(def|class)\s", src, re.M), "logic belongs in condvest/"
        if c.get("id") != "your-sql":  # 06_explore's one cell for the reader's own query
            assert not re.search(r"\b(SELECT|INSERT|DELETE|UPDATE|CREATE)\s", src), "SQL belongs in sql/ or builders"
        assert "asyncio.run(" not in src, "use top-level await inside a kernel"
        assert "from condvest." not in src or not re.search(r"from condvest\.\w+\.\w+ import", src), (
            "notebooks import a stage's API (condvest.<stage>), not its modules"
        )
        if "# NBVAL_CHECK_OUTPUT" not in src:
            assert not c.get("outputs"), "only nbval's checked cells keep (reference) outputs"
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in "".join(c["source"]):
            text = next("".join(m["source"]) for m in reversed(cells[:i]) if m["cell_type"] == "markdown")
            assert "reference output of the offline demo" in text, (
                f"cell {c.get('id')} opens showing stored outputs: its markdown must say they are the reference"
            )


def test_a_notebook_without_a_parameters_tag_fails_the_shape_check(tmp_path):
    nb = json.loads(NOTEBOOKS[0].read_text())
    for c in nb["cells"]:
        c.get("metadata", {}).pop("tags", None)
    bad = tmp_path / "99_bad.ipynb"
    bad.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="parameters"):
        test_notebook_shape(bad)
