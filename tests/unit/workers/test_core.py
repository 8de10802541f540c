"""The caption worker's pure core, with no broker and no Triton: one outcome per record, whatever the record.

The captioner and the dedupe cache are in-memory fakes (the integration tier runs the real ones); fetch,
the image probe, the feature builder and every schema are the real code."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmfeat.errors import CaptionerUnavailable, CaptionRejected, RecordError, RecordRef, StateError
from mmfeat.features import FeatureBuilder
from mmfeat.media.image import probe_image
from mmfeat.media.prepared import Prepared
from mmfeat.schemas import DeferredRecordV1, DlqRecordV1, parse_feature_record
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import load_tokenizers
from mmfeat.triton_contract import Caption
from workers.core import CaptionCore, CaptionResult, Incoming, Kind, Outcome, Parts, Topics
from workers.fetch import FetchPolicy, fetch_media
from workers.gate import TokenBucket, content_key

NAMES = ["sp", "word", "hash", "decoder"]
BUILDER = FeatureBuilder(load_tokenizers(NAMES, ASSETS / "tokenizers", 1 << 20), NAMES, 32)


def png(seed: int, size: int = 16) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


IMAGES = [png(i) for i in range(4)]


class FakeCaptioner:
    """Captions from the bytes' hash; ``reject`` images get a per-request error, ``explode`` fails a whole call."""

    def __init__(self, *, reject: Sequence[bytes] = (), explode: Sequence[bytes] = (), down: bool = False) -> None:
        self.reject, self.explode, self.down = set(reject), set(explode), down
        self.calls: list[int] = []

    def caption_many(self, items: Sequence[tuple[bytes, str]]) -> list[CaptionResult | RecordError]:
        if self.down:
            raise CaptionerUnavailable("Triton down (fake)")
        self.calls.append(len(items))
        if any(media in self.explode for media, _ in items):
            raise RuntimeError("the batch call broke")
        out: list[CaptionResult | RecordError] = []
        for media, _ in items:
            if media in self.reject:
                out.append(CaptionRejected("captioner rejected the image"))
            else:
                word = ["cat", "dog", "tree", "car"][hashlib.sha256(media).digest()[0] % 4]
                out.append(CaptionResult(Caption(text=f"a {word} on a white background", token_ids=[5, 6]), "fake@1"))
        return out

    def probe_version(self) -> str:
        return "fake@1"

    def ready(self) -> bool:
        return not self.down

    def close(self) -> None:
        pass


class DictCache:
    def __init__(self, broken: bool = False) -> None:
        self.d: dict[str, tuple[str, Caption]] = {}
        self.broken = broken

    def has(self, key: str) -> bool:
        if self.broken:
            raise StateError("disk gone (fake)")
        return key in self.d

    def get(self, key: str, captioner_version: str | None) -> Caption | None:
        got = self.d.get(key)
        return got[1] if got and got[0] == captioner_version else None

    def put(self, key: str, captioner_version: str, caption: Caption) -> None:
        self.d[key] = (captioner_version, caption)

    def close(self) -> None:
        pass


def core(
    tmp_path: Path, captioner: FakeCaptioner | None = None, *, budget: int | None = None, cache: DictCache | None = None
) -> CaptionCore:
    policy = FetchPolicy.of([tmp_path], (), 200_000, 1.0)
    return CaptionCore(
        Parts(
            captioner=captioner or FakeCaptioner(),
            cache=cache or DictCache(),
            builder=BUILDER,
            fetch=lambda u: fetch_media(u, policy),
            prepare=lambda u, media: Prepared([(None, media)] if probe_image(media, 1_000_000) else []),
            content_key=lambda media: content_key(media, ""),
            topics=Topics("features", "deferred", "dlq"),
            budget=TokenBucket(0.0001, budget) if budget is not None else None,
            max_record_bytes=600_000,
        )
    )


