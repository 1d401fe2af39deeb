"""DuckDB reads and writes the lake through ``Store.url``, on a local folder and on a real S3 server."""

from __future__ import annotations

import io
import logging

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condvest import duck
from condvest.errors import ConfigError, ParameterError, StorageError
from condvest.storage import LocalStore, S3Store, Store, open_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "local":
        return open_store(str(tmp_path / "lake"))
    return open_store(settings=request.getfixturevalue("s3_settings"))


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _bars(symbol: str, day: str, close: float) -> pa.Table:
    return pa.table(
        {
            "date": [day],
            "open": [close - 1],
            "high": [close + 1],
            "low": [close - 2],
            "close": [close],
            "volume": [1000.5],
        }
    )


def _sql_string(url: str) -> str:
    return "'" + url.replace("'", "''") + "'"


def test_read_hive_partitioned_parquet_through_store_urls(store: Store) -> None:
    days = ["2025-10-15", "2025-10-16", "2025-10-17"]
    items = [
        (f"bronze/raw_ohlcv/symbol={sym}/date={day}.parquet", _parquet(_bars(sym, day, 100.0 + i)))
        for sym in ("AAPL", "MSFT")
        for i, day in enumerate(days)
    ]
    items.append(("bronze/raw_ohlcv/symbol=AAPL/notes.txt", b"not parquet"))
    store.put_many(items)
    con = duck.connect(store, threads=2)
    rows = con.execute(
        "SELECT symbol, count(*), sum(close), min(date) FROM read_parquet(?, hive_partitioning = true) "
        "GROUP BY symbol ORDER BY symbol",
        [store.url("bronze/raw_ohlcv/**/*.parquet")],
    ).fetchall()
    assert rows == [("AAPL", 3, 303.0, "2025-10-15"), ("MSFT", 3, 303.0, "2025-10-15")]
    one = con.execute(
        "SELECT close FROM read_parquet(?)", [store.url("bronze/raw_ohlcv/symbol=MSFT/date=2025-10-17.parquet")]
    ).fetchall()
    assert one == [(102.0,)]


def test_copy_to_store_url_then_read_back(store: Store) -> None:
    con = duck.connect(store)
    con.execute(
        f"COPY (SELECT range AS bar, 1962 + range % 2 AS year, 1 + range % 3 AS month, range * 1.5 AS close "
        f"FROM range(12)) TO {_sql_string(duck.target_url(store, 'silver/silver_3d'))} "
        "(FORMAT parquet, PARTITION_BY (year, month))"
    )
    keys = [o.key for o in store.list("silver/silver_3d/")]
    assert len(keys) == 6 and all(k.endswith(".parquet") for k in keys)
    assert any(k.startswith("silver/silver_3d/year=1962/month=1/") for k in keys)
    # a single file, with the target as a bound parameter
    url = duck.target_url(store, "processing_metadata/one.parquet")
    con.execute("COPY (SELECT 42 AS answer) TO ? (FORMAT parquet)", [url])
    assert pq.read_table(io.BytesIO(store.get("processing_metadata/one.parquet"))).to_pylist() == [{"answer": 42}]
    back = con.execute(
        "SELECT year, month, count(*), sum(close) FROM read_parquet(?, hive_partitioning = true) "
        "GROUP BY ALL ORDER BY year, month",
        [store.url("silver/silver_3d/**/*.parquet")],
    ).fetchall()
    assert sum(r[2] for r in back) == 12
    assert sum(r[3] for r in back) == pytest.approx(sum(i * 1.5 for i in range(12)))


def test_target_url_validates_the_key(store: Store) -> None:
    for key in ("../x", "/abs", "a//b"):
        with pytest.raises(StorageError, match="invalid object key"):
            duck.target_url(store, key)


