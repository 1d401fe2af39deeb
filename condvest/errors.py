"""The workbench's typed errors. Every error names the thing at fault.

Constructors take the message first and the context as keywords, e.g. ``StorageError(problem, key=key)``,
``ParameterError(message, parameter="symbols")``; ``ObjectNotFound(key=...)``, ``FetchFailed(failed=...)`` and
``BusyError(lock=..., holder=...)`` build their message from the context (``UpdateContended(what, key=...,
attempts=...)`` too, after naming the update).

CondvestError
├── ConfigError            a setting is missing or malformed (names the variable)
├── ParameterError         a notebook/runner parameter is invalid (names the parameter); raised before any write
├── StorageError           a lake object could not be read or written (names the key)
│   ├── ObjectNotFound     the object does not exist
│   ├── PreconditionFailed a conditional write lost a race (If-Match / If-None-Match)
│   │   └── UpdateContended  a read-modify-write lost every retry to other writers (names the attempts)
│   └── CorruptObject      the object exists but cannot be parsed (truncated parquet, bad JSON)
├── SourceError            the market-data source failed (names URL path, HTTP status, symbol, date)
│   ├── RateLimited        HTTP 429 after every retry
│   ├── SourceUnavailable  5xx, timeouts, connection resets after every retry
│   ├── Refused            the vendor refused the request (its status and its own words; never retried)
│   │   ├── AuthError        401 (or NOT_AUTHORIZED without a plan reason): the key is unknown or missing
│   │   ├── PlanLimit        403 beyond the plan: a timeframe (history years, a future date) or an entitlement
│   │   └── NotYetAvailable  403 today's data before the end of day on this plan: the session is a warn
│   └── BadPayload         truncated JSON, an error inside an HTTP 200, a schema violation
├── DatabaseError          a Postgres operation failed (names the SQL file or table)
│   └── ClusterError       the embedded throwaway cluster could not start
├── FetchFailed            one or more sessions failed in a fetch run (lists them)
├── BusyError              another run holds the lock (names the lock and its holder)
├── ValidationError        a data validation failed (migration report, checksums)
├── ShardsIncomplete       a sharded run's commit found a shard missing, failed or disagreeing (names the group, shard)
└── RunFailed              a notebook run failed (names the notebook and the failing cell)
"""

from __future__ import annotations


class CondvestError(Exception):
    """Base class of every workbench error."""


class ConfigError(CondvestError):
    def __init__(self, problem: str, *, variable: str) -> None:
        self.variable = variable
        super().__init__(f"setting {variable}: {problem}")


class ParameterError(CondvestError):
    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(f"parameter {parameter}: {message}" if parameter else message)


class StorageError(CondvestError):
    def __init__(self, problem: str, *, key: str) -> None:
        self.key = key
        super().__init__(f"{key}: {problem}")


class ObjectNotFound(StorageError):
    def __init__(self, *, key: str) -> None:
        super().__init__("no such object", key=key)


class PreconditionFailed(StorageError):
    def __init__(self, problem: str = "conditional write lost a race", *, key: str) -> None:
        super().__init__(problem, key=key)


class UpdateContended(PreconditionFailed):
    """``storage.update_object`` lost ``attempts`` races in a row: other writers kept changing the object."""

    def __init__(self, what: str = "update", *, key: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(f"{what} lost {attempts} races in a row to other writers", key=key)


class CorruptObject(StorageError):
    pass


class SourceError(CondvestError):
    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        status: int | None = None,
        symbol: str | None = None,
        date: str | None = None,
    ) -> None:
        self.path, self.status, self.symbol, self.date = path, status, symbol, date
        ctx = [
            f"{k}={v}"
            for k, v in (("path", path), ("status", status), ("symbol", symbol), ("date", date))
            if v is not None
        ]
        super().__init__(message + (f" ({' '.join(ctx)})" if ctx else ""))


class RateLimited(SourceError):
    pass


class SourceUnavailable(SourceError):
    pass


class Refused(SourceError):
    """The vendor refused the request; ``vendor`` holds its own words (the answer's ``message`` or ``error``)."""

    def __init__(self, message: str, *, vendor: str = "", **ctx: object) -> None:
        self.vendor = vendor
        super().__init__(message, **ctx)  # type: ignore[arg-type]


class AuthError(Refused):
    """The key is unknown or missing (HTTP 401): the only refusal that is about the key."""


class PlanLimit(Refused):
    """Beyond the plan (HTTP 403): history older than the plan's years, a future date, an entitlement."""


class NotYetAvailable(Refused):
    """Today's data asked before the end of day on a plan without it (HTTP 403): the next run fetches it."""


class BadPayload(SourceError):
    pass


class DatabaseError(CondvestError):
    def __init__(self, message: str, *, sql_file: str | None = None, table: str | None = None) -> None:
        self.sql_file, self.table = sql_file, table
        where = sql_file or table
        super().__init__(f"{where}: {message}" if where else message)


class ClusterError(DatabaseError):
    pass


class FetchFailed(CondvestError):
    def __init__(self, *, failed: dict[str, str]) -> None:
        self.failed = dict(failed)
        items = ", ".join(f"{d}: {why}" for d, why in sorted(self.failed.items()))
        super().__init__(f"{len(self.failed)} session(s) failed: {items}")


class BusyError(CondvestError):
    def __init__(self, *, lock: str, holder: str) -> None:
        self.lock, self.holder = lock, holder
        super().__init__(f"busy: {lock} is held by {holder}")


class ValidationError(CondvestError):
    pass


class RunFailed(CondvestError):
    def __init__(self, problem: str, *, notebook: str, cell: str) -> None:
        self.notebook, self.cell = notebook, cell
        super().__init__(f"{notebook} failed in {cell}: {problem}")


class ShardsIncomplete(CondvestError):
    """The commit of a sharded run found a shard missing, failed or disagreeing: nothing was written."""

    def __init__(self, problem: str, *, group: str, shard: str | None = None) -> None:
        self.group, self.shard = group, shard
        where = f"sharded run {group}" + (f", shard {shard}" if shard else "")
        super().__init__(f"{problem} ({where}); the commit wrote nothing")
