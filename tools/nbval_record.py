"""Record the reference outputs nbval compares: run every notebook at its defaults in the offline
sandbox and store the outputs of the cells marked ``# NBVAL_CHECK_OUTPUT`` (and only those).

    .venv/bin/python -m condvest.offline.sandbox -- .venv/bin/python tools/nbval_record.py [NAME ...]

`make test` then re-runs the notebooks under nbval (``--nbval-lax``) and fails when a marked cell's
output changes. Re-record after a deliberate change of behaviour and review the diff.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbformat
import papermill as pm

ROOT = Path(__file__).resolve().parent.parent
MARK = "# NBVAL_CHECK_OUTPUT"


def record(path: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        pm.execute_notebook(str(path), str(out), cwd=str(ROOT), progress_bar=False)
        ran = nbformat.read(out, as_version=4)
    nb = nbformat.read(path, as_version=4)
    by_id = {c.get("id"): c for c in ran.cells}
    n = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if MARK in cell.source:
            done = by_id[cell.get("id")]
            cell.outputs = [o for o in done.outputs if o.get("output_type") != "stream"]
            cell.execution_count = i  # nbval skips the comparison of cells that look unrun
            for o in cell.outputs:
                if o.get("output_type") == "execute_result":
                    o["execution_count"] = i
            n += 1
    nbformat.write(nb, path)
    return n


def main(names: list[str]) -> None:
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if names and path.stem not in names:
            continue
        print(f"{path.name}: {record(path)} checked cell(s) recorded", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
