"""Settings from the environment, and the retention period."""

from __future__ import annotations

import datetime as dt

import pytest

from condvest.errors import ConfigError, ParameterError
from condvest.settings import Retention, Settings


def test_settings_defaults_and_seed_names():
    s = Settings.from_env({})
    assert s.lake_uri == "./lake" and s.polygon_base_url == "https://api.polygon.io"
    s = Settings.from_env({"S3_DATALAKE_BUCKET": "dev-condvest-datalake", "POLYGON_API_KEY": "sekrit-123"})
    assert s.lake_uri == "s3://dev-condvest-datalake"
    assert "sekrit-123" not in repr(s) and "sekrit-123" not in str(s.describe())
    assert s.secrets() == ["sekrit-123"]


def test_settings_reject_malformed_values():
    with pytest.raises(ConfigError, match="CONDVEST_AS_OF"):
        Settings.from_env({"CONDVEST_AS_OF": "2025-13-01"})
    with pytest.raises(ConfigError, match="CONDVEST_RETENTION"):
        Settings.from_env({"CONDVEST_RETENTION": "0 months"})
    with pytest.raises(ConfigError, match="POLYGON_BASE_URL"):
        Settings.from_env({"POLYGON_BASE_URL": "ftp://x"})


@pytest.mark.parametrize(
    ("as_of", "cutoff"),
    [
        ("2025-10-17", "2022-09-17"),
        ("2028-02-29", "2025-01-29"),
        ("2025-03-31", "2022-02-28"),
        ("2024-04-30", "2021-03-30"),
    ],
)
def test_retention_cutoff(as_of, cutoff):
    assert Retention().cutoff(dt.date.fromisoformat(as_of)) == dt.date.fromisoformat(cutoff)


def test_retention_parse():
    assert Retention.parse("3 years 1 month") == Retention(3, 1)
    assert Retention.parse("37 months") == Retention(0, 37)
    with pytest.raises(ParameterError):
        Retention.parse("forever")


def test_cloud_settings_defaults_and_overrides():
    c = Settings.from_env({}).cloud
    assert c.alert_topic_arn is None and c.platform == "FARGATE" and c.schedule_timezone == "UTC"
    assert (c.daily_schedule, c.weekly_schedule) == ("cron(0 11 ? * MON-FRI *)", "cron(0 2 ? * SUN *)")
    env = {
        "CONDVEST_ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "CONDVEST_JOB_VCPUS": "0.5",
        "CONDVEST_BATCH_PLATFORM": "ec2",
        "CONDVEST_SCHEDULE_TIMEZONE": "America/New_York",
    }
    c = Settings.from_env(env).cloud
    assert (c.alert_topic_arn, c.endpoint_url, c.vcpus, c.platform) == (
        "arn:aws:sns:us-east-1:1:t",
        "http://127.0.0.1:5000",
        0.5,
        "EC2",
    )
    assert c.schedule_timezone == "America/New_York"
    with pytest.raises(ConfigError, match="CONDVEST_JOB_MEMORY_MIB"):
        Settings.from_env({"CONDVEST_JOB_MEMORY_MIB": "lots"})
    with pytest.raises(ConfigError, match="CONDVEST_BATCH_PLATFORM"):
        Settings.from_env({"CONDVEST_BATCH_PLATFORM": "LAMBDA"})
