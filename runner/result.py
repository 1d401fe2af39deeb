"""The result model of a run: ``Execution`` (what executing a notebook gave), ``RunResult`` (one run, as the index
records it) and ``CellError`` (where it failed), and how they are read out of an executed notebook
(``find_failure``, ``collect_results``)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from condvest.errors import RunFailed

log = logging.getLogger(__name__)

#: a notebook records result figures by displaying a JSON object under this mimetype (merged in cell order)
RESULT_MIMETYPE = "application/vnd.condvest.result+json"
_MARKER_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


@dataclass(frozen=True)
class CellError:
    """Where and how a run failed. ``cell`` is the execution count (``In [n]`` in the executed notebook);
    ``cell_index`` is the 0-based position in the source notebook (injected cells not counted); ``source`` the
    cell's first line of code; ``line`` the line that raised and ``lineno`` its number (1-based, within the
    cell), read from the traceback (``""``/``None`` when there is none: a timeout, a dead kernel);
    ``cell_id`` the cell's id (the run page's anchor of the cell is ``#cell-id=<cell_id>``)."""

    cell: int | None
    cell_index: int | None
    source: str
    ename: str
    evalue: str
    line: str = ""
    lineno: int | None = None
    cell_id: str | None = None

    @property
    def where(self) -> str:
        """``cell 4 (`foo(x)`)``: the cell, and the line that raised when known, else the cell's first line (the
        one-line form every reader of a summary knows; the page header and ``show`` add the line's number)."""
        cell = f"cell {self.cell}" if self.cell is not None else "a cell"
        text = self.line or self.source
        return cell + (f" (`{text}`)" if text else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "cell_index": self.cell_index,
            "source": self.source,
            "ename": self.ename,
            "evalue": self.evalue,
            "line": self.line,
            "lineno": self.lineno,
            "cell_id": self.cell_id,
        }


@dataclass(frozen=True)
class RunResult:
    run_id: str
    notebook: str
    status: str  # "ok" | "failed"
    parameters: dict[str, Any]
    started_at: dt.datetime
    finished_at: dt.datetime
    ipynb_key: str | None
    html_key: str | None
    runs_uri: str
    results: dict[str, Any] = field(default_factory=dict)
    error: CellError | None = None
    pipeline: str | None = None
    pipeline_run_id: str | None = None
    stage: int | None = None
    #: which try of the run this is (a Batch retry of a submitted job: ``AWS_BATCH_JOB_ATTEMPT``); 1 the first
    attempt: int = 1
    #: what the run used (``runner.usage``): CPU seconds of its process tree, peak resident GB x wall seconds
    vcpu_seconds: float | None = None
    gb_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def duration_s(self) -> float:
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    def summary(self) -> str:
        """One line: ``01_fetch.ipynb ok in 3.2 s: runs/<id>/01_fetch.html`` or the failing cell."""
        where = f"{self.runs_uri.rstrip('/')}/{self.html_key}" if self.html_key else "no output written"
        if self.ok:
            return f"{self.notebook} ok in {self.duration_s:.1f} s: {where}"
        e = self.error
        if e is None:
            return f"{self.notebook} failed: {where}"
        message = e.evalue.strip().splitlines()[0] if e.evalue.strip() else ""
        return f"{self.notebook} failed in {e.where}: {e.ename}: {message} [{where}]"

    def raise_for_status(self) -> RunResult:
        if not self.ok:
            e = self.error
            cell = e.where if e else "an unknown cell"
            raise RunFailed(
                f"{e.ename}: {e.evalue}" if e else "see the executed notebook", notebook=self.notebook, cell=cell
            )
        return self

    def index_record(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "notebook": self.notebook,
            "status": self.status,
            "parameters": self.parameters,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "finished_at": self.finished_at.isoformat(timespec="milliseconds"),
            "duration_s": self.duration_s,
            "error": self.error.as_dict() if self.error else None,
            "results": self.results,
            "ipynb": self.ipynb_key,
            "html": self.html_key,
            "pipeline": self.pipeline,
            "pipeline_run_id": self.pipeline_run_id,
            "stage": self.stage,
            "attempt": self.attempt,
            "vcpu_seconds": self.vcpu_seconds,
            "gb_seconds": self.gb_seconds,
        }