def upload(item: str, media: bytes | None = None, **fields: object) -> bytes:
    rec: dict[str, object] = {"item_id": item, "owner_id": "o1", "media_type": "image", "created_at": "2026-11-01T00:00:00Z"}
    if media is not None:
        rec["media_b64"] = base64.b64encode(media).decode()
    rec.update(fields)
    return json.dumps(rec).encode()


def batch(values: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None) -> list[Incoming]:
    keys = keys or [f"k{i}".encode() for i in range(len(values))]
    return [Incoming(RecordRef("media.uploads", i % 2, 100 + i), k, v) for i, (k, v) in enumerate(zip(keys, values, strict=True))]


def check_outcomes(incoming: list[Incoming], out: list[Outcome]) -> None:
    """Exactly one outcome per record, in order, each a record its own schema reads back, nothing lost."""
    assert [o.ref.offset for o in out] == [i.ref.offset for i in incoming]
    for inc, o in zip(incoming, out, strict=True):
        rec = o.record
        assert rec.topic == {Kind.FEATURE: "features", Kind.DEFERRED: "deferred", Kind.DLQ: "dlq"}[o.kind]
        key = rec.key.encode() if isinstance(rec.key, str) else rec.key
        assert all(isinstance(v, bytes) or v is None or (isinstance(v, str) and v.encode()) for _, v in rec.headers)
        if o.kind is Kind.FEATURE:
            assert parse_feature_record(rec.value).item_id == key.decode()  # type: ignore[union-attr]
        elif o.kind is Kind.DEFERRED:
            assert DeferredRecordV1.model_validate_json(rec.value).reason == "budget"
        else:
            d = DlqRecordV1.model_validate_json(rec.value)
            assert key == inc.key and d.reason == o.reason and d.source_offset == inc.ref.offset
            raw = base64.b64decode(d.raw_value_b64) if d.raw_value_b64 is not None else None
            assert raw == (inc.value or b"") or d.raw_value_b64 is None  # the raw record travels along
            assert "\n" not in d.error_message and (d.item_id is None or "\n" not in d.item_id)


def test_each_upload_gets_its_outcome_feature_deferred_dlq_or_dedupe_hit(tmp_path: Path) -> None:
    cap = FakeCaptioner(reject=[IMAGES[3]])
    c = core(tmp_path, cap, budget=2)
    values = [upload("a", IMAGES[0]), upload("b", IMAGES[0]), b"{oops", upload("c", IMAGES[1]), upload("d", IMAGES[2]), None]
    inc = batch(values)
    out = c.run(inc)
    check_outcomes(inc, out)
    assert [(o.kind.value, o.reason, o.dedupe_hit) for o in out] == [
        ("feature", None, False), ("feature", None, True),  # identical content in one batch: one request
        ("dlq", "bad_json", False), ("feature", None, False), ("deferred", "budget", False), ("dlq", "schema", False),
    ]  # fmt: skip
    assert cap.calls == [2]  # the budget allowed two calls' worth; the third distinct image was deferred
    restarted = core(tmp_path, cap, cache=c.p.cache)  # type: ignore[arg-type]  # a new process, the same store, no budget
    again = restarted.run(batch([upload("e", IMAGES[1]), upload("f", IMAGES[3])]))
    assert [(o.kind.value, o.reason, o.dedupe_hit) for o in again] == [("feature", None, True), ("dlq", "caption", False)]


def test_a_batch_wide_captioner_failure_is_narrowed_to_the_record_that_caused_it(tmp_path: Path) -> None:
    cap = FakeCaptioner(explode=[IMAGES[1]])
    out = core(tmp_path, cap).run(batch([upload("a", IMAGES[0]), upload("b", IMAGES[1]), upload("c", IMAGES[2])]))
    assert [(o.kind.value, o.reason) for o in out] == [("feature", None), ("dlq", "internal_error"), ("feature", None)]
    assert "RuntimeError" in DlqRecordV1.model_validate_json(out[1].record.value).error_message
    assert cap.calls == [3, 1, 1, 1]  # the batch, then one at a time


