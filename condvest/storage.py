"""The lake's storage layer: one small interface over a local folder or ``s3://bucket/prefix``.

Keys are always ``/``-separated and relative to the lake root. Every stage reads and writes through a
``Store`` picked by URI scheme (``open_store``); DuckDB reads the same objects through ``Store.url``.
Conditional writes (``if_match`` / ``if_none_match``) are the lake's only coordination primitive:
S3 uses the real ``If-Match`` / ``If-None-Match`` headers, the local store a file lock. Stages never write
them by hand; they go through the two functions at the end of this module:

    put_if_unchanged(store, key, data, etag)   write only over the version read (``None``: only when there is
                                               none); ``PreconditionFailed`` when another writer got there first
    update_object(store, key, change, read=..., write=...) -> Updated
                                               the optimistic read-modify-write of a shared object (the manifest,
                                               splits, basis, a symbol's history, the run index): read it with
                                               its etag, ``change`` it, ``put_if_unchanged``, and on a lost race
                                               start again from a fresh read, under the one retry policy
                                               (``UPDATE_RETRY``: bounded attempts, exponential backoff with
                                               jitter; ``UpdateContended`` naming the key when they run out)

Reading many objects: ``Store.get_many`` keeps ``write_threads`` requests in flight (results in key order,
memory bounded); ``local_files`` hands a reader that wants files (DuckDB) a path per key, fetching an object
store's objects that way into a private temporary folder.

``delete_if(key, etag)`` deletes an object only while it still has the version read, so a writer's newer
version is never removed (compaction deletes the daily files it folded this way). On S3 it sends
``If-Match`` on DeleteObject (AWS honours it since 2024); SeaweedFS answers 412 to a stale etag as
well. The local store moves the file aside under a private name (an atomic rename, which also catches
an unconditional writer), compares the moved file's etag, and puts it back when it was not the version
read and nothing newer took its place.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import fcntl
import hashlib
import itertools
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from condvest.errors import ObjectNotFound, PreconditionFailed, StorageError, UpdateContended
from condvest.settings import Settings

log = logging.getLogger(__name__)

_TMP_COUNTER = itertools.count()


@dataclass(frozen=True)
class ObjectInfo:
    """An object as the store lists it. ``modified_at``: when it was last written and ``seen_at``: when the store
    answered, both in epoch seconds by the store's own clock (the S3 server's ``LastModified`` and ``Date``; the
    file's mtime and this host's clock on a local lake), to whole ``clock_step_s`` (S3: 1 s); ``None`` when
    unknown. Their difference is an age no client's clock enters (``condvest.lake_lock``, ``condvest.runs``)."""

    key: str
    size: int
    etag: str
    modified_at: float | None = None
    seen_at: float | None = None
    clock_step_s: float = 0.0

    @property
    def age_s(self) -> float | None:
        """Seconds since the object was last written, by the store's clock (``None`` when unknown)."""
        if self.modified_at is None or self.seen_at is None:
            return None
        return max(0.0, self.seen_at - self.modified_at)


_S3_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
_S3_RACE_LOST = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _map_error(key: str, exc: BaseException, action: str, *, s3: bool = False) -> StorageError:
    """The one place a backend failure becomes a lake error; every store operation's ``except`` calls it.

    ``action`` names what was tried: ``read``, ``head``, ``write``, ``write-if-match``, ``list``, ``delete``
    or ``copy``. The local store passes OS errors: a missing file (or a folder) on ``read`` is
    ``ObjectNotFound``, anything else ``StorageError("<action> failed: ...")``. ``S3Store`` passes whatever
    boto3 raised (``s3=True``): the S3 error code decides (not found is ``ObjectNotFound``, or
    ``PreconditionFailed`` for ``write-if-match``; a lost condition is ``PreconditionFailed``), anything
    else is ``StorageError("S3 <code or exception type>: ...")``.
    """
    if not s3:
        if action == "read" and isinstance(exc, FileNotFoundError | IsADirectoryError):
            return ObjectNotFound(key=key)
        return StorageError(f"{action} failed: {exc}", key=key)
    # botocore's ClientError carries a response; its timeouts carry response=None
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
    if code in _S3_NOT_FOUND:
        if action == "write-if-match":
            # AWS answers If-Match on a missing object with 404: the object changed (it went away)
            return PreconditionFailed("object was deleted since it was read", key=key)
        return ObjectNotFound(key=key)
    if code in _S3_RACE_LOST:
        return PreconditionFailed(key=key)
    return StorageError(f"S3 {code or type(exc).__name__}: {exc}", key=key)


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in key.split("/")):
        raise StorageError("invalid object key", key=key or "<empty>")
    return key


