"""Write a notebook from a compact description (used to keep the notebooks' JSON tidy).

python tools/nbgen.py  # regenerates every notebook described in tools/notebooks/*.py
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def build(cells: list[tuple[str, str]], path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:02d}"
    if path.exists():  # keep nbval's reference outputs of checked cells whose source did not change
        ref = {c.source: c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and c.outputs}
        for c in nb.cells:
            if c.cell_type == "code" and c.source in ref:
                c.outputs, c.execution_count = ref[c.source].outputs, ref[c.source].execution_count
    nbformat.write(nb, path)


def main(argv: list[str]) -> None:
    specs = sorted((ROOT / "tools" / "notebooks").glob("*.py"))
    for spec in specs:
        if argv and spec.stem not in argv:
            continue
        cells = runpy.run_path(str(spec))["CELLS"]
        build(cells, ROOT / "notebooks" / f"{spec.stem}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
