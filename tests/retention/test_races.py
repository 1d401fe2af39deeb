"""04_retention races and lock faults on a real PostgreSQL, two or three sessions stepped in a fixed order.

Fault 6: an old-dated insert lands while the archive is moving rows. Fault 7: two archive runs at once.
Fault 8: archived count differs from deleted count. Fault 24: the archive is blocked by a long transaction.
A session holding a row or table lock pauses the archive at a known point; the test waits until
pg_stat_activity shows the archive waiting, acts, then releases.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest

from condvest import retention
from condvest.errors import DatabaseError
from condvest.postgres import EmbeddedCluster, _pg_bindir
from tests.fixtures import retention as base

AS_OF = base.AS_OF
OLD_ROW = "symbol = 'DDD' AND \"timestamp\" = '2021-06-01 00:00 America/New_York'"  # last old row loaded


def _in_thread(fn, *args, **kwargs) -> Future:
    pool = ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return fut


def _archive_in_thread(dsn, **kwargs) -> Future:
    def run():
        with base.connect(dsn) as conn:
            return retention.archive(conn, as_of=AS_OF, **kwargs)

    return _in_thread(run)


def _wait_until_blocked(observer, query_prefix: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (query_prefix + "%",),
        ).fetchone()
        if row[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"no session running {query_prefix!r} ever waited on a lock")


def _hold_row_lock(dsn) -> psycopg.Connection:
    holder = base.connect(dsn, autocommit=False)
    assert holder.execute(f"SELECT 1 FROM raw_ohlcv WHERE {OLD_ROW} FOR UPDATE").fetchone()  # noqa: S608
    return holder


@pytest.mark.parametrize("method", ["rows", "auto"])
def test_old_insert_during_archive_is_never_lost_nor_doubled(request, method):
    """Fault 6: A archives; B pauses A (row lock, or a reader holding the table for whole-month moves);
    C inserts an old-dated bar and overwrites an old bar while A is under way. Every bar ends in the hot
    table xor the archive, nothing lost, and the next run archives exactly the late bar."""
    dsn = request.getfixturevalue("deployed" if method == "rows" else "deployed_monthly")
    with base.connect(dsn) as observer:
        before = base.state(observer)
        holder = _hold_row_lock(dsn)
        a = _archive_in_thread(dsn, method=method, lock_timeout="20s")
        _wait_until_blocked(observer, "CALL archive_old_ohlcv_data")
        late_insert = """INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)
                         VALUES ('LATE', '2021-02-01 00:00 America/New_York', 1, 1, 1, 1, 1)"""
        overwrite = """INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)
                       VALUES ('AAA', '2020-06-01 00:00 America/New_York', 3, 3, 3, 3, 3)
                       ON CONFLICT (symbol, "timestamp") DO UPDATE SET open = 3, high = 3, low = 3, close = 3,
                       volume = 3"""

        def write(statement):
            with base.connect(dsn) as c:
                c.execute(statement)

        c1, c2 = _in_thread(write, late_insert), _in_thread(write, overwrite)
        if method == "rows":  # a new key does not wait for the archive: it lands in the hot table now
            c1.result(timeout=10)
        time.sleep(0.2)
        holder.rollback()
        holder.close()
        result = a.result(timeout=30)
        c1.result(timeout=30)
        c2.result(timeout=30)
        assert result.status == "success" and result.archived == result.deleted > 0
        after = base.state(observer)
        assert after["in_both"] == 0
        assert after["total"] == before["total"] + 1  # the late bar, once; the overwritten bar, once
        rows = observer.execute("""SELECT 'hot', volume FROM raw_ohlcv WHERE symbol = 'AAA'
                                     AND "timestamp" = '2020-06-01 00:00 America/New_York'
                                   UNION ALL SELECT 'archive', volume FROM raw_ohlcv_archive WHERE symbol = 'AAA'
                                     AND "timestamp" = '2020-06-01 00:00 America/New_York'""").fetchall()
        assert len(rows) == 1 and rows[0][1] == 3
        again = retention.archive(observer, as_of=AS_OF)
        late_and_overwritten = 2 if rows[0][0] == "hot" else 1
        assert again.archived == again.deleted == late_and_overwritten
        final = base.state(observer)
        assert final["in_both"] == 0
        assert final["total"] == before["total"] + 1
        assert retention.archive(observer, as_of=AS_OF).archived == 0


def test_second_concurrent_run_is_skipped_and_logged(request):
    """Fault 7: while run A holds the advisory lock (paused by a row lock), run B returns 'skipped'."""
    dsn = request.getfixturevalue("deployed")
    with base.connect(dsn) as observer:
        before = base.state(observer)
        holder = _hold_row_lock(dsn)
        a = _archive_in_thread(dsn, method="rows", lock_timeout="20s")
        _wait_until_blocked(observer, "CALL archive_old_ohlcv_data")
        t0 = time.monotonic()
        b = retention.archive(observer, as_of=AS_OF)
        assert time.monotonic() - t0 < 2
        assert (b.status, b.archived, b.deleted) == ("skipped", 0, 0)
        holder.rollback()
        holder.close()
        assert a.result(timeout=30).status == "success"
        base.assert_conserved(before, base.state(observer))
        log = retention.retention_log(observer)
        # newest first by start: each run is logged as it starts (B started after A)
        assert list(log["status"]) == ["skipped", "success"]
        assert list(log["consistency"]) == ["n/a", "consistent"]


@pytest.mark.parametrize("method", ["rows", "auto"])
def test_count_mismatch_rolls_back_and_is_logged(request, method):
    """Fault 8: a trigger silently drops some archive inserts; the run fails, nothing moves (whole-month
    moves included), and the failure is in data_retention_log."""
    dsn = request.getfixturevalue("deployed" if method == "rows" else "deployed_monthly")
    with base.connect(dsn) as conn:
        conn.execute("""CREATE FUNCTION drop_bbb() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN IF NEW.symbol = 'BBB' THEN RETURN NULL; END IF; RETURN NEW; END $$""")
        conn.execute(
            "CREATE TRIGGER drop_bbb BEFORE INSERT ON raw_ohlcv_archive FOR EACH ROW EXECUTE FUNCTION drop_bbb()"
        )
        before = base.state(conn)
        parts_before = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'raw_ohlcv'::regclass"
        ).fetchone()
        # 'auto' moves whole months first; the rest of the cutoff's month goes row by row and hits the trigger
        with pytest.raises(DatabaseError, match="archived .* rows but deleted"):
            retention.archive(conn, as_of=AS_OF, method=method)
        assert base.state(conn) == before
        assert (
            conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'raw_ohlcv'::regclass").fetchone()
            == parts_before
        )
        rows = base.log_rows(conn)
        assert len(rows) == 1
        status, archived, deleted, sqlstate, message = rows[0]
        assert (status, archived, deleted, sqlstate) == ("failed", 0, 0, "22000")
        assert "rows but deleted" in message
        assert retention.retention_log(conn).at[0, "consistency"] == "n/a"


def test_archive_blocked_by_long_transaction_times_out_and_ingestion_goes_on(request):
    """Fault 24 (row move): a long transaction holds an old row; the archive gives up after lock_timeout
    with an error, logs it, moves nothing, and fresh bars are written meanwhile without waiting."""
    dsn = request.getfixturevalue("deployed")
    with base.connect(dsn) as observer:
        before = base.state(observer)
        holder = _hold_row_lock(dsn)
        a = _archive_in_thread(dsn, method="rows", lock_timeout="1500ms")
        _wait_until_blocked(observer, "CALL archive_old_ohlcv_data")
        t0 = time.monotonic()
        with base.connect(dsn) as ingest:
            ingest.execute("""INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)
                              VALUES ('NEW', '2025-01-14 00:00 America/New_York', 1, 1, 1, 1, 1)
                              ON CONFLICT (symbol, "timestamp") DO UPDATE SET volume = EXCLUDED.volume""")
        assert time.monotonic() - t0 < 0.5
        with pytest.raises(DatabaseError, match="lock timeout"):
            a.result(timeout=30)
        holder.rollback()
        holder.close()
        after = base.state(observer)
        assert after["archive"] == 0 and after["total"] == before["total"] + 1
        status, _, _, sqlstate, message = base.log_rows(observer)[-1]
        assert (status, sqlstate) == ("failed", "55P03") and "lock timeout" in message


def test_whole_month_move_blocked_by_a_reader_times_out_quickly(request):
    """Fault 24 (partition move): DETACH needs the table alone; a long reader makes it give up after
    lock_timeout, and a writer queued behind the archive waits no longer than that."""
    dsn = request.getfixturevalue("deployed_monthly")
    with base.connect(dsn) as observer:
        before = base.state(observer)
        reader = base.connect(dsn, autocommit=False)
        reader.execute("SELECT count(*) FROM raw_ohlcv").fetchone()
        a = _archive_in_thread(dsn, method="auto", lock_timeout="800ms")
        _wait_until_blocked(observer, "CALL archive_old_ohlcv_data")
        t0 = time.monotonic()
        with base.connect(dsn) as ingest:
            ingest.execute("""INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume)
                              VALUES ('NEW', '2025-01-14 00:00 America/New_York', 1, 1, 1, 1, 1)""")
        waited = time.monotonic() - t0
        assert waited < 3
        with pytest.raises(DatabaseError, match="lock timeout"):
            a.result(timeout=30)
        reader.rollback()
        reader.close()
        after = base.state(observer)
        assert after["archive"] == 0 and after["total"] == before["total"] + 1
        assert base.log_rows(observer)[-1][0] == "failed"
        # and once the reader is gone, the same run succeeds
        ok = retention.archive(observer, as_of=AS_OF)
        assert ok.status == "success" and ok.partitions_moved > 0
        base.assert_conserved(after, base.state(observer))


def test_cancelled_run_is_logged_as_failed(request):
    """A run stopped by statement_timeout (or a cancel request) is rolled back, logged, and raises."""
    dsn = request.getfixturevalue("deployed")
    with base.connect(dsn) as observer:
        before = base.state(observer)
        holder = _hold_row_lock(dsn)
        try:
            with base.connect(dsn) as conn:
                conn.execute("SET statement_timeout = '700ms'")
                with pytest.raises(DatabaseError, match="statement timeout"):
                    retention.archive(conn, as_of=AS_OF, method="rows", lock_timeout="20s")
        finally:
            holder.rollback()
            holder.close()
        assert base.state(observer) == before
        status, _, _, sqlstate, _ = base.log_rows(observer)[-1]
        assert (status, sqlstate) == ("failed", "57014")


def test_an_archive_the_server_crash_stopped_is_logged_interrupted_by_the_next_run(tmp_path):
    """Item 5 of issue 21 (fault row 38): PostgreSQL stops (immediate shutdown: no checkpoint, every session cut, as
    a crash) while an archive is under way. Its log row, written as it started, survives; the next run marks it
    'interrupted', and nothing moved (every bar where it was)."""
    cluster = EmbeddedCluster(tmp_path / "own-cluster")  # its own server: the session's shared one stays up
    dsn = cluster.start()
    try:
        with base.connect(dsn) as conn:
            retention.deploy(conn, as_of=AS_OF)
            base.load(conn, base.bars())
            before = base.state(conn)
        holder = _hold_row_lock(dsn)
        a = _archive_in_thread(dsn, method="rows", lock_timeout="30s")
        with base.connect(dsn) as observer:
            _wait_until_blocked(observer, "CALL archive_old_ohlcv_data")
            time.sleep(0.5)  # the WAL writer has written the 'running' row (synchronous_commit is off here)
        pg_ctl = str(_pg_bindir() / "pg_ctl")
        runuser = ["runuser", "-u", cluster.run_as, "--"] if cluster.run_as else []
        subprocess.run([*runuser, pg_ctl, "-D", str(cluster.data), "-m", "immediate", "-w", "stop"], check=True)
        with pytest.raises((DatabaseError, psycopg.OperationalError)):  # the run's session was cut
            a.result(timeout=30)
        with contextlib.suppress(psycopg.Error):
            holder.close()
        dsn = cluster.start()  # crash recovery
        with base.connect(dsn) as conn:
            assert base.state(conn) == before  # the stopped run moved nothing
            assert list(retention.retention_log(conn)["status"]) == ["running"]
            assert retention.archive(conn, as_of=AS_OF).status == "success"
            log = retention.retention_log(conn)
            assert list(log["status"]) == ["success", "interrupted"]
            assert "the server stopped" in log["error_message"].iloc[1] and log["consistency"].iloc[1] == "n/a"
    finally:
        cluster.destroy()
