"""Settings from the environment, and the retention period."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from condvest.errors import ConfigError, ParameterError
from condvest.polygon import resolve_api_key
from condvest.settings import Retention, Settings


def test_settings_defaults_and_seed_names():
    s = Settings.from_env({}, root=Path("/srv/project"))
    assert s.lake_uri == "/srv/project/lake" and s.polygon_base_url == "https://api.massive.com"
    s = Settings.from_env({"S3_DATALAKE_BUCKET": "dev-condvest-datalake", "POLYGON_API_KEY": "sekrit-123"})
    assert s.lake_uri == "s3://dev-condvest-datalake"
    assert "sekrit-123" not in repr(s) and "sekrit-123" not in str(s.describe())
    assert s.secrets() == ["sekrit-123"]


def test_the_vendors_key_names_and_rate():
    s = Settings.from_env({"MASSIVE_API_KEY": "massive-key-42"}, root=Path("/srv/project"))
    assert s.polygon_api_key is not None and s.polygon_api_key.reveal() == "massive-key-42"
    assert s.http.requests_per_minute is None and s.http.rate_window == 60.0  # unset: unlimited
    s = Settings.from_env({"POLYGON_REQUESTS_PER_MINUTE": "5", "POLYGON_BASE_URL": "https://api.polygon.io"})
    assert s.http.requests_per_minute == 5 and s.polygon_base_url == "https://api.polygon.io"
    with pytest.raises(ConfigError, match="POLYGON_REQUESTS_PER_MINUTE"):
        Settings.from_env({"POLYGON_REQUESTS_PER_MINUTE": "five"})


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


def test_relative_locations_resolve_against_the_project_root_not_the_cwd(tmp_path, monkeypatch):
    # a JupyterLab kernel runs in notebooks/: it must see the same lake, runs and cluster as the root
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "notebooks").mkdir()
    for name in ("CONDVEST_LAKE_URI", "CONDVEST_RUNS_URI", "CONDVEST_HOME", "S3_DATALAKE_BUCKET", "POLYGON_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "notebooks")
    s = Settings.from_env()
    assert s.root == tmp_path.resolve()
    assert s.lake_uri == str(tmp_path.resolve() / "lake")
    assert s.runs_uri == str(tmp_path.resolve() / "runs")
    assert s.home == tmp_path.resolve() / ".condvest"
    assert s.describe()["lake"] == str(tmp_path.resolve() / "lake")
    monkeypatch.setenv("CONDVEST_LAKE_URI", "data/lake")
    assert Settings.from_env().lake_uri == str(tmp_path.resolve() / "data" / "lake")


def test_a_condvest_marker_makes_a_root(tmp_path, monkeypatch):
    (tmp_path / ".condvest").mkdir()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.delenv("CONDVEST_LAKE_URI", raising=False)
    monkeypatch.delenv("S3_DATALAKE_BUCKET", raising=False)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    assert Settings.from_env().lake_uri == str(tmp_path.resolve() / "lake")


def test_dotenv_at_the_root_is_read_but_never_overrides_the_environment(tmp_path, monkeypatch, caplog):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / ".env").write_text(
        "# offline market\n"
        "export POLYGON_API_KEY='dotenv-secret-42'\n"
        "POLYGON_BASE_URL=http://127.0.0.1:8765  # the offline server\n"
        'CONDVEST_RETENTION="2 years"\n'
    )
    for name in ("POLYGON_API_KEY", "POLYGON_BASE_URL", "POLYGON_API_KEY_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONDVEST_RETENTION", "4 years")
    monkeypatch.chdir(tmp_path / "notebooks")
    with caplog.at_level("DEBUG"):
        s = Settings.from_env()
    assert s.polygon_api_key is not None and s.polygon_api_key.reveal() == "dotenv-secret-42"
    assert s.polygon_base_url == "http://127.0.0.1:8765"
    assert s.retention == Retention(4, 0), "a real environment variable wins over .env"
    assert "dotenv-secret-42" not in caplog.text and "POLYGON_API_KEY" in caplog.text
    assert "dotenv-secret-42" not in str(s.describe())


def test_a_missing_api_key_says_how_to_get_one():
    with pytest.raises(ConfigError, match="POLYGON_API_KEY") as err:
        resolve_api_key(Settings())
    assert ".env" in str(err.value) and "make lab" in str(err.value) and "\n" not in str(err.value)


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