class Store:
    """Abstract lake store. Subclasses: ``LocalStore``, ``S3Store``."""

    uri: str
    #: True when ``put(if_match=...)`` / ``put(if_none_match=True)`` are enforced by the backend
    conditional_writes: bool = True
    #: concurrent writers for many small objects (``bronze.write_daily_files``): a disk is busy with a few, an
    #: object store's requests wait on the network and want more in flight
    write_threads: int = 4

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        raise NotImplementedError

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The object and what the store says of that version (its etag, and its age by the store's clock when the
        store can tell); ``ObjectNotFound`` when there is none. Stores answer both in one request; this default
        asks twice and gives no times when the object changed in between."""
        data, etag = self.get_with_etag(key)
        info = self.head(key)
        if info is None or info.etag != etag:
            return data, ObjectInfo(key, len(data), etag)
        return data, info

    def get_many(self, keys: Iterable[str], threads: int | None = None) -> Iterator[tuple[str, bytes]]:
        """``(key, data)`` for each of ``keys``, in their order, read concurrently: ``threads`` (default
        ``write_threads``) requests in flight and at most twice that many objects held ahead of the caller, so
        memory stays bounded whatever the count. A failed read (``ObjectNotFound`` naming its key, ...) is raised
        in its turn, the reads not started yet are dropped."""
        n = max(1, threads or self.write_threads)
        it = iter(keys)
        with ThreadPoolExecutor(max_workers=n) as pool:
            window: deque[tuple[str, Future[bytes]]] = deque()
            try:
                for k in itertools.islice(it, 2 * n):
                    window.append((k, pool.submit(self.get, k)))
                while window:
                    k, fut = window.popleft()
                    data = fut.result()
                    for nxt in itertools.islice(it, 1):
                        window.append((nxt, pool.submit(self.get, nxt)))
                    yield k, data
            finally:
                for _, fut in window:
                    fut.cancel()

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write ``data`` whole (atomically for readers); return the new etag."""
        raise NotImplementedError

    def head(self, key: str) -> ObjectInfo | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order, after ``start_after`` when given."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if it still has version ``etag``; ``False`` when it changed or is gone (kept)."""
        raise NotImplementedError

    def delete_many(self, keys: Iterable[str]) -> int:
        n = 0
        for k in keys:
            self.delete(k)
            n += 1
        return n

    def delete_many_if(self, versions: dict[str, str], threads: int = 16) -> int:
        """``delete_if`` for each key -> etag of ``versions`` (concurrently); returns how many were deleted."""
        if not versions:
            return 0
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(versions)))) as pool:
            return sum(pool.map(lambda kv: self.delete_if(*kv), sorted(versions.items())))

    def copy(self, src: str, dst: str) -> None:
        self.put(dst, self.get(src))

    def url(self, key: str) -> str:
        """The path or URL DuckDB and pyarrow use for ``key`` (globs allowed)."""
        raise NotImplementedError

    def put_many(self, items: Iterable[tuple[str, bytes]], threads: int = 8) -> int:
        """Write many objects concurrently; returns the count. The first failure is raised."""
        items = list(items)
        if not items:
            return 0
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for _ in pool.map(lambda kv: self.put(kv[0], kv[1]), items):
                pass
        return len(items)