def test_infrastructure_failures_leave_the_core_and_dead_letter_nothing(tmp_path: Path) -> None:
    with pytest.raises(CaptionerUnavailable):
        core(tmp_path, FakeCaptioner(down=True)).run(batch([upload("a", IMAGES[0])]))
    with pytest.raises(StateError):
        core(tmp_path, cache=DictCache(broken=True)).run(batch([upload("a", IMAGES[0])]))


def test_hostile_ids_and_deep_json_become_dlq_records_that_encode(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    import os

    os.mkfifo(fifo)
    values = [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in a recursive parser
        b'{"item_id": "x\\ud800", "owner_id": "o"}',  # a lone surrogate
        upload("id\nFORGED", IMAGES[0]),  # a newline in the id
        upload("ok", None, media_uri="http://h:99999/x.png"),
        upload("ok2", None, media_uri="file:///tmp/a%00.png"),
        upload("ok3", None, media_uri=fifo.as_uri()),
        upload("ok4", IMAGES[0], created_at="2026-11-01T00:00:00"),
    ]
    inc = batch(values, keys=[b"\xff\xfe", None, b"k", b"k", b"k", b"k", b"k"])
    out = core(tmp_path).run(inc)
    check_outcomes(inc, out)
    assert [o.reason for o in out] == ["bad_json", "bad_json", "schema", "uri_denied", "uri_denied", "uri_denied", "schema"]
    assert DlqRecordV1.model_validate_json(out[2].record.value).item_id == "id\\x0aFORGED"


# ---- the property: random and mutated records never escape the boundary -------------------------------

HOSTILE = [
    b"\x00", b"\ud800", b'"\\ud800"', b"[" * 300, b"1e999", b"-1", b"10000000000000000000000", b"true", b"null",
    b'"file:///dev/zero"', b'"http://a:0/"', b'"http://x@127.0.0.1:1/"', b'"\\u001b[2J"', b"{}", b"[]", b'"' + b"A" * 5000 + b'"',
]  # fmt: skip


@st.composite
def hostile_value(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["valid", "mutated", "random", "none", "field"]))
    good = upload(f"i{draw(st.integers(0, 9))}", draw(st.sampled_from(IMAGES)))
    if kind == "valid":
        return good
    if kind == "none":
        return None
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "field":  # a valid record with one field replaced by something hostile
        obj = json.loads(good)
        field = draw(st.sampled_from(["item_id", "owner_id", "media_type", "media_b64", "media_uri", "text", "created_at", "extra"]))
        raw = json.dumps({**obj, field: "__X__"}).encode()
        return raw.replace(b'"__X__"', draw(st.sampled_from(HOSTILE)))
    data = bytearray(good)  # byte-level mutations: flips, cuts, insertions
    for _ in range(draw(st.integers(1, 4))):
        op, at = draw(st.sampled_from(["flip", "cut", "insert"])), draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 50))]
        else:
            data[at:at] = draw(st.sampled_from(HOSTILE))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(hostile_value(), min_size=1, max_size=8), keys=st.lists(st.one_of(st.none(), st.binary(max_size=20)), min_size=8))
def test_random_and_mutated_uploads_never_raise_and_get_exactly_one_outcome(
    tmp_path: Path, values: list[bytes | None], keys: list[bytes | None]
) -> None:
    cap = FakeCaptioner(reject=[IMAGES[2]], explode=[IMAGES[3]])
    inc = batch(values, keys[: len(values)])
    out = core(tmp_path, cap, budget=3).run(inc)
    check_outcomes(inc, out)
    for o in out:  # only what a record can be blamed for; a defect found here would read internal_error
        assert o.reason in (None, "budget", "bad_json", "schema", "not_an_image", "image_too_large", "media_too_large", "uri_denied",
                            "fetch_failed", "caption", "internal_error", "record_too_large")  # fmt: skip
        if o.reason == "internal_error":
            assert o.record.value and b"RuntimeError" in o.record.value  # only the fake's exploding batch
