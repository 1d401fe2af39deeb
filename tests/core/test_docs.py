"""The README and the code agree, in the style of sqlite-utils' docs tests: every environment variable the code
reads has a row in one of the README's tables, and every ``CONDVEST_*`` variable a table names is read by the
code (a removed setting leaves no stale row).

The variables are found statically: every string literal in ``condvest/`` and ``runner/`` shaped like a
variable of ours or of AWS (``CONDVEST_…``, ``POLYGON_…``, ``AWS_…``, …). Nothing is imported.
"""

from __future__ import annotations

import ast
import re

from tests.fixtures.paths import ROOT

#: the prefixes of the variables the workbench reads (its own, the seed's, the previous pipeline's, AWS's)
VARIABLE = re.compile(r"^(CONDVEST|POLYGON|RDS|AWS|S3|DB|BATCH|RESAMPLING|BROWSER)_[A-Z0-9]+(_[A-Z0-9]+)*$")
#: read by tests and the offline tools only, never a user's setting
NOT_SETTINGS = {"CONDVEST_TEST"}


def variables_in_code() -> dict[str, str]:
    """Each variable name found in the code, with the first place it is named."""
    found: dict[str, str] = {}
    for package in ("condvest", "runner"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                    found.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def variables_in_readme_tables() -> set[str]:
    """Every backquoted variable name in a row of one of the README's tables (a line that starts with ``|``)."""
    names: set[str] = set()
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("|"):
            names.update(n for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", line) if VARIABLE.match(n))
    return names


def test_every_variable_the_code_reads_is_in_a_readme_table():
    documented = variables_in_readme_tables()
    missing = {name: where for name, where in variables_in_code().items() if name not in documented | NOT_SETTINGS}
    assert not missing, f"add these to a table in README.md: {missing}"


def test_every_condvest_variable_in_the_readme_is_read_by_the_code():
    stale = {n for n in variables_in_readme_tables() if n.startswith("CONDVEST_")} - set(variables_in_code())
    assert not stale, f"README.md documents settings the code no longer reads: {sorted(stale)}"


def test_the_scan_finds_the_settings_read_through_helpers():
    # the settings object reads through local helpers (get, get_int, number): the scan must still see them
    found = variables_in_code()
    for name in ("CONDVEST_LAKE_URI", "CONDVEST_HTTP_RETRIES", "CONDVEST_JOB_VCPUS", "BROWSER_PATH"):
        assert name in found, name


def _error_classes(tree: ast.Module) -> dict[str, list[str]]:
    return {
        node.name: [b.id for b in node.bases if isinstance(b, ast.Name)]
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_every_error_is_in_errors_py_and_its_tree():
    import condvest.errors

    errors_py = ROOT / "condvest" / "errors.py"
    defined = _error_classes(ast.parse(errors_py.read_text(encoding="utf-8")))
    tree_names = set(re.findall(r"(?:├──|└──)\s+(\w+)", condvest.errors.__doc__ or ""))
    assert set(defined) - {"CondvestError"} == tree_names, "errors.py's docstring tree and its classes differ"
    elsewhere = []
    for package in ("condvest", "runner"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == errors_py:
                continue
            for name, bases in _error_classes(ast.parse(path.read_text(encoding="utf-8"))).items():
                if set(bases) & set(defined):
                    elsewhere.append(f"{path.relative_to(ROOT)}: {name}")
    assert not elsewhere, f"define these in condvest/errors.py (and draw them in its tree): {elsewhere}"
