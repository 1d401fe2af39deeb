"""The previous pipeline's environment variables, mapped onto the workbench's settings (``Settings.from_env``).

    S3_BUCKET                          -> the lake ``s3://<bucket>`` (as S3_DATALAKE_BUCKET)
    S3_INPUT_PREFIX / S3_OUTPUT_PREFIX -> the lake root inside the bucket, when they name the workbench's
                                          layout under one root (``<root>/bronze/raw_ohlcv`` or
                                          ``<root>/public/raw_ohlcv``, and ``<root>/silver``); any other
                                          value stops with a ``ConfigError`` naming CONDVEST_LAKE_URI
    DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD -> the RDS_* settings, when those are unset
    AWS_DEFAULT_REGION                 -> the AWS region (``Settings.from_env`` reads it beside AWS_REGION)

Pure: takes a lookup function, returns values.
"""

from __future__ import annotations

from collections.abc import Callable

from condvest.errors import ConfigError

Lookup = Callable[[str], "str | None"]

#: where each prefix of the previous pipeline sits in the workbench's lake layout (relative to the root)
_INPUT_TAILS = ("bronze/raw_ohlcv", "public/raw_ohlcv")
_OUTPUT_TAILS = ("silver",)


def _root(get: Lookup, variable: str, tails: tuple[str, ...]) -> str | None:
    value = get(variable)
    if value is None:
        return None
    prefix = value.strip().strip("/")
    for tail in tails:
        if prefix == tail or prefix.endswith("/" + tail):
            return prefix[: -len(tail)].strip("/")
    raise ConfigError(
        f"{variable}={value!r} is not <root>/{' or <root>/'.join(tails)}: the lake layout under its root is fixed;"
        " set CONDVEST_LAKE_URI=s3://<bucket>/<root> instead (and unset the old variable)",
        variable=variable,
    )


def previous_lake(get: Lookup) -> str | None:
    """``s3://bucket[/root]`` from S3_BUCKET (or the bucket already named by S3_DATALAKE_BUCKET) and the old
    prefixes; ``None`` when none of them is set."""
    bucket = get("S3_DATALAKE_BUCKET") or get("S3_BUCKET")
    roots = {
        v: r
        for v, t in (("S3_INPUT_PREFIX", _INPUT_TAILS), ("S3_OUTPUT_PREFIX", _OUTPUT_TAILS))
        if (r := _root(get, v, t)) is not None
    }
    if len(set(roots.values())) > 1:
        raise ConfigError(
            "S3_INPUT_PREFIX and S3_OUTPUT_PREFIX lie under different roots; the workbench keeps bronze and silver"
            " under one lake root: set CONDVEST_LAKE_URI=s3://<bucket>/<root> instead",
            variable="S3_OUTPUT_PREFIX",
        )
    if bucket is None:
        if roots:
            raise ConfigError(f"{next(iter(roots))} needs S3_BUCKET (or S3_DATALAKE_BUCKET)", variable="S3_BUCKET")
        return None
    root = next(iter(roots.values()), "")
    return f"s3://{bucket}/{root}" if root else f"s3://{bucket}"


def previous_database(get: Lookup) -> dict[str, str | None]:
    """The old deploy script's DB_* variables as ``rds_*`` values (endpoint ``host[:port]``); empty when unset."""
    host = get("DB_HOST")
    if host is None:
        return {}
    port = get("DB_PORT")
    if port is not None and not port.isdigit():
        raise ConfigError(f"expected a port number, got {port!r}", variable="DB_PORT")
    return {
        "rds_endpoint": f"{host}:{port}" if port else host,
        "rds_username": get("DB_USER"),
        "rds_password": get("DB_PASSWORD"),
        "rds_db_name": get("DB_NAME"),
    }
