"""Each notebook's ``parameters`` cell and its stage's params dataclass agree (names and defaults); every stage
checks its parameters the same way (``XParams.check()`` -> a frozen checked value, or ``ParameterError`` naming
the parameter, without any I/O); every notebook ends through the stage result's ``raise_for_status()``."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import json

import pytest

from condvest.errors import ParameterError
from condvest.explore import ExploreParams
from condvest.fetch import FetchParams
from condvest.migrate import MigrateParams
from condvest.monitoring import MonitoringParams
from condvest.resample import CompactionParams, ResampleParams
from condvest.retention import RetentionParams
from runner.preflight import STAGE_PARAMS, stage_params_class
from tests.fixtures.paths import ROOT

#: the runner's own table (its pre-flight checks each stage with these): tied here to the notebooks
PARAMS = {notebook: stage_params_class(notebook) for notebook in STAGE_PARAMS}


def _code_cells(notebook: str) -> list[dict]:
    nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _parse(source: str) -> ast.Module:
    """A code cell's syntax tree (top-level ``await`` allowed, as in a kernel)."""
    return compile(source, "<cell>", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def cell_parameters(source: str) -> dict[str, object]:
    """The ``name = literal`` lines of a parameters cell, as Python values (anything else fails)."""
    out: dict[str, object] = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.unparse(node)
        target = node.targets[0]
        assert isinstance(target, ast.Name), ast.unparse(node)
        out[target.id] = ast.literal_eval(node.value)  # plain literals only
    return out


def dataclass_defaults(cls: type) -> dict[str, object]:
    """The dataclass's fields and defaults, dates as the ISO strings a notebook writes."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        assert f.default is not dataclasses.MISSING, f"{cls.__name__}.{f.name} needs a default"
        out[f.name] = f.default.isoformat() if isinstance(f.default, dt.date) else f.default
    return out


def disagreements(cell: dict[str, object], defaults: dict[str, object]) -> list[str]:
    problems = [f"{n}: only in the notebook" for n in cell.keys() - defaults.keys()]
    problems += [f"{n}: only in the dataclass" for n in defaults.keys() - cell.keys()]
    for n in cell.keys() & defaults.keys():
        a, b = cell[n], defaults[n]
        if a != b or type(a) is not type(b):
            problems.append(f"{n}: notebook {a!r}, dataclass {b!r}")
    return sorted(problems)


@pytest.mark.parametrize("notebook", sorted(PARAMS))
def test_the_parameters_cell_and_the_params_dataclass_agree(notebook):
    code = _code_cells(notebook)
    cell = cell_parameters("".join(code[0]["source"]))
    assert disagreements(cell, dataclass_defaults(PARAMS[notebook])) == []
    used = {t.id for c in code[1:] for t in ast.walk(_parse("".join(c["source"]))) if isinstance(t, ast.Name)}
    unused = [n for n in cell if n not in used]
    assert unused == [], f"parameters no later cell uses: {unused}"


def test_a_default_changed_on_one_side_is_caught():
    cell = cell_parameters(
        'interval = 5  # help\nstart = None  # help\nsymbols = ""  # help\ncompare = "1,5,21"\n'
        "returns_over = 21  # help\nreturns_on = None  # help\n"
    )
    defaults = dataclass_defaults(ExploreParams)
    assert disagreements(cell, {**defaults, "end": None}) == ["end: only in the dataclass"]
    assert disagreements({**cell, "end": None}, defaults) == []
    assert disagreements({**cell, "end": None, "interval": 3}, defaults) == ["interval: notebook 3, dataclass 5"]
    assert disagreements({**cell, "end": None, "interval": 5.0}, defaults) == ["interval: notebook 5.0, dataclass 5"]
    as_date = dataclasses.make_dataclass("P", [("as_of", dt.date, dataclasses.field(default=dt.date(2025, 1, 2)))])
    assert disagreements({"as_of": "2025-01-02"}, dataclass_defaults(as_date)) == []


@pytest.mark.parametrize("notebook", sorted(PARAMS))
def test_every_notebook_ends_through_raise_for_status(notebook):
    last = "".join(_code_cells(notebook)[-1]["source"])
    calls = [
        n
        for n in ast.walk(_parse(last))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "raise_for_status"
    ]
    assert calls, f"{notebook}'s last code cell does not call raise_for_status(): {last!r}"


CHECKS = [  # a bad value per stage, and the parameter its ParameterError names
    (FetchParams(max_backfill_days=0), "max_backfill_days"),
    (FetchParams(date="2025-10-17", start="2025-10-01", end="2025-10-10"), "date"),
    (FetchParams(shard="0/2", shard_group="g"), "shard"),
    (ResampleParams(intervals="3,x"), "intervals"),
    (ResampleParams(compact="yes"), "compact"),
    (CompactionParams(keep_sessions=-1), "keep_sessions"),
    (MigrateParams(source_prefix="bronze/raw_ohlcv"), "source_prefix"),
    (MigrateParams(delete_source=True, backup_source=True), "backup_source"),
    (RetentionParams(mode="purge"), "mode"),
    (RetentionParams(lock_timeout="5s'; SELECT 1"), "lock_timeout"),
    (MonitoringParams(runs_shown=0), "runs_shown"),
    (MonitoringParams(as_of="2025-02-30"), "as_of"),
    (ExploreParams(start="2025-10-01", end="2025-09-01"), "end"),
    (ExploreParams(compare="1,,5"), "compare"),
]


@pytest.mark.parametrize(("bad", "parameter"), CHECKS, ids=lambda v: type(v).__name__ if not isinstance(v, str) else v)
def test_a_bad_value_raises_a_parameter_error_naming_it(bad, parameter):
    with pytest.raises(ParameterError) as err:
        bad.check()
    assert err.value.parameter == parameter


@pytest.mark.parametrize("cls", [*PARAMS.values(), CompactionParams], ids=lambda c: c.__name__)
def test_check_returns_a_frozen_checked_value_without_any_settings(cls):
    checked = cls().check()  # no settings, no store, no connection: the runner's pre-flight calls it as is
    assert dataclasses.is_dataclass(checked) and type(checked) is not cls
    name = dataclasses.fields(checked)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(checked, name, None)


def test_checked_values_are_parsed():
    f = FetchParams(symbols="msft, AAPL", start="2025-10-01", end="2025-10-10", rebase="2025-09-01").check(
        dt.date(2025, 10, 17)
    )
    assert (f.symbols, f.start, f.end, f.rebase, f.as_of) == (
        ("AAPL", "MSFT"),
        dt.date(2025, 10, 1),
        dt.date(2025, 10, 10),
        dt.date(2025, 9, 1),
        dt.date(2025, 10, 17),
    )
    with pytest.raises(ParameterError, match="after as_of") as err:  # with the run's today: not after it
        FetchParams(date="2025-10-18").check(dt.date(2025, 10, 17))
    assert err.value.parameter == "date"
    assert FetchParams(date="2025-10-18").check().date == dt.date(2025, 10, 18)  # the pre-flight has no today
    assert ResampleParams(intervals="8,3,3").check().intervals == (3, 8)
    assert not ResampleParams(shard="1/4", shard_group="G").check().compacts
    assert CompactionParams(min_fold_sessions=0).check().min_fold_sessions == 1
    assert MigrateParams(source_prefix="/public/raw_ohlcv/").check().source_prefix == "public/raw_ohlcv"
    r = RetentionParams(retention="37 months", as_of="2025-10-17", lock_timeout=" 5s ").check()
    assert (r.retention.total_months, r.as_of, r.lock_timeout) == (37, dt.date(2025, 10, 17), "5s")
    assert RetentionParams().check().retention is None  # the settings' retention, filled in by plan()
    assert MonitoringParams(as_of="2025-10-17").check().as_of == dt.date(2025, 10, 17)
    assert ExploreParams(symbols="msft", compare="21,1").check().compare == (1, 21)
