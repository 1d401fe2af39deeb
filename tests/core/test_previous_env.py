"""The previous pipeline's settings: S3_BUCKET, S3_INPUT_PREFIX / S3_OUTPUT_PREFIX, DB_*, AWS_DEFAULT_REGION."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from condvest.errors import ConfigError
from condvest.postgres import connect
from condvest.settings import Settings


def test_old_bucket_and_prefixes_become_the_lake_root():
    s = Settings.from_env({"S3_BUCKET": "dev-condvest-datalake", "AWS_DEFAULT_REGION": "us-east-2"})
    assert s.lake_uri == "s3://dev-condvest-datalake" and s.aws_region == "us-east-2"
    env = {"S3_BUCKET": "b", "S3_INPUT_PREFIX": "bronze/raw_ohlcv/", "S3_OUTPUT_PREFIX": "silver"}
    assert Settings.from_env(env).lake_uri == "s3://b"
    env = {"S3_BUCKET": "b", "S3_INPUT_PREFIX": "prod/public/raw_ohlcv", "S3_OUTPUT_PREFIX": "prod/silver/"}
    assert Settings.from_env(env).lake_uri == "s3://b/prod"
    # the workbench's own variable wins
    assert Settings.from_env({**env, "CONDVEST_LAKE_URI": "s3://other"}).lake_uri == "s3://other"


def test_old_prefixes_that_cannot_be_honoured_stop_and_name_the_variable_to_use():
    with pytest.raises(ConfigError, match="S3_OUTPUT_PREFIX.*CONDVEST_LAKE_URI"):
        Settings.from_env({"S3_BUCKET": "b", "S3_OUTPUT_PREFIX": "gold/bars"})
    with pytest.raises(ConfigError, match="different roots.*CONDVEST_LAKE_URI"):
        Settings.from_env({"S3_BUCKET": "b", "S3_INPUT_PREFIX": "a/bronze/raw_ohlcv", "S3_OUTPUT_PREFIX": "silver"})
    with pytest.raises(ConfigError, match="S3_BUCKET"):
        Settings.from_env({"S3_INPUT_PREFIX": "bronze/raw_ohlcv"})


def test_old_db_variables_reach_the_database(pg_dsn):
    url = urlsplit(pg_dsn.reveal())
    env = {
        "DB_HOST": url.hostname,
        "DB_PORT": str(url.port),
        "DB_NAME": url.path.lstrip("/"),
        "DB_USER": url.username,
        "DB_PASSWORD": pg_dsn.reveal().split(":")[2].split("@")[0],
    }
    s = Settings.from_env(env)
    assert env["DB_PASSWORD"] in s.secrets() and env["DB_PASSWORD"] not in str(s.describe())
    with connect(s) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == env["DB_NAME"]
    with pytest.raises(ConfigError, match="DB_PORT"):
        Settings.from_env({**env, "DB_PORT": "five"})
