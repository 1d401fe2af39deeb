"""The lake lock is a lease judged by the store's clock: a dead holder's lock heals by itself, a live one refuses
(on this host: whatever its record says), a heartbeat keeps a long run's lease alive, two contenders for an expired
lease never both win, and ``python -m condvest lock`` shows and clears it. Every test runs on a local folder and on
a real S3 server (SeaweedFS) unless noted.

A record "expired long ago" must also be old by the store's clock: on a local lake its file's mtime is set back
(``os.utime``); an S3 server's ``LastModified`` cannot be set, so there the record carries a 1-second lease and the
test waits until the object is old enough (``_age``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from condvest.crash import CRASH_EXIT_CODE
from condvest.errors import BusyError, ConfigError, ParameterError, PreconditionFailed, StorageError
from condvest.lake_lock import lake_lock, lease_expiry, lock_key, lock_status, read_lock
from condvest.processes import host_name, process_alive, process_started
from condvest.settings import DEFAULT_LOCK_LEASE_S, Settings
from condvest.storage import LocalStore, ObjectInfo, Store, open_store

pytestmark = pytest.mark.timeout(120)

KEY = lock_key("resample")
ROOT = Path(__file__).resolve().parents[1]

# takes the lock in a process of its own and holds it until a line arrives on stdin (or it is killed)
_HOLDER = """
import sys
from condvest.lake_lock import lake_lock
from condvest.settings import Settings
from condvest.storage import open_store
settings = Settings.from_env()
with lake_lock(open_store(settings=settings), run_id=sys.argv[1], purpose="test", lease_s=settings.lock_lease_s):
    print("taken", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


class Lake:
    """A store plus the environment under which a subprocess opens the same lake."""

    def __init__(self, store: Store, env: dict[str, str]) -> None:
        self.store, self.env = store, env

    def reopen(self) -> Store:
        """A second client of the same lake (another contender)."""
        return open_store(settings=Settings.from_env(self.env))


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    if request.param == "local":
        uri = str(tmp_path / "lake")
    else:
        uri = request.getfixturevalue("s3_settings").lake_uri
    env = {**os.environ, "CONDVEST_LAKE_URI": uri}
    env.pop("CONDVEST_CRASH_AT", None)
    return Lake(open_store(settings=Settings.from_env(env)), env)


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    env = {**os.environ, "CONDVEST_LAKE_URI": str(tmp_path / "lake")}
    env.pop("CONDVEST_CRASH_AT", None)
    return Lake(open_store(settings=Settings.from_env(env)), env)


def _start_holder(lake: Lake, run_id: str, lease_s: int, **extra_env: str) -> subprocess.Popen[str]:
    env = {**lake.env, "CONDVEST_LOCK_LEASE_S": str(lease_s), **extra_env}
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, run_id],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_taken(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "taken", (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")


def _sleep_past_expiry(store: Store, margin: float = 0.0, timeout: float = 30.0) -> None:
    """Wait until the lock's lease has expired by the store's clock (``lock_status``), then ``margin`` more."""
    deadline = time.monotonic() + timeout
    while (status := lock_status(store, "resample")) is not None and status[1].live:
        assert time.monotonic() < deadline, status
        time.sleep(0.05 if status[1].left_s is None else min(0.5, max(0.05, status[1].left_s)))
    time.sleep(margin)


def _age(lake: Lake, seconds: float) -> None:
    """Make the lock object at least ``seconds`` old by the store's clock: set back its file's mtime on a local
    lake; wait on S3, whose LastModified cannot be set (keep ``seconds`` small there)."""
    if isinstance(lake.store, LocalStore):
        path = lake.store.root / KEY
        then = time.time() - seconds
        os.utime(path, (then, then))
        return
    deadline = time.monotonic() + seconds + 10
    while (info := lake.store.head(KEY)) is not None and (info.age_s or 0.0) < seconds:
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def _try_lock(store: Store, lease_s: float) -> None:
    """Enter and leave the lock at once (raises BusyError when held)."""
    with lake_lock(store, run_id="contender", lease_s=lease_s):
        pass


def test_killed_holder_is_taken_over_after_its_lease_expires(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    proc = _start_holder(lake, "victim-run", lease_s=2)
    _wait_taken(proc)
    held = read_lock(lake.store, "resample")
    assert held is not None and held["run_id"] == "victim-run" and held["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    with pytest.raises(BusyError, match="victim-run"):  # the lease outlives its holder by up to lease_s
        _try_lock(lake.store, 2)
    _sleep_past_expiry(lake.store)
    caplog.set_level(logging.WARNING, logger="condvest.lake_lock")
    with lake_lock(lake.store, run_id="successor", purpose="test", lease_s=2):
        now = read_lock(lake.store, "resample")
        assert now is not None and now["run_id"] == "successor" and now["pid"] == os.getpid()
    assert read_lock(lake.store, "resample") is None
    takeovers = [r for r in caplog.records if "taken over" in r.getMessage()]
    assert len(takeovers) == 1 and takeovers[0].levelno == logging.WARNING
    message = takeovers[0].getMessage()
    assert "previous_run_id=victim-run" in message and "run_id=successor" in message
    assert f"previous_holder={held['holder']}" in message and held["holder"].endswith(f":{proc.pid}")


@pytest.mark.parametrize("point", ["lock.after_take", "lock.after_renew", "lock.before_release"])
def test_crash_hook_inside_the_lock_leaves_a_lease_that_expires(local_lake: Lake, point: str) -> None:
    """Local store only: the crash points fire inside the lock and the left-over lease heals like a SIGKILL."""
    proc = _start_holder(local_lake, f"crashed-at-{point}", lease_s=1, CONDVEST_CRASH_AT=point)
    if point == "lock.before_release":
        _wait_taken(proc)
        proc.communicate("go\n", timeout=30)
    assert proc.wait(timeout=30) == CRASH_EXIT_CODE
    assert read_lock(local_lake.store, "resample")["run_id"] == f"crashed-at-{point}"
    _sleep_past_expiry(local_lake.store)
    _try_lock(local_lake.store, 1)
    assert read_lock(local_lake.store, "resample") is None


def test_a_live_lease_of_another_process_refuses(lake: Lake) -> None:
    proc = _start_holder(lake, "other-process", lease_s=2)
    try:
        _wait_taken(proc)
        contender = lake.reopen()
        deadline = time.monotonic() + 3.5  # beyond the lease length: the holder's heartbeat keeps it live
        attempts = 0
        while time.monotonic() < deadline:
            with pytest.raises(BusyError, match="other-process") as info:
                _try_lock(contender, 2)
            assert f":{proc.pid} " in str(info.value) and "expires at" in str(info.value)
            attempts += 1
            time.sleep(0.25)
        assert attempts >= 5
        out, err = proc.communicate("release\n", timeout=30)
        assert proc.returncode == 0 and out.strip() == "released", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert read_lock(lake.store, "resample") is None
    _try_lock(lake.store, 2)


def test_heartbeat_keeps_the_lease_alive_past_its_length(lake: Lake) -> None:
    contender = lake.reopen()
    refused: list[float] = []  # when, after the body started
    with lake_lock(lake.store, run_id="long-body", lease_s=1) as mine:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:  # the body runs three lease lengths
            with pytest.raises(BusyError, match="long-body"):
                _try_lock(contender, 1)
            refused.append(time.monotonic() - t0)
            time.sleep(0.1)
        now = read_lock(lake.store, "resample")
        assert now is not None and now["token"] == mine["token"]
        assert lease_expiry(now) > dt.datetime.fromisoformat(mine["expires_at"]) + dt.timedelta(seconds=1.5)
    # refused in each of the three lease lengths (a busy machine answers fewer tries, but never a free lock)
    assert {int(t) for t in refused if t < 3.0} == {0, 1, 2} and len(refused) >= 5, refused
    assert read_lock(lake.store, "resample") is None


class _Wrapped(Store):
    """Passes every call to a real store; subclasses step or fail chosen writes."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.uri = inner, inner.uri

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_with_etag(key)

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self.inner.get_with_info(key)

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        return self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> int:
        return self.inner.delete_many(keys)


class _Stepped(_Wrapped):
    """The first write after the If-None-Match attempt (the takeover) waits until both contenders have reached
    theirs: both have read the same expired lease before either writes."""

    def __init__(self, inner: Store, barrier: threading.Barrier) -> None:
        super().__init__(inner)
        self.barrier, self._stepped = barrier, False

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if not if_none_match and not self._stepped:
            self._stepped = True
            self.barrier.wait(timeout=20)
        return super().put(key, data, if_match=if_match, if_none_match=if_none_match)


class _StorageOutage(_Wrapped):
    """Every renewal (a write with If-Match) fails as a network outage would."""

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if if_match is not None:
            raise StorageError("S3 RequestTimeout: injected outage", key=key)
        return super().put(key, data, if_match=if_match, if_none_match=if_none_match)


class _SlowAnswer(_Wrapped):
    """The first write lands at once but its answer is held back until the test lets it through."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.landed, self.answer = threading.Event(), threading.Event()

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        etag = super().put(key, data, if_match=if_match, if_none_match=if_none_match)
        if not self.landed.is_set():
            self.landed.set()
            self.answer.wait(timeout=20)
        return etag


def test_a_take_slower_than_its_lease_is_confirmed_before_the_body_runs(lake: Lake) -> None:
    """A lease that ran out while its write was under way can be taken over before the writer hears back;
    the writer must then not run its body."""
    slow = _SlowAnswer(lake.store)
    outcome: list[str] = []

    def slow_taker() -> None:
        try:
            with lake_lock(slow, run_id="slow-taker", lease_s=1):
                outcome.append("entered the body")
        except BusyError as exc:
            outcome.append(str(exc))

    t = threading.Thread(target=slow_taker)
    t.start()
    assert slow.landed.wait(timeout=20)
    _sleep_past_expiry(lake.store, margin=0.1)
    with lake_lock(lake.reopen(), run_id="overtaker", lease_s=60):
        slow.answer.set()
        t.join(timeout=30)
        assert len(outcome) == 1 and "overtaker" in outcome[0], outcome
        assert read_lock(lake.store, "resample")["run_id"] == "overtaker"
    assert read_lock(lake.store, "resample") is None


def test_two_contenders_for_an_expired_lease_exactly_one_wins(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    dead = {"holder": "gone-host:1", "run_id": "dead-run", "taken_at": past.isoformat(), "expires_at": past.isoformat()}
    lake.store.put(KEY, json.dumps({**dead, "lease_s": 1}).encode())
    _age(lake, 2.5)  # expired by the store's clock too
    at_write, tried = threading.Barrier(2), threading.Barrier(2)
    won: list[str] = []
    lost: list[str] = []
    errors: list[BaseException] = []

    def contend(run_id: str) -> None:
        try:
            try:
                with lake_lock(_Stepped(lake.reopen(), at_write), run_id=run_id, lease_s=60):
                    won.append(run_id)
                    tried.wait(timeout=20)  # hold the lock until the other contender has tried
            except BusyError as exc:
                lost.append(str(exc))
                tried.wait(timeout=20)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="condvest.lake_lock")
    threads = [threading.Thread(target=contend, args=(f"contender-{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(won) == 1 and len(lost) == 1, (won, lost)
    assert won[0] in lost[0]  # the loser names the winner
    assert sum("taken over" in r.getMessage() and "dead-run" in r.getMessage() for r in caplog.records) == 1
    assert read_lock(lake.store, "resample") is None


def test_an_old_record_or_an_unreadable_lock_object_expires_after_one_lease_by_the_stores_clock(
    local_lake: Lake,
) -> None:
    """Local store only: records written before leases existed (holder, run_id, taken_at: no lease_s, so the
    contender's lease applies) and lock objects that are not a JSON object expire once their file is one lease old,
    whatever times they hold."""
    store = local_lake.store
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    store.put(KEY, json.dumps({"holder": "h:1", "run_id": "old-code", "taken_at": recent.isoformat()}).encode())
    _age(local_lake, 5)
    with pytest.raises(BusyError, match="old-code"):
        _try_lock(store, 10)
    _try_lock(store, 4)  # older than a 4-second lease
    assert read_lock(store, "resample") is None
    for unreadable in (b'{"holder": "h:1", "run_id": "unreadable-time", "taken_at": "x"}', b"\x00torn{", b"[]"):
        store.put(KEY, unreadable)
        with pytest.raises(BusyError, match="expires at .* by the store's clock"):
            _try_lock(store, 10)
        _age(local_lake, 11)
        _try_lock(store, 10)
        assert read_lock(store, "resample") is None


def test_expiry_follows_the_stores_clock_never_the_holders(lake: Lake) -> None:
    """A holder on another host whose clock runs an hour ahead is taken over once its object is a lease old; one
    whose clock runs ten minutes behind is not taken over while its object is fresh."""
    now, contender = dt.datetime.now(dt.UTC), lake.reopen()  # its client made before the clock starts
    for skew, run_id in ((dt.timedelta(hours=1), "clock-ahead"), (dt.timedelta(minutes=-10), "clock-behind")):
        stamp = now + skew
        rec = {
            "holder": "elsewhere:7",
            "host": "elsewhere",
            "pid": 7,
            "run_id": run_id,
            "lease_s": 6 if skew > dt.timedelta(0) else 60,
            "taken_at": stamp.isoformat(),
            "expires_at": (stamp + dt.timedelta(seconds=1)).isoformat(),
        }
        lake.store.put(KEY, json.dumps(rec).encode())
        with pytest.raises(BusyError, match=run_id):  # fresh by the store's clock: live, whatever it says
            _try_lock(contender, 60)
        if run_id == "clock-ahead":
            _age(lake, 7.5)
            _try_lock(contender, 60)  # one lease old by the store: taken over, though it "expires" in an hour
            assert read_lock(lake.store, "resample") is None
    lake.store.delete(KEY)


def test_a_live_holder_on_this_host_is_never_taken_over_and_a_dead_one_is(lake: Lake) -> None:
    """A holder on this host whose record and object both look expired long ago (a clock behind, a stalled
    heartbeat) is not taken over while its process lives; once the process is gone, the old object is taken over."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).isoformat()
        rec = {
            "holder": f"{host_name()}:{sleeper.pid}",
            "host": host_name(),
            "pid": sleeper.pid,
            "pid_started": process_started(sleeper.pid),
            "run_id": "alive-here",
            "lease_s": 1,
            "taken_at": long_ago,
            "expires_at": long_ago,
        }
        lake.store.put(KEY, json.dumps(rec).encode())
        _age(lake, 2.5)
        with pytest.raises(BusyError, match="alive-here") as info:
            _try_lock(lake.reopen(), 1)
        assert f"its process {sleeper.pid} is alive on this host" in str(info.value)
        assert lock_status(lake.store, "resample")[1].live
    finally:
        sleeper.kill()
        sleeper.wait()
    assert process_alive(rec) is False
    _try_lock(lake.reopen(), 1)  # its process is gone and its object a lease old: taken over
    assert read_lock(lake.store, "resample") is None


def test_a_pid_taken_by_another_process_is_not_the_recorded_holder() -> None:
    me = {"host": host_name(), "pid": os.getpid(), "pid_started": process_started(os.getpid())}
    assert process_alive(me) is True
    if me["pid_started"] is not None:  # Linux: the start time tells a reused pid from the recorded process
        assert process_alive({**me, "pid_started": me["pid_started"] + 1}) is False
    assert process_alive({**me, "host": "another-host"}) is None
    assert process_alive({"host": host_name(), "pid": "12"}) is None


def _overwrite(store: Store, rec: dict) -> None:
    """Replace the lock record the way another writer would: conditionally, retried if a renewal got between."""
    for _ in range(50):
        _, etag = store.get_with_etag(KEY)
        try:
            store.put(KEY, json.dumps(rec).encode(), if_match=etag)
            return
        except PreconditionFailed:
            continue
    raise AssertionError("could not overwrite the lock record")


def test_a_lease_lost_while_the_body_runs_is_logged_and_not_released(
    local_lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    """Local store only: someone overwrites the lock under a running body; the body goes on, the heartbeat
    logs an ERROR and stops, and exit leaves the other holder's record in place."""
    store = local_lake.store
    caplog.set_level(logging.WARNING, logger="condvest.lake_lock")
    now = dt.datetime.now(dt.UTC)
    intruder = {
        "holder": "elsewhere:9",
        "run_id": "intruder",
        "token": "not-ours",
        "taken_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(seconds=60)).isoformat(),
    }
    with lake_lock(store, run_id="victim", lease_s=0.6):
        _overwrite(store, intruder)
        time.sleep(1.0)
        assert read_lock(store, "resample")["run_id"] == "intruder"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "lock lost" in errors[0] and "intruder" in errors[0]
    assert read_lock(store, "resample")["run_id"] == "intruder"


def test_renewals_that_keep_failing_let_the_lease_expire_and_release_leaves_it(
    local_lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    """Local store only: a holder whose renewals fail keeps trying, and does not delete a lease that has run
    out at release (another run may be taking it over at that moment); the next run takes it over."""
    store = local_lake.store
    caplog.set_level(logging.WARNING, logger="condvest.lake_lock")
    with lake_lock(_StorageOutage(store), run_id="cut-off", lease_s=0.9):
        time.sleep(1.5)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lock renewal failed" in m and "injected outage" in m for m in messages) >= 2
    assert any("left for takeover" in m for m in messages)
    assert read_lock(store, "resample")["run_id"] == "cut-off"
    _try_lock(store, 1)
    assert read_lock(store, "resample") is None


def _cli(lake: Lake, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "condvest", *args], env=lake.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_cli_lock_status_and_clear_round_trip(lake: Lake) -> None:
    free = _cli(lake, "lock", "status")
    assert free.returncode == 0 and "free" in free.stdout, free.stderr
    with lake_lock(lake.store, run_id="cli-holder", purpose="test", lease_s=60):
        status = _cli(lake, "lock", "status", "--name", "resample")
        assert status.returncode == 0, status.stderr
        assert '"run_id": "cli-holder"' in status.stdout
        assert f"lease: live, its process {os.getpid()} is alive on this host" in status.stdout
        refused = _cli(lake, "lock", "clear")
        assert refused.returncode == 1 and "cli-holder" in refused.stderr and "--force" in refused.stderr
        assert read_lock(lake.store, "resample")["run_id"] == "cli-holder"
        forced = _cli(lake, "lock", "clear", "--force")
        assert forced.returncode == 0 and "cli-holder" in forced.stdout, forced.stderr
        assert read_lock(lake.store, "resample") is None
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    expired = {"holder": "h:2", "run_id": "expired-run", "expires_at": past, "lease_s": 1}
    lake.store.put(KEY, json.dumps(expired).encode())
    _age(lake, 2.5)
    status = _cli(lake, "lock", "status")
    assert status.returncode == 0 and "expired-run" in status.stdout and "lease: expired at" in status.stdout
    assert "by the store's clock" in status.stdout
    cleared = _cli(lake, "lock", "clear")
    assert cleared.returncode == 0 and "expired-run" in cleared.stdout, cleared.stderr
    assert read_lock(lake.store, "resample") is None
    again = _cli(lake, "lock", "clear")
    assert again.returncode == 0 and "already free" in again.stdout
    assert _cli(lake).returncode == 2
    assert _cli(lake, "lock", "clear", "--name", "nope").returncode == 2
    assert _cli(lake, "lock", "status", "--bogus").returncode == 2


def test_lease_setting_and_parameter() -> None:
    assert Settings().lock_lease_s == DEFAULT_LOCK_LEASE_S == 300
    assert Settings.from_env({"CONDVEST_LOCK_LEASE_S": "45"}).lock_lease_s == 45
    for bad in ("0", "-3", "soon"):
        with pytest.raises(ConfigError, match="CONDVEST_LOCK_LEASE_S"):
            Settings.from_env({"CONDVEST_LOCK_LEASE_S": bad})


def test_default_lease_and_bad_lease(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "lake"))
    with lake_lock(store, run_id="default-lease") as mine:  # what resample and compaction get today
        taken, expires = (dt.datetime.fromisoformat(mine[k]) for k in ("taken_at", "expires_at"))
        assert (expires - taken).total_seconds() == DEFAULT_LOCK_LEASE_S
    for bad in (0, -1, True, "5"):
        with pytest.raises(ParameterError, match="lease"):
            _try_lock(store, bad)  # type: ignore[arg-type]
    assert read_lock(store, "resample") is None