def _cut(text: str, width: int = 80) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            return _cut(line)
    return ""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: IPython's frame of a notebook cell in a traceback: ``Cell In[3], line 5``
_CELL_FRAME = re.compile(r"^\s*Cell In\[(\d+)\], line (\d+)", re.M)


def failing_line(source: str, traceback: list[str] | str | None, execution_count: int | None) -> tuple[str, int | None]:
    """The line of a cell that raised, and its number (1-based), read from the kernel's traceback: the first
    frame of this cell (``Cell In[<execution count>], line <n>``), else the first frame of any cell; ``("",
    None)`` when the traceback names no line of the cell."""
    text = _ANSI.sub("", "\n".join(traceback) if isinstance(traceback, list) else str(traceback or ""))
    frames = [(int(n), int(line)) for n, line in _CELL_FRAME.findall(text)]
    own = [line for n, line in frames if n == execution_count] or [line for _, line in frames[:1]]
    lines = source.splitlines()
    if not own or not 1 <= own[0] <= len(lines):
        return "", None
    return _cut(lines[own[0] - 1], 120), own[0]


def find_failure(nb: Any, fallback: BaseException | None = None) -> CellError | None:
    """The first failing code cell of an executed notebook (an error output, or papermill's exception mark)."""
    index = -1
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if not tags & _MARKER_TAGS:
            index += 1
        if cell.cell_type != "code":
            continue
        pm = cell.get("metadata", {}).get("papermill", {})
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and not (
                out.get("ename") == "SystemExit" and str(out.get("evalue", "")) in ("", "0")
            ):
                line, lineno = failing_line(cell.source, out.get("traceback"), cell.get("execution_count"))
                return CellError(
                    cell.get("execution_count"),
                    None if tags & _MARKER_TAGS else index,
                    _first_line(cell.source),
                    out.get("ename", "Error"),
                    str(out.get("evalue", "")),
                    line,
                    lineno,
                    cell.get("id"),
                )
        if pm.get("exception") is True or (fallback is not None and pm.get("status") == "running"):
            ename = type(fallback).__name__ if fallback is not None else "CellExecutionError"
            return CellError(
                cell.get("execution_count"),
                index,
                _first_line(cell.source),
                ename,
                str(fallback or ""),
                cell_id=cell.get("id"),
            )
    if fallback is not None:
        return CellError(None, None, "", type(fallback).__name__, str(fallback))
    return None


def collect_results(nb: Any) -> dict[str, Any]:
    """Merge every ``RESULT_MIMETYPE`` output of the notebook, in cell order (a later key wins)."""
    results: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get(RESULT_MIMETYPE)
            if isinstance(data, dict):
                results.update(data)
            elif data is not None:
                log.warning(
                    "result ignored mimetype=%s reason=not-a-json-object type=%s", RESULT_MIMETYPE, type(data).__name__
                )
    return results


@dataclass(frozen=True)
class Execution:
    """What executing a notebook gave: the executed notebook (``None`` when none was written) and, when the run
    failed, why: a cell's error, or (``aborted``) what stopped the run otherwise (the kernel died, a cell timed
    out, no kernel started, Ctrl-C)."""

    nb: Any | None
    started: dt.datetime
    finished: dt.datetime
    failure: BaseException | None = None
    aborted: bool = False

    @property
    def status(self) -> str:
        return "ok" if self.failure is None else "failed"

    def error(self) -> CellError | None:
        """The failing cell (``None`` when the run succeeded), as the executed notebook shows it."""
        if self.failure is None:
            return None
        if self.nb is None:
            return CellError(None, None, "", type(self.failure).__name__, str(self.failure))
        return find_failure(self.nb, self.failure if self.aborted else None)
