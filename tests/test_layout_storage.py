"""S3 layout and storage against a real S3 HTTP server (moto server mode on loopback)."""

from __future__ import annotations

import urllib.request

import pytest

from narration.layout import BatchLayout, safe_component


@pytest.mark.parametrize("raw", ["../../etc", "a/b", "x\x00y", "..", "/abs", "a" * 500])
def test_key_components_cannot_escape_their_prefix(raw):
    component = safe_component(raw)
    assert "/" not in component and ".." not in component and component and len(component) <= 96
    assert all(ord(c) >= 32 for c in component)


def test_item_outputs_live_under_the_batch_and_item():
    layout = BatchLayout("20261125T020000-scheduled-abc")
    keys = [layout.audio("i1"), layout.synthesis("i1"), layout.timing("i1", "pocketsphinx"),
            *(layout.subtitle("i1", f) for f in ("srt", "vtt", "ass", "json", "csv")), layout.result("i1")]
    assert all(k.startswith("batches/20261125T020000-scheduled-abc/items/i1/") for k in keys)
    assert len(set(keys)) == len(keys)


def test_round_trip_conditional_write_and_presigned_get(storage):
    storage.put_json("batches/b/x.json", {"a": 1})
    assert storage.get_json("batches/b/x.json") == {"a": 1}
    assert storage.put_if_absent("locks/one", b"first") is True
    assert storage.put_if_absent("locks/one", b"second") is False
    assert storage.get_text("locks/one") == "first"
    url = storage.presign("batches/b/x.json", 60)
    assert b'"a": 1' in urllib.request.urlopen(url, timeout=5).read()
    with pytest.raises(KeyError):
        storage.get_bytes("batches/b/missing.json")
    assert storage.get_json_or_none("batches/b/missing.json") is None


def test_presigned_links_name_the_public_endpoint_and_work_there(storage, s3_server, monkeypatch):
    from narration.settings import Settings
    from narration.storage import Storage

    storage.put_text("batches/b/report.csv", "item_id\n")
    public = s3_server.endpoint_url.replace("127.0.0.1", "localhost")  # another name for the same server
    monkeypatch.setenv("NARRATION_S3_PUBLIC_ENDPOINT_URL", public)
    url = Storage.from_settings(Settings()).presign("batches/b/report.csv", 60)
    assert url.startswith(public + "/") and "X-Amz-Signature=" in url
    assert urllib.request.urlopen(url, timeout=5).read() == b"item_id\n"
    assert storage.presign("batches/b/report.csv", 60).startswith(s3_server.endpoint_url)


def test_map_runs_items_concurrently_keeps_their_order_and_reads_real_objects(storage):
    import threading

    keys = [f"map/{n:03d}.json" for n in range(40)]
    for n, key in enumerate(keys):
        storage.put_json(key, {"n": n})
    threads: set[str] = set()

    def read(key: str) -> int:
        threads.add(threading.current_thread().name)
        return storage.get_json(key)["n"]

    assert storage.map(read, keys) == list(range(40))
    assert len(threads) > 1 and storage.concurrency == 8


def test_map_stops_starting_items_after_a_failure_and_raises_it(storage):
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        if n == 0:
            raise KeyError("s3://bucket/missing")
        storage.exists(f"map/{n}")  # a real round trip, so the failure lands while items are queued
        return n

    with pytest.raises(KeyError, match="missing"):
        storage.map(work, range(200))
    assert len(started) < 200


def test_write_behind_writes_in_order_and_nothing_after_a_failure(storage):
    from narration.storage import WriteBehind

    with WriteBehind(depth=2) as writer:
        for n in range(5):
            writer.submit(lambda n=n: storage.put_json(f"wb/{n}.json", {"n": n}))
    assert sorted(storage.list_keys("wb/")) == [f"wb/{n}.json" for n in range(5)]

    def refuse() -> None:
        raise KeyError("s3://bucket/refused")

    with pytest.raises(KeyError, match="refused"):
        with WriteBehind() as writer:
            writer.submit(lambda: storage.put_text("wb2/a.txt", "a"))
            writer.submit(refuse)
            writer.submit(lambda: storage.put_text("wb2/c.txt", "c"))  # after the failure: never written
    assert list(storage.list_keys("wb2/")) == ["wb2/a.txt"]


def test_prefetch_hands_each_item_its_own_read_or_its_own_failure(storage):
    from narration.storage import Prefetch

    storage.put_text("pf/a", "A")
    storage.put_text("pf/c", "C")
    keys = ["pf/a", "pf/missing", "pf/c"]
    with Prefetch(storage.get_bytes, keys) as reads:
        assert reads.get(0) == b"A"
        with pytest.raises(KeyError, match="pf/missing"):
            reads.get(1)
        assert reads.get(2) == b"C"


def test_a_refusal_is_raised_at_once_and_named_while_a_missing_object_is_a_key_error(storage):
    import time

    from narration.settings import Settings
    from narration.storage import Storage, StorageRefused

    gone = Storage.from_settings(Settings(bucket="no-such-bucket-anywhere"))
    started = time.monotonic()
    with pytest.raises(StorageRefused, match=r"refused to read s3://no-such-bucket-anywhere/k: the bucket does "
                                             r"not exist") as refused:
        gone.get_bytes("k")
    assert refused.value.code == "NoSuchBucket"
    with pytest.raises(StorageRefused, match="refused to write"):
        gone.put_bytes("k", b"x")
    assert time.monotonic() - started < 5, "a refusal is not retried"
    assert gone.head_bucket() is False
    with pytest.raises(KeyError):  # in a bucket that exists, a missing object is just missing
        storage.get_bytes("batches/b/missing.json")


def test_a_prefix_read_returns_the_first_bytes_and_the_whole_size(storage):
    storage.put_bytes("batches/b/blob", bytes(range(256)) * 40)
    assert storage.get_prefix("batches/b/blob", 16) == (bytes(range(16)), 10240)
    storage.put_bytes("batches/b/empty", b"")
    assert storage.get_prefix("batches/b/empty", 16) == (b"", 0)
    with pytest.raises(KeyError):
        storage.get_prefix("batches/b/none", 16)
    assert storage.list_sizes("batches/b/") == {"batches/b/blob": 10240, "batches/b/empty": 0}


def test_imap_yields_in_order_with_a_bounded_number_of_items_ahead(storage):
    import threading

    keys = [f"imap/{n:03d}.json" for n in range(60)]
    for n, key in enumerate(keys):
        storage.put_json(key, {"n": n})
    lock = threading.Lock()
    started = 0

    def read(key: str) -> int:
        nonlocal started
        with lock:
            started += 1
        return storage.get_json(key)["n"]

    seen = []
    for value in storage.imap(read, keys, ahead=5):
        with lock:
            assert started - len(seen) <= 5, "more items started than may be held unconsumed"
        seen.append(value)
    assert seen == list(range(60))

    def fail_at_3(n: int) -> int:
        if n == 3:
            raise KeyError("s3://bucket/three")
        return n

    results = storage.imap(fail_at_3, range(100), ahead=4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="three"):
        next(results)
