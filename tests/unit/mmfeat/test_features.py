import json
from datetime import UTC, datetime

import pytest

from mmfeat.errors import SchemaError
from mmfeat.features import FeatureBuilder, encode_feature, item_features, lineage_headers
from mmfeat.normalize import normalize_caption
from mmfeat.schemas import EmbeddingV1, FeatureRecordV1, FeatureRecordV2, UploadV1, UploadV2
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import load_tokenizers
from mmfeat.triton_contract import Caption, pack_embedding

NAMES = ["sp", "word", "hash", "decoder"]


def builder(schema: int = 1) -> FeatureBuilder:
    return FeatureBuilder(load_tokenizers(NAMES, ASSETS / "tokenizers", 1 << 20), NAMES, 32, schema=schema)


def upload() -> UploadV1:
    return UploadV1(item_id="i1", owner_id="o1", media_type="image", media_b64="eA==", created_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_feature_record_tokenizes_the_normalized_caption() -> None:
    b = builder()
    cap = Caption(text="A picture of a dog a dog next to a cat", token_ids=[9, 8, 7])
    rec = b.build(upload(), cap, "cap-v1", "sha")
    assert rec.caption == normalize_caption(cap.text) == "a dog next to a cat"
    assert rec.caption_raw == cap.text
    assert rec.token_ids["sp"] == b.tokenizers["sp"].encode("a dog next to a cat")
    assert rec.token_ids["word"] == b.tokenizers["word"].encode("a dog next to a cat")
    assert len(rec.token_ids["hash"]) == 6
    assert rec.token_ids["decoder"] == [9, 8, 7]
    assert rec.tokenizer_versions["decoder"] == "cap-v1"
    assert rec.tokenizer_versions["sp"] == b.tokenizers["sp"].version


def test_encoding_is_deterministic_bytes() -> None:
    cap = Caption(text="two cats", token_ids=[1])
    a = encode_feature(builder().build(upload(), cap, "v", "sha"))
    b = encode_feature(builder().build(upload(), cap, "v", "sha"))
    assert a == b
    assert json.loads(a)["item_id"] == "i1"


def test_lineage_headers() -> None:
    rec = builder().build(upload(), Caption(text="a cat", token_ids=[]), "cap-v1", "sha")
    headers = dict(lineage_headers(rec))
    assert headers["mmfeat-captioner-version"] == b"cap-v1"
    assert headers["mmfeat-schema-version"] == b"1"
    assert b"sp=sp-unigram-128@" in headers["mmfeat-tokenizer-versions"]


def test_item_features_reads_tokens_and_lineage() -> None:
    raw = json.dumps({"token_ids": {"word": [3, 4]}, "captioner_version": "cap@1", "tokenizer_versions": {"word": "w@9"}}).encode()
    assert item_features(raw, "word") == ([3, 4], "captioner=cap@1 word=w@9")
    assert item_features(json.dumps({"token_ids": {"word": [5]}}).encode(), "word") == ([5], None)
    for bad in (b"{", json.dumps({"token_ids": {"sp": [1]}}).encode(), json.dumps({"token_ids": {"word": ["x"]}}).encode()):
        with pytest.raises(SchemaError):
            item_features(bad, "word")


def test_the_captioners_embedding_is_published_compactly_and_reads_back() -> None:
    packed = pack_embedding([0.5, -0.25, 0.125, 1.0])
    rec = builder().build(upload(), Caption(text="a cat", token_ids=[3], embedding=packed), "cap-v1", "sha")
    value = json.loads(encode_feature(rec))
    assert value["embedding"]["dtype"] == "float16" and value["embedding"]["dim"] == 4
    assert EmbeddingV1.model_validate(value["embedding"]).packed() == packed
    assert builder().build(upload(), Caption(text="a cat", token_ids=[3]), "cap-v1", "sha").embedding is None
    with pytest.raises(ValueError, match="holds 8 bytes"):
        EmbeddingV1(dim=3, b64=value["embedding"]["b64"])


def test_version_2_carries_version_1_values_under_sources_caption_and_adds_the_post_text() -> None:
    cap = Caption(text="A picture of a dog a dog next to a cat", token_ids=[9, 8, 7])
    up = UploadV1(item_id="i1", owner_id="o1", media_type="image", media_b64="eA==", text="My dog @bob #BestFriends https://x.io/a",
                  created_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    v1 = builder(1).build(up, cap, "cap-v1", "sha")
    v2 = builder(2).build(up, cap, "cap-v1", "sha")
    assert isinstance(v1, FeatureRecordV1) and isinstance(v2, FeatureRecordV2)
    assert v2.sources["caption"].text == v1.caption and v2.sources["caption"].raw == v1.caption_raw
    assert v2.sources["caption"].token_ids == v1.token_ids
    assert v2.model_versions == {"captioner": "cap-v1"} and v2.tokenizer_versions == v1.tokenizer_versions
    post = v2.sources["post_text"]
    assert post.text == "my dog best friends" and post.raw == up.text
    # the post text is read by the text tokenizers only: the decoder's ids describe the captioner's output
    assert sorted(post.token_ids) == ["hash", "sp", "word"]
    assert post.token_ids["word"] == builder().tokenizers["word"].encode("my dog best friends")
    assert dict(lineage_headers(v2))["mmfeat-schema-version"] == b"2"
    assert item_features(encode_feature(v2), "word") == item_features(encode_feature(v1), "word")
    both, _ = item_features(encode_feature(v2), "word", ("caption", "post_text"))
    assert both == v1.token_ids["word"] + post.token_ids["word"]


def test_a_post_of_words_alone_needs_version_2() -> None:
    up = UploadV2(schema_version=2, item_id="t1", owner_id="o", media_type="text", title="Sunday market", tags=["FreshFruit"],
                  created_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    rec = builder(2).build(up, None, None, "sha")
    assert isinstance(rec, FeatureRecordV2) and list(rec.sources) == ["post_text"] and rec.model_versions == {}
    assert rec.sources["post_text"].text == "sunday market fresh fruit"
    assert item_features(encode_feature(rec), "word", ("caption", "post_text")) == (rec.sources["post_text"].token_ids["word"], None)
    with pytest.raises(SchemaError, match="needs feature schema 2"):
        builder(1).build(up, None, None, "sha")


def test_video_frames_merge_into_one_caption_and_keep_their_own() -> None:
    frames = [(0.0, Caption("a red apple and a cat", [1, 2])), (1.5, Caption("a red apple and a cat", [1, 2])),
              (3.0, Caption("a picture of a cat and a dog", [2, 3]))]  # fmt: skip
    up = UploadV1(item_id="v1", owner_id="o", media_type="video", media_b64="eA==", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    rec = builder(2).build(up, None, "cap-v1", "sha", frames=frames)
    assert isinstance(rec, FeatureRecordV2)
    assert rec.sources["caption"].text == "a red apple and a cat and a dog"
    assert [(f.t_s, f.caption) for f in rec.frames] == [
        (0.0, "a red apple and a cat"),
        (1.5, "a red apple and a cat"),
        (3.0, "a cat and a dog"),
    ]
    assert rec.sources["caption"].token_ids["decoder"] == [1, 2, 2, 3]  # the distinct frames' ids


def test_text_read_on_frames_is_the_ocr_source_each_line_once() -> None:
    frames = [(0.0, Caption("a cat", [1])), (1.0, Caption("a cat", [1]))]
    up = UploadV1(item_id="v1", owner_id="o", media_type="video", media_b64="eA==", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    rec = builder(2).build(up, None, "cap-v1", "sha", frames=frames, ocr=[(0.0, "BIG SALE\nToday"), (1.0, "BIG SALE")], ocr_version="ocr@1")
    assert isinstance(rec, FeatureRecordV2) and rec.model_versions == {"captioner": "cap-v1", "ocr": "ocr@1"}
    assert rec.sources["ocr"].raw == "BIG SALE\nToday" and rec.sources["ocr"].text == "big sale today"
    assert sorted(rec.sources["ocr"].token_ids) == ["hash", "sp", "word"]
    nothing = builder(2).build(up, None, "cap-v1", "sha", frames=frames, ocr=[(0.0, ""), (1.0, " ")], ocr_version="ocr@1")
    assert isinstance(nothing, FeatureRecordV2) and "ocr" not in nothing.sources and nothing.model_versions["ocr"] == "ocr@1"
    v1 = builder(1).build(up, None, "cap-v1", "sha", frames=frames, ocr=[(0.0, "BIG SALE")], ocr_version="ocr@1")
    assert isinstance(v1, FeatureRecordV1)  # version 1 has no place for it
