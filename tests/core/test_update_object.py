"""``storage.update_object``, the lake's one conditional read-modify-write, on a local folder and on a real S3
server (SeaweedFS): concurrent updaters lose nothing, a lost race is retried from a fresh read, and a writer that
keeps losing stops with ``UpdateContended`` naming the key."""

from __future__ import annotations

import ast
import json
import threading

import pytest

from condvest.errors import CorruptObject, PreconditionFailed, UpdateContended
from condvest.storage import UPDATE_RETRY, Retry, Store, open_store, put_if_unchanged, update_object
from tests.fixtures.paths import ROOT

KEY = "processing_metadata/shared.json"
FAST = Retry(attempts=4, base_s=0.001, cap_s=0.002)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "local":
        return open_store(str(tmp_path / "lake"))
    return open_store(settings=request.getfixturevalue("s3_settings"))


def _items(key: str, data: bytes) -> list[str]:
    try:
        return json.loads(data)["items"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(f"unreadable list: {exc}", key=key) from exc


def _dump(items: list[str]) -> bytes:
    return json.dumps({"items": items}).encode()


def _adding(item: str):
    return lambda current: [*(current or []), item]


def test_concurrent_updaters_each_adding_one_item_lose_nothing(store: Store) -> None:
    n = 12
    barrier = threading.Barrier(n)
    attempts: list[int] = []
    errors: list[BaseException] = []

    def updater(i: int) -> None:
        barrier.wait()
        try:
            done = update_object(store, KEY, _adding(f"item-{i}"), read=_items, write=_dump)
            attempts.append(done.attempts)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=updater, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(_items(KEY, store.get(KEY))) == sorted(f"item-{i}" for i in range(n))
    assert len(attempts) == n


def test_a_lost_race_is_retried_from_a_fresh_read(store: Store) -> None:
    store.put(KEY, _dump(["first"]))
    seen: list[list[str] | None] = []

    def change(current: list[str] | None) -> list[str]:
        seen.append(current)
        if len(seen) == 1:  # another writer gets in between this read and this write
            store.put(KEY, _dump([*(current or []), "other"]))
        return [*(current or []), "mine"]

    done = update_object(store, KEY, change, read=_items, write=_dump, retry=FAST)
    assert seen == [["first"], ["first", "other"]]
    assert done.attempts == 2 and done.written
    assert done.before == ["first", "other"] and done.after == ["first", "other", "mine"]
    data, etag = store.get_with_etag(KEY)
    assert _items(KEY, data) == ["first", "other", "mine"] and done.etag == etag


def test_a_race_to_create_the_object_is_retried_too(store: Store) -> None:
    calls: list[list[str] | None] = []

    def change(current: list[str] | None) -> list[str]:
        calls.append(current)
        if len(calls) == 1:
            store.put(KEY, _dump(["created meanwhile"]))
        return [*(current or []), "mine"]

    done = update_object(store, KEY, change, read=_items, write=_dump, retry=FAST)
    assert calls == [None, ["created meanwhile"]] and done.old_etag is not None
    assert _items(KEY, store.get(KEY)) == ["created meanwhile", "mine"]


def test_exhausted_retries_raise_update_contended_naming_the_key(store: Store) -> None:
    calls = 0

    def change(current: list[str] | None) -> list[str]:
        nonlocal calls
        calls += 1
        store.put(KEY, _dump([f"other {calls}"]))  # someone else always wins
        return ["mine"]

    with pytest.raises(UpdateContended) as err:
        update_object(store, KEY, change, read=_items, write=_dump, retry=FAST, what="list update")
    assert isinstance(err.value, PreconditionFailed)
    assert err.value.key == KEY and err.value.attempts == FAST.attempts == calls
    assert str(err.value) == f"{KEY}: list update lost 4 races in a row to other writers"
    assert _items(KEY, store.get(KEY)) == ["other 4"], "the losing writer must not have overwritten anything"


def test_no_change_writes_nothing(store: Store) -> None:
    etag = store.put(KEY, _dump(["a"]))
    done = update_object(store, KEY, lambda current: None, read=_items, write=_dump)
    assert not done.written and done.etag == done.old_etag == etag and done.attempts == 1
    assert store.get_with_etag(KEY)[1] == etag
    done = update_object(store, "missing.json", lambda current: None, read=_items, write=_dump)
    assert not done.written and done.etag is None and not store.exists("missing.json")


def test_a_corrupt_object_is_named_and_never_overwritten(store: Store) -> None:
    store.put(KEY, b"{not json")
    called = []
    with pytest.raises(CorruptObject) as err:
        update_object(store, KEY, lambda current: called.append(current) or ["x"], read=_items, write=_dump)
    assert err.value.key == KEY and not called
    assert store.get(KEY) == b"{not json"


def test_bytes_pass_through_by_default_and_exists_false_skips_the_first_read(store: Store) -> None:
    done = update_object(store, "runs/index.jsonl", lambda data: (data or b"") + b"one\n", exists=False)
    assert done.attempts == 1 and done.before is None
    # exists=False on an object that does exist: the create loses, the retry reads it
    done = update_object(store, "runs/index.jsonl", lambda data: (data or b"") + b"two\n", exists=False, retry=FAST)
    assert done.attempts == 2 and done.before == b"one\n"
    assert store.get("runs/index.jsonl") == b"one\ntwo\n"


def test_put_if_unchanged_writes_only_over_the_version_read(store: Store) -> None:
    first = put_if_unchanged(store, KEY, b"1", None)
    with pytest.raises(PreconditionFailed):
        put_if_unchanged(store, KEY, b"x", None)  # it exists now
    second = put_if_unchanged(store, KEY, b"2", first)
    with pytest.raises(PreconditionFailed) as err:
        put_if_unchanged(store, KEY, b"x", first)  # stale
    assert err.value.key == KEY and store.get_with_etag(KEY) == (b"2", second)


def test_the_retry_policy_backs_off_exponentially_with_jitter_and_is_bounded():
    policy = Retry(attempts=6, base_s=0.1, cap_s=0.5)
    for attempt, full in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(full * 0.5 <= d <= full for d in delays), (attempt, delays)
        assert len(delays) > 1, "no jitter"
    assert 1 < UPDATE_RETRY.attempts <= 20
    total = sum(min(UPDATE_RETRY.cap_s, UPDATE_RETRY.base_s * 2 ** (k - 1)) for k in range(1, UPDATE_RETRY.attempts))
    assert total < 60, "the default policy must give up within a minute"


def test_conditional_puts_are_written_in_storage_and_the_lake_lock_only():
    """Every conditional update of a shared object goes through this module's two functions; the lake lock keeps
    its own (a lease is not a read-modify-write)."""
    found = set()
    for path in sorted([*(ROOT / "condvest").rglob("*.py"), *(ROOT / "runner").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and any(k.arg in ("if_match", "if_none_match") for k in node.keywords):
                found.add(path.relative_to(ROOT).as_posix())
    assert found == {"condvest/storage.py", "condvest/lake_lock.py"}
