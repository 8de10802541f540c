"""Caption -> feature record: normalization and tokenization, shared by the live worker, backfill
and offline evaluation so every path produces byte-identical records for the same inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from mmfeat.errors import SchemaError
from mmfeat.normalize import merge_captions, normalize_caption, normalize_post_text
from mmfeat.schemas import (
    H_CAPTIONER,
    H_SCHEMA,
    H_TOKENIZERS,
    EmbeddingV1,
    FeatureRecord,
    FeatureRecordV1,
    FeatureRecordV2,
    FrameV2,
    SourceV2,
    TokenIds,
    Upload,
    encode_record,
    validate_json,
)
from mmfeat.settings import Features
from mmfeat.tokenizers import TextTokenizer, Tokenizer, load_tokenizers
from mmfeat.triton_contract import Caption, pack_embedding

CAPTION, POST_TEXT, OCR, ASR = "caption", "post_text", "ocr", "asr"  # the sources of words this version knows (docs/topics.md)


class FeatureBuilder:
    """Builds deterministic feature records for a fixed set of tokenizers, of schema version 1 or 2.

    The caption is tokenized by every tokenizer; any other source (the post's own text) by the text
    tokenizers alone, since the decoder's ids and semantic IDs describe the captioner's output, not words."""

    def __init__(
        self, tokenizers: Mapping[str, Tokenizer], names: Sequence[str], max_words: int, *,
        schema: int = 2, post_max_words: int = 64, description_max_words: int = 64,
    ) -> None:  # fmt: skip
        self.tokenizers = dict(tokenizers)
        self.names = list(names)
        self.text_names = [n for n in self.names if isinstance(self.tokenizers[n], TextTokenizer)]
        self.max_words, self.post_max_words, self.description_max_words = max_words, post_max_words, description_max_words
        self.schema = schema

    @classmethod
    def of(cls, f: Features) -> FeatureBuilder:
        """The builder the settings' features section describes (the worker's, the backfill's, the ranker world's)."""
        tokenizers = load_tokenizers(f.tokenizers, f.tokenizer_dir, f.hash_buckets)
        return cls(
            tokenizers, f.tokenizers, f.caption_max_words, schema=f.feature_schema, post_max_words=f.post_max_words,
            description_max_words=f.description_max_words,
        )  # fmt: skip

    def _tokens(self, names: Sequence[str], text: str, caption: Caption, version: str) -> tuple[dict[str, list[int]], dict[str, str]]:
        ids: dict[str, list[int]] = {}
        versions: dict[str, str] = {}
        for name in names:
            got, versions[name] = self.tokenizers[name].tokenize(text, caption, version)
            ids[name] = got[:MAX_IDS]  # a list's bound in the schema; subword tokenizers can exceed it on odd text
        return ids, versions

    def _words(self, sources: dict[str, SourceV2], versions: dict[str, str], name: str, raw: str) -> None:
        """A source of plain words (post text, OCR, ASR): the post rules, the text tokenizers; none when it says nothing."""
        text = normalize_post_text(raw, self.post_max_words)
        if text:
            ids, more = self._tokens(self.text_names, text, Caption(text, []), "")
            sources[name] = SourceV2(text=text, raw=raw[:RAW_MAX], token_ids=ids)
            versions.update(more)

    def build(
        self, upload: Upload, caption: Caption | None, captioner_version: str | None, content_sha256: str, *,
        frames: Sequence[tuple[float, Caption]] = (), ocr: Sequence[tuple[float | None, str]] | None = None,
        ocr_version: str | None = None, asr: str | None = None, asr_version: str | None = None,
    ) -> FeatureRecord:  # fmt: skip
        """The record of one upload: an image's ``caption``, or a video's ``frames`` (merged into its caption
        here), or neither for a post of words alone (schema 2 only); ``ocr``, the text read on each image
        or frame by the OCR model at ``ocr_version`` (None: not read); ``asr``, the transcript of its sound
        track by the ASR model at ``asr_version`` (None: nothing heard). Both schema 2 only."""
        if frames:
            caption, text = merged_caption(frames, self.max_words, self.description_max_words)
        elif caption is not None:
            text = normalize_caption(caption.text, self.max_words)
        if self.schema == 1:
            if caption is None or captioner_version is None:
                raise SchemaError(
                    f'a media_type "{upload.media_type}" upload has no caption: it needs feature schema 2', reason="needs_schema_v2"
                )
            ids, versions = self._tokens(self.names, text, caption, captioner_version)
            return FeatureRecordV1(
                item_id=upload.item_id, owner_id=upload.owner_id, caption=text, caption_raw=caption.text, token_ids=ids,
                captioner_version=captioner_version, tokenizer_versions=versions, content_sha256=content_sha256,
                upload_created_at=upload.created_at, embedding=EmbeddingV1.of(caption.embedding) if caption.embedding else None,
            )  # fmt: skip
        sources: dict[str, SourceV2] = {}
        models: dict[str, str] = {}
        versions = {}
        if caption is not None and captioner_version is not None:
            ids, versions = self._tokens(self.names, text, caption, captioner_version)
            sources[CAPTION] = SourceV2(text=text, raw=caption.text[:RAW_MAX], token_ids=ids)
            models["captioner"] = captioner_version
        if ocr is not None and ocr_version is not None:
            models["ocr"] = ocr_version
            self._words(sources, versions, OCR, merged_lines([read for _, read in ocr]))
        if asr is not None and asr_version is not None:
            models["asr"] = asr_version
            self._words(sources, versions, ASR, asr)
        self._words(sources, versions, POST_TEXT, upload.post_text())
        return FeatureRecordV2(
            item_id=upload.item_id, owner_id=upload.owner_id, media_type=upload.media_type, sources=sources,
            model_versions=models, tokenizer_versions=versions, content_sha256=content_sha256,
            upload_created_at=upload.created_at, embedding=EmbeddingV1.of(caption.embedding) if caption and caption.embedding else None,
            frames=[FrameV2(t_s=round(t, 3), caption=normalize_caption(c.text, self.max_words)) for t, c in frames],
        )  # fmt: skip


RAW_MAX = 20_000
MAX_IDS = 4096


def merged_lines(texts: Sequence[str]) -> str:
    """Texts read on several frames as one: each distinct line once, in order of first appearance (a caption
    burnt into a video is on many of its frames)."""
    return "\n".join(dict.fromkeys(line.strip() for text in texts for line in text.splitlines() if line.strip()))


def merged_caption(frames: Sequence[tuple[float, Caption]], max_words: int, description_max_words: int) -> tuple[Caption, str]:
    """A video's frame captions as one caption: the raw texts joined, the decoder ids and embeddings of the
    distinct frames pooled; and its normalized description (mmfeat.normalize.merge_captions)."""
    texts = [c.text for _, c in frames]
    description = merge_captions([normalize_caption(t, max_words) for t in texts], description_max_words)
    distinct: dict[str, Caption] = {}
    for _, c in frames:
        distinct.setdefault(c.text, c)
    ids = [i for c in distinct.values() for i in c.token_ids]
    embeddings = [c.embedding_array() for c in distinct.values() if c.embedding]
    embedding = b""
    if embeddings and len({e.shape for e in embeddings}) == 1:
        mean = np.mean(embeddings, axis=0)
        norm = float(np.linalg.norm(mean))
        embedding = pack_embedding(mean / norm if norm > 0 else mean)
    return Caption("\n".join(texts), ids, embedding), description


def caption_of(record: FeatureRecord) -> tuple[str, dict[str, list[int]]]:
    """The normalized caption and its id lists, from a record of either version (empty for a post without one)."""
    if isinstance(record, FeatureRecordV1):
        return record.caption, {k: list(v) for k, v in record.token_ids.items()}
    src = record.sources.get(CAPTION)
    return (src.text, {k: list(v) for k, v in src.token_ids.items()}) if src is not None else ("", {})


def encode_feature(record: FeatureRecord) -> bytes:
    """Canonical JSON (sorted keys) so equal records are equal bytes; checked to read back as itself."""
    return encode_record(record, sort_keys=True)


def lineage_headers(record: FeatureRecord) -> list[tuple[str, bytes]]:
    tokenizers = ";".join(f"{k}={v}" for k, v in sorted(record.tokenizer_versions.items()))
    captioner = record.captioner_version if isinstance(record, FeatureRecordV1) else record.model_versions.get("captioner", "")
    return [
        (H_CAPTIONER, captioner.encode()),
        (H_TOKENIZERS, tokenizers.encode()),
        (H_SCHEMA, str(record.schema_version).encode()),
    ]


class _SourceTokens(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    token_ids: dict[str, TokenIds]


class _FeatureTokens(BaseModel):
    """The part of a feature record (either version) the profiles app reads; the rest is not its business (nor validated)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    token_ids: dict[str, TokenIds] | None = None  # version 1: the caption's
    sources: dict[str, _SourceTokens] | None = None  # version 2
    captioner_version: str | None = None
    model_versions: dict[str, str] | None = None
    tokenizer_versions: dict[str, str] | None = None


