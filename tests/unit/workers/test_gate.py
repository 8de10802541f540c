from pathlib import Path

from mmfeat.triton_contract import Caption, pack_embedding
from workers.gate import DedupeStore, TokenBucket, content_key


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_burst_then_refills_at_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.t += 0.5  # one token back
    assert bucket.try_take() is True
    assert bucket.try_take() is False
    clock.t += 100  # refill caps at burst
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_content_key_depends_on_bytes_and_prompt() -> None:
    assert content_key(b"abc", "") == content_key(b"abc", "")
    assert content_key(b"abc", "") != content_key(b"abd", "")
    assert content_key(b"abc", "") != content_key(b"abc", "describe")


def test_dedupe_store_only_answers_for_the_same_captioner_version(tmp_path: Path) -> None:
    store = DedupeStore(tmp_path / "dedupe")
    cap = Caption(text="a dog", token_ids=[5, 6])
    store.put("k1", "v1", cap)
    assert store.get("k1", "v1") == cap
    assert store.get("k1", "v2") is None  # a new captioner must caption again
    assert store.get("k1", None) is None  # version not known yet in this process
    assert store.get("k2", "v1") is None
    store.close()
    reopened = DedupeStore(tmp_path / "dedupe")  # persists across restarts
    assert reopened.get("k1", "v1") == cap
    reopened.close()


def test_dedupe_store_keeps_the_embedding_and_an_entry_from_before_it_is_a_miss(tmp_path: Path) -> None:
    import json

    store = DedupeStore(tmp_path / "dedupe")
    cap = Caption(text="a dog", token_ids=[5], embedding=pack_embedding([0.6, 0.8]))
    store.put("k1", "v1", cap)
    assert store.get("k1", "v1") == cap
    store._db["k0"] = json.dumps({"v": "v1", "text": "a cat", "ids": [7]})  # written before embeddings
    assert store.get("k0", "v1") is None  # captioned again, so its record carries the embedding like any other
    store.close()


def test_workers_on_one_host_each_take_a_free_dedupe_slot_and_reuse_it_later(tmp_path: Path) -> None:
    import pytest

    from mmfeat.errors import StateError

    base = tmp_path / "dedupe-g"
    first = DedupeStore.first_free(base)
    second = DedupeStore.first_free(base)  # the first holds the lock: the second worker gets a store of its own
    assert (first.path, second.path) == (base, tmp_path / "dedupe-g-2")
    cap = Caption(text="a dog", token_ids=[5])
    second.put("k", "v1", cap)
    second.close()
    third = DedupeStore.first_free(base)  # slot 2 is free again: the next worker reuses it, cache and all
    assert third.path == tmp_path / "dedupe-g-2" and third.get("k", "v1") == cap
    with pytest.raises(StateError, match="all 2 dedupe store slots"):
        DedupeStore.first_free(base, slots=2)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StateError, match="cannot open the dedupe store"):  # a broken store is not skipped over
        DedupeStore.first_free(tmp_path / "file")
    first.close()
    third.close()
