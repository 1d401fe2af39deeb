"""In-memory DuckDB connections that read and write a lake store's URLs (``Store.url``, ``target_url``).

A ``LocalStore`` needs nothing special. An ``S3Store`` needs DuckDB's httpfs extension, which is loaded
from the ``duckdb-extension-httpfs`` wheel (never downloaded), and an S3 secret built from boto3's
credential chain (environment, shared files, SSO, instance roles: whatever boto3 finds). The secret is
temporary (it lives in the connection) and is never logged; DuckDB redacts it in ``duckdb_secrets()``.
Credentials are read once, at connect time: open a new connection when short-lived ones expire.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import duckdb

from condvest.errors import ConfigError, ParameterError
from condvest.storage import LocalStore, S3Store, Store, _check_key

log = logging.getLogger(__name__)

_HTTPFS_PACKAGE = "duckdb_extension_httpfs"
_SECRET_NAME = "condvest_s3"


def connect(store: Store, *, threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that can read and write ``store.url(key)``.

    ``threads`` and ``memory_limit`` (e.g. ``"2GB"``) are DuckDB's settings of the same names.
    Raises ``ConfigError`` when the httpfs wheel or AWS credentials are missing for an S3 store.
    """
    config: dict[str, str | int | bool] = {"autoinstall_known_extensions": False}
    if threads is not None:
        if threads < 1:
            raise ParameterError(f"must be at least 1, got {threads}", parameter="threads")
        config["threads"] = threads
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
        # an in-memory database spills beyond its limit only where it has a temporary folder
        config["temp_directory"] = str(Path(tempfile.gettempdir()) / f"condvest-duckdb-{os.getpid()}")
    con = duckdb.connect(":memory:", config=config)
    try:
        if isinstance(store, S3Store):
            _load_httpfs(con)
            _create_s3_secret(con, store)
    except BaseException:
        con.close()
        raise
    log.info("duckdb connected store=%s threads=%s memory_limit=%s", store.uri, threads, memory_limit)
    return con


def target_url(store: Store, key: str) -> str:
    """``store.url(key)`` ready for ``COPY ... TO``: on a local store the parent folders are created first.

    DuckDB creates neither (a ``PARTITION_BY`` copy creates only its own folder); S3 has no folders.
    Unlike ``Store.put``, a DuckDB write to a local folder is not atomic for readers.
    """
    _check_key(key)
    if isinstance(store, LocalStore):
        (store.root / key).parent.mkdir(parents=True, exist_ok=True)
    return store.url(key)


def httpfs_extension_path() -> Path:
    """Where the ``duckdb-extension-httpfs`` wheel keeps the httpfs build matching the installed DuckDB."""
    spec = importlib.util.find_spec(_HTTPFS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"not installed; pip install duckdb-extension-httpfs=={duckdb.__version__}", variable=_HTTPFS_PACKAGE
        )
    version = duckdb.__version__
    for root in spec.submodule_search_locations:
        path = Path(root) / "extensions" / f"v{version}" / "httpfs.duckdb_extension"
        if path.is_file():
            return path
    raise ConfigError(
        f"has no httpfs build for DuckDB v{version}; install duckdb-extension-httpfs=={version}",
        variable=_HTTPFS_PACKAGE,
    )


def _load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    path = httpfs_extension_path()
    con.execute(f"LOAD {_literal(str(path))}")
    log.debug("duckdb httpfs loaded path=%s", path)


def _create_s3_secret(con: duckdb.DuckDBPyConnection, store: S3Store) -> None:
    import boto3

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ConfigError(
            f"no AWS credentials found for {store.uri} (boto3 credential chain)", variable="AWS_ACCESS_KEY_ID"
        )
    frozen = credentials.get_frozen_credentials()
    region = store.region or session.region_name or "us-east-1"
    options = [
        ("TYPE", "s3"),
        ("KEY_ID", _literal(frozen.access_key)),
        ("SECRET", _literal(frozen.secret_key)),
        ("REGION", _literal(region)),
    ]
    if frozen.token:
        options.append(("SESSION_TOKEN", _literal(frozen.token)))
    if store.endpoint_url:
        host, use_ssl = _endpoint(store.endpoint_url)
        options += [("ENDPOINT", _literal(host)), ("URL_STYLE", "'path'"), ("USE_SSL", "true" if use_ssl else "false")]
    body = ", ".join(f"{name} {value}" for name, value in options)
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET {_SECRET_NAME} ({body})")
    log.debug("duckdb s3 secret created store=%s region=%s endpoint=%s", store.uri, region, store.endpoint_url)


def _endpoint(url: str) -> tuple[str, bool]:
    """``http(s)://host[:port][/]`` -> (``host[:port]``, uses TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"expected http(s)://host[:port], got {url!r}", variable="AWS_ENDPOINT_URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("must not carry credentials, a query or a fragment", variable="AWS_ENDPOINT_URL")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return (f"{host}:{parts.port}" if parts.port else host), parts.scheme == "https"


def _literal(value: str) -> str:
    """A DuckDB string literal: single quotes doubled (backslashes are not escapes in DuckDB strings)."""
    if "\x00" in value:
        raise ConfigError("a NUL character cannot appear in a DuckDB string literal", variable="duckdb")
    return "'" + value.replace("'", "''") + "'"
