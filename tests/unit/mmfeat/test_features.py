import json
from datetime import UTC, datetime

import pytest

from mmfeat.errors import SchemaError
from mmfeat.features import FeatureBuilder, encode_feature, item_features, lineage_headers
from mmfeat.normalize import normalize_caption
from mmfeat.schemas import EmbeddingV1, UploadV1
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import load_tokenizers
from mmfeat.triton_contract import Caption, pack_embedding

NAMES = ["sp", "word", "hash", "decoder"]


def builder() -> FeatureBuilder:
    return FeatureBuilder(load_tokenizers(NAMES, ASSETS / "tokenizers", 1 << 20), NAMES, 32)


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