def test_settings_are_applied(tmp_path) -> None:
    con = duck.connect(LocalStore(tmp_path), threads=3, memory_limit="256MB")
    threads, memory = con.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchone()
    assert threads == 3
    assert memory.endswith("MiB") and 200 < float(memory.split()[0]) <= 256
    with pytest.raises(ParameterError):
        duck.connect(LocalStore(tmp_path), threads=0)


def test_s3_secret_is_redacted_and_never_logged(s3_settings, s3_server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = open_store(settings=s3_settings)
    con = duck.connect(store)
    (secret_string,) = con.execute("SELECT secret_string FROM duckdb_secrets() WHERE name = 'condvest_s3'").fetchone()
    assert s3_server.secret_key not in secret_string
    assert f"key_id={s3_server.access_key}" in secret_string
    assert f"endpoint=127.0.0.1:{s3_server.ports['s3']}" in secret_string
    assert "use_ssl=false" in secret_string and "url_style=path" in secret_string
    assert s3_server.secret_key not in caplog.text


def test_s3_secret_values_with_quotes_are_escaped(s3_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK'); DROP TABLE x; --")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "it's a 'secret'\\")
    store = S3Store("s3://bucket/lake", endpoint_url="https://s3.example.test:8443/", region="eu-west-1")
    con = duck.connect(store)
    (secret_string,) = con.execute("SELECT secret_string FROM duckdb_secrets()").fetchone()
    assert "key_id=AK'); DROP TABLE x; --;" in secret_string
    assert "endpoint=s3.example.test:8443" in secret_string and "use_ssl=true" in secret_string
    assert "region=eu-west-1" in secret_string


def test_s3_wrong_secret_is_refused_by_the_server(s3_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(settings=s3_settings)
    store.put("x/a.parquet", _parquet(_bars("AAPL", "2025-10-17", 1.0)))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    con = duck.connect(store)
    with pytest.raises(duckdb.Error, match="403|Forbidden|SignatureDoesNotMatch|Access"):
        con.execute("SELECT * FROM read_parquet(?)", [store.url("x/a.parquet")]).fetchall()


def test_s3_without_credentials_is_a_config_error(s3_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="no AWS credentials"):
        duck.connect(open_store(settings=s3_settings))


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host:21", "http://h:1/path", "http://u:p@h:1"])
def test_bad_endpoint_is_a_config_error(s3_settings, endpoint: str) -> None:
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        duck.connect(S3Store("s3://bucket/lake", endpoint_url=endpoint))


def test_httpfs_comes_from_the_wheel() -> None:
    path = duck.httpfs_extension_path()
    assert path.name == "httpfs.duckdb_extension" and f"v{duckdb.__version__}" in str(path)


# --- DuckDB's memory limit sized from the container (condvest.container) ----------------------------------


@pytest.mark.parametrize(
    ("files", "limit", "duckdb_limit"),
    [
        ({"memory.max": "2147483648\n"}, 2 << 30, "1024MB"),  # cgroup v2, a 2 GB Batch shard
        ({"memory.max": "max\n"}, None, "3GB"),  # v2 without a limit
        ({"memory/memory.limit_in_bytes": "8589934592\n"}, 8 << 30, "7168MB"),  # v1, an 8 GB job
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None, "3GB"),  # v1's "no limit"
        ({}, None, "3GB"),  # no cgroup files at all (macOS, a plain host)
    ],
)
def test_duckdbs_memory_limit_is_sized_from_the_containers_cgroup(tmp_path, files, limit, duckdb_limit) -> None:
    from condvest.container import cgroup_memory_limit, default_memory_limit

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_memory_limit(tmp_path) == limit
    assert default_memory_limit(tmp_path) == duckdb_limit


def test_an_explicit_duckdb_memory_limit_wins_over_the_container() -> None:
    from condvest.container import default_memory_limit
    from condvest.settings import Settings

    assert Settings.from_env({"CONDVEST_DUCKDB_MEMORY_LIMIT": "700MB"}).duckdb_memory_limit == "700MB"
    assert Settings.from_env({}).duckdb_memory_limit == default_memory_limit()