def item_features(raw: bytes, tokenizer: str, sources: Sequence[str] = (CAPTION,)) -> tuple[list[int], str | None]:
    """One tokenizer's ids from a raw feature record of either version, over ``sources`` in order (a version 1
    record has the caption only), and the record's lineage (``captioner=V tokenizer=V``; None if it names no
    versions). Only the fields read are validated, strictly: ids are ints in [0, 2^31) (not booleans), versions
    are strings; anything else, or a caption without that tokenizer's list, is a SchemaError (``bad_features``)."""
    view = validate_json(_FeatureTokens, raw, lambda where, kind: "bad_features")
    if view.sources is not None:
        lists = {name: src.token_ids for name, src in view.sources.items()}
        captioner = (view.model_versions or {}).get("captioner")
    elif view.token_ids is not None:
        lists, captioner = {CAPTION: view.token_ids}, view.captioner_version
    else:
        raise SchemaError("feature record has neither token_ids (version 1) nor sources (version 2)", reason="bad_features")
    if CAPTION in lists and tokenizer not in lists[CAPTION]:
        raise SchemaError(f"feature record has no token_ids.{tokenizer} list", reason="bad_features")
    ids = [i for name in sources for i in lists.get(name, {}).get(tokenizer, [])]
    tok = (view.tokenizer_versions or {}).get(tokenizer)
    lineage = f"captioner={captioner} {tokenizer}={tok}" if captioner is not None and tok is not None else None
    return ids, lineage