class LocalStore(Store):
    """A folder on disk. Writes go to a temporary file and are renamed into place."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _etag(st: os.stat_result) -> str:
        return f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data, info = self.get_with_info(key)
        return data, info.etag

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        p = self._path(key)
        try:
            with open(p, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError as exc:
            raise _map_error(key, exc, "read") from exc
        return data, ObjectInfo(key, st.st_size, self._etag(st), st.st_mtime, time.time())

    def _write(self, p: Path, data: bytes) -> str:
        # a private temporary name in the target folder, then an atomic rename: readers see old or new
        tmp = p.parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{next(_TMP_COUNTER)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                st = os.fstat(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._etag(st)

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        p = self._path(key)
        try:
            if if_match is None and not if_none_match:
                return self._write(p, data)
            # striped locks: a fixed set of lock files, so conditional writes leave no litter per key
            stripe = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 64
            lock_path = self.root / ".locks" / f"stripe-{stripe:02d}.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "a") as lf:
                fcntl.flock(lf, fcntl.LOCK_EX)
                try:
                    current = self._etag(p.stat()) if p.exists() else None
                    if if_none_match and current is not None:
                        raise PreconditionFailed("object already exists", key=key)
                    if if_match is not None and current != if_match:
                        raise PreconditionFailed("object changed since it was read", key=key)
                    return self._write(p, data)
                finally:
                    fcntl.flock(lf, fcntl.LOCK_UN)
        except OSError as exc:
            raise _map_error(key, exc, "write") from exc

    def head(self, key: str) -> ObjectInfo | None:
        p = self._path(key)
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        if not p.is_file():
            return None
        return ObjectInfo(key, st.st_size, self._etag(st), st.st_mtime, time.time())

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        # walk only the directory that holds the prefix, lazily and in key order: each directory's entries
        # sorted by their key (a folder's as "name/", the prefix of every key inside it), depth first, so the
        # first objects come without walking the rest (the first symbol of bronze reads one folder, not all)
        base_dir, _, _ = prefix.rpartition("/")
        top = os.path.join(self.root, base_dir) if base_dir else str(self.root)
        stack = [self._entries(top, base_dir + "/" if base_dir else "")]
        while stack:
            for key, e in stack[-1]:
                if key.endswith("/"):  # a folder: descend when it can hold keys of the prefix after start_after
                    if key.startswith(prefix[: len(key)]) and (
                        start_after is None or key >= start_after or start_after.startswith(key)
                    ):
                        stack.append(self._entries(e.path, key))
                        break
                elif key.startswith(prefix) and (start_after is None or key > start_after):
                    try:
                        st = e.stat()
                    except FileNotFoundError:  # removed while listing
                        continue
                    yield ObjectInfo(key, st.st_size, self._etag(st), st.st_mtime, time.time())
            else:
                stack.pop()

    @staticmethod
    def _entries(path: str, rel: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """The entries of a folder as (key, entry), in key order (a folder's key ends with "/")."""
        try:
            with os.scandir(path) as it:
                entries = [
                    (rel + e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e)
                    for e in it
                    if not e.name.startswith(".")
                ]
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        entries.sort(key=lambda ke: ke[0])
        return iter(entries)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _map_error(key, exc, "delete") from exc

    def delete_if(self, key: str, etag: str) -> bool:
        p = self._path(key)
        aside = p.parent / f".del-{os.getpid()}-{threading.get_ident()}-{next(_TMP_COUNTER)}.part"
        try:
            try:
                os.rename(p, aside)  # atomic: from here on no writer can change what we hold
            except FileNotFoundError:
                return False
            if self._etag(aside.stat()) == etag:
                aside.unlink()
                return True
            try:
                os.link(aside, p)  # not the version read: put it back, unless a newer one already landed
            except FileExistsError:
                pass
            aside.unlink()
            log.info("delete=kept key=%s reason=changed_since_read", key)
            return False
        except OSError as exc:
            raise _map_error(key, exc, "delete") from exc

    def url(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)


def _timestamp_text(value: str) -> str:
    return value


class S3Store(Store):
    """``s3://bucket[/prefix]`` through boto3 (endpoint from ``AWS_ENDPOINT_URL`` for S3-compatible stores)."""

    write_threads = 16  # within the client's connection pool (32)

    def __init__(
        self, uri: str, endpoint_url: str | None = None, region: str | None = None, client: Any = None
    ) -> None:
        rest = uri[len("s3://") :].strip("/")
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise StorageError("s3 URI needs a bucket", key=uri)
        self.prefix = f"{prefix}/" if prefix else ""
        self.uri = uri.rstrip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:  # put_many's threads must share one client (and one connection pool)
                if self._client is None:
                    import boto3
                    import botocore.session
                    from botocore.config import Config

                    core = botocore.session.get_session()
                    # timestamps stay text, parsed by ``_epoch`` with the standard library: parsing them with
                    # dateutil was 60% of a bronze listing's time (a page of 1,000 objects; BENCHMARKS.md, S3)
                    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp_text)
                    self._client = boto3.session.Session(botocore_session=core).client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region or "us-east-1",
                        config=Config(
                            max_pool_connections=32,
                            retries={"max_attempts": 5, "mode": "standard"},
                            s3={"addressing_style": "path"} if self.endpoint_url else None,
                        ),
                    )
        return self._client

    def _k(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data, info = self.get_with_info(key)
        return data, info.etag

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        k = self._k(key)
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=k)
            data = r["Body"].read()
        except Exception as exc:  # botocore raises ClientError / connection errors
            raise _map_error(key, exc, "read", s3=True) from exc
        return data, ObjectInfo(key, len(data), r["ETag"], *_s3_times(r, r.get("LastModified")), 1.0)

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        kw: dict[str, Any] = {}
        if if_match is not None:
            kw["IfMatch"] = if_match
        if if_none_match:
            kw["IfNoneMatch"] = "*"
        k = self._k(key)
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=k, Body=data, **kw)
            return r["ETag"]
        except Exception as exc:
            raise _map_error(key, exc, "write" if if_match is None else "write-if-match", s3=True) from exc

    def head(self, key: str) -> ObjectInfo | None:
        k = self._k(key)
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=k)
        except Exception as exc:
            err = _map_error(key, exc, "head", s3=True)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from exc
        return ObjectInfo(key, int(r["ContentLength"]), r["ETag"], *_s3_times(r, r.get("LastModified")), 1.0)

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            kw["StartAfter"] = self.prefix + start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kw):
                for o in page.get("Contents", []):
                    times = _s3_times(page, o.get("LastModified"))
                    yield ObjectInfo(o["Key"][len(self.prefix) :], int(o["Size"]), o["ETag"], *times, 1.0)
        except Exception as exc:
            raise _map_error(prefix, exc, "list", s3=True) from exc

    def delete(self, key: str) -> None:
        k = self._k(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=k)
        except Exception as exc:
            raise _map_error(key, exc, "delete", s3=True) from exc

    def delete_if(self, key: str, etag: str) -> bool:
        k = self._k(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=k, IfMatch=etag)
            return True
        except Exception as exc:
            err = _map_error(key, exc, "delete", s3=True)
            if isinstance(err, PreconditionFailed | ObjectNotFound):
                log.info("delete=kept key=%s reason=%s", key, type(err).__name__)
                return False
            raise err from exc

    def delete_many(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            objects = [{"Key": self._k(k)} for k in chunk]
            try:
                r = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
            except Exception as exc:
                raise _map_error(chunk[0], exc, "delete", s3=True) from exc
            if r.get("Errors"):
                e = r["Errors"][0]
                raise StorageError(f"delete failed: {e.get('Message')}", key=e.get("Key", chunk[0]))
        return len(keys)

    def copy(self, src: str, dst: str) -> None:
        src_k, dst_k = self._k(src), self._k(dst)
        try:
            self.client.copy_object(Bucket=self.bucket, Key=dst_k, CopySource={"Bucket": self.bucket, "Key": src_k})
        except Exception as exc:
            raise _map_error(src, exc, "copy", s3=True) from exc

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


def _s3_times(response: dict[str, Any], modified: Any) -> tuple[float | None, float | None]:
    """``LastModified`` and the answer's ``Date`` header as epoch seconds (the S3 server's clock)."""
    date = (response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    try:
        seen = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        seen = None
    return _epoch(modified), seen


def _epoch(modified: Any) -> float | None:
    """A ``LastModified`` as epoch seconds: botocore hands it over as text (``_timestamp_text``), ISO 8601 in a
    listing, an HTTP date in a HEAD or GET answer; parsed here with the standard library, only when read."""
    if hasattr(modified, "timestamp"):
        return modified.timestamp()
    if not isinstance(modified, str) or not modified:
        return None
    try:
        return dt.datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(modified).timestamp()
    except (TypeError, ValueError):
        return None


#: the temporary folders of ``local_files`` (``<prefix><pid>-<random>``; one a killed process left is removed by
#: the next ``local_files`` on this machine)
LOCAL_COPY_PREFIX = "condvest-objects-"


@contextmanager
def local_files(store: Store, keys: Sequence[str], threads: int | None = None) -> Iterator[dict[str, str]]:
    """A path on this machine for each of ``keys`` (key -> path) while the block runs, for a reader that wants
    files (DuckDB's ``read_parquet``): a ``LocalStore``'s own files, untouched (a missing one fails where it is
    read); any other store's objects fetched with ``get_many`` (``threads`` in flight, default ``write_threads``)
    into a private temporary folder removed on exit. DuckDB's httpfs keeps about one object per DuckDB thread in
    flight, each a HEAD and ranged GETs; this keeps 16 GETs in flight on S3 (BENCHMARKS.md, S3). Disk: the
    objects' size, for the block's duration. ``ObjectNotFound`` names a missing key; a corrupt object is copied
    as it is (its reader names it)."""
    if isinstance(store, LocalStore) or not keys:
        yield {k: store.url(k) for k in keys}
        return
    _remove_stale_copies()
    folder = tempfile.mkdtemp(prefix=f"{LOCAL_COPY_PREFIX}{os.getpid()}-")
    try:
        paths: dict[str, str] = {}
        clock, size = time.monotonic(), 0
        for i, (key, data) in enumerate(store.get_many(keys, threads)):
            path = os.path.join(folder, f"{i:07d}-{key.rsplit('/', 1)[-1]}")
            with open(path, "wb") as f:
                f.write(data)
            paths[key] = path
            size += len(data)
        log.info("local copies objects=%d bytes=%d seconds=%.2f", len(paths), size, time.monotonic() - clock)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_copies() -> None:
    """Remove ``local_files`` folders whose process is gone (killed before its ``finally``)."""
    for p in Path(tempfile.gettempdir()).glob(f"{LOCAL_COPY_PREFIX}*-*"):
        pid = p.name[len(LOCAL_COPY_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
            log.info("local copies removed stale folder=%s", p)
        except PermissionError:  # alive, another user's
            pass


def open_store(uri: str | None = None, settings: Settings | None = None) -> Store:
    """The store for ``uri`` (default: the settings' lake)."""
    settings = settings or Settings.from_env()
    uri = uri or settings.lake_uri
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=settings.s3_endpoint_url, region=settings.aws_region)
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError("unsupported lake URI scheme (use a folder or s3://bucket/prefix)", key=uri)
    return LocalStore(uri.removeprefix("file://"))


# -- the conditional read-modify-write, the one way a shared object is updated ------------------------------------

_T = TypeVar("_T")


@dataclass(frozen=True)
class Retry:
    """How ``update_object`` retries after a lost race: at most ``attempts`` tries in all, sleeping
    ``min(cap_s, base_s * 2**(k-1)) * uniform(0.5, 1)`` seconds after the k-th lost one (exponential backoff with
    jitter, so writers that collided do not collide again in step)."""

    attempts: int = 20
    base_s: float = 0.05
    cap_s: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after losing attempt ``attempt`` (1-based)."""
        return min(self.cap_s, self.base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


#: the lake's one retry policy for a shared object (at most ~30 s of waiting before ``UpdateContended``)
UPDATE_RETRY = Retry()


@dataclass(frozen=True)
class Updated(Generic[_T]):
    """What ``update_object`` did: ``before`` (the parsed version the change was computed from, ``None`` when
    there was none) became ``after`` (``None``: the change left the object as it was, nothing was written)."""

    key: str
    before: _T | None
    after: _T | None
    old_etag: str | None  # the version read (None: there was none)
    etag: str | None  # the version now in the store (the old one when nothing was written)
    attempts: int

    @property
    def written(self) -> bool:
        return self.after is not None


def put_if_unchanged(store: Store, key: str, data: bytes, etag: str | None) -> str:
    """Write ``data`` to ``key`` only over the version ``etag`` that was read (``None``: only when there is no
    object yet); returns the new etag. ``PreconditionFailed`` when another writer got there first."""
    if etag is None:
        return store.put(key, data, if_none_match=True)
    return store.put(key, data, if_match=etag)


def _raw(key: str, data: bytes) -> bytes:
    return data


def _same(data: bytes) -> bytes:
    return data


def update_object(
    store: Store,
    key: str,
    change: Callable[[Any], Any],
    *,
    read: Callable[[str, bytes], Any] = _raw,
    write: Callable[[Any], bytes] = _same,
    exists: bool = True,
    retry: Retry = UPDATE_RETRY,
    what: str = "update",
) -> Updated[Any]:
    """Change the shared object ``key`` without losing another writer's change.

    Each attempt reads the object with its etag and parses it with ``read(key, data)`` (missing: ``None``),
    computes ``change(current_or_None)`` (the new value, or ``None`` to leave the object as it is), and writes
    ``write(new)`` with ``put_if_unchanged``. A lost race starts again from a fresh read after ``retry``'s
    backoff; after ``retry.attempts`` lost races ``UpdateContended`` names the key. ``read`` holds the kind's rule
    for an unreadable object (it raises ``CorruptObject`` naming the key, which is never retried nor
    overwritten); the default passes the bytes through, as ``write``'s does. ``exists=False`` skips the first
    read (the caller knows the object is new; a lost race reads it). ``change`` may run more than once: it must
    not have side effects. ``what`` names the update in the error (``"manifest update"``)."""
    for attempt in range(1, retry.attempts + 1):
        before, etag = None, None
        if exists or attempt > 1:
            try:
                data, etag = store.get_with_etag(key)
            except ObjectNotFound:
                pass
            else:
                before = read(key, data)
        after = change(before)
        if after is None:
            return Updated(key, before, None, etag, etag, attempt)
        try:
            new = put_if_unchanged(store, key, write(after), etag)
        except PreconditionFailed:
            if attempt < retry.attempts:
                delay = retry.delay(attempt)
                log.info("update=conflict key=%s attempt=%d retry_in_s=%.3f", key, attempt, delay)
                time.sleep(delay)
            continue
        return Updated(key, before, after, etag, new, attempt)
    raise UpdateContended(what, key=key, attempts=retry.attempts)
