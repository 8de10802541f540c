"""The Triton contracts of the captioner and of the OCR model: every tensor, its dtype and shape, in one place.

The worker's client (workers/triton_client.py) builds requests and reads answers with it, the Python
backend (triton_models/captioner/1/model.py) reads requests and builds answers with it, the version
probe sends through it, and a unit test checks triton_models/captioner/config.pbtxt against it. numpy
only: no Triton package is needed to import it.

Per request (the client sends one item per request; the batcher merges them):

    IMAGE              BYTES  [1]   encoded media bytes (the media kind's model input)
    PROMPT             BYTES  [1]   optional UTF-8 prompt
  ->
    CAPTION            BYTES  [1]   UTF-8 caption
    TOKEN_IDS          INT64  [-1]  the decoder's ids, -1 padding ragged rows of a multi-item request
    CAPTIONER_VERSION  BYTES  [1]   the model directory's version (lineage, dedupe)
    EMBEDDING          FP16   [-1]  the pooled, L2-normalized content embedding of the same model call
                                    (the Q-Former's query outputs, mean-pooled); [0] wide from a model
                                    that has none

The OCR model (triton_models/ocr, readers/ocr.py), per request:

    IMAGE              BYTES  [1]   encoded image bytes (an image upload, or a sampled video frame)
  ->
    TEXT               BYTES  [1]   UTF-8 text read on it, lines in reading order joined by newlines
    OCR_VERSION        BYTES  [1]   the OCR model's version (lineage, dedupe)

The ASR model (triton_models/asr, readers/asr.py), per request:

    AUDIO              BYTES  [1]   16 kHz mono signed 16-bit little-endian PCM
  ->
    TEXT               BYTES  [1]   UTF-8 transcript
    ASR_VERSION        BYTES  [1]   the ASR model's version (lineage, dedupe)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Caption:
    """What the captioner answers for one item."""

    text: str
    token_ids: list[int]
    embedding: bytes = b""  # float16, little-endian: the content embedding of the same call (b"": none)

    def embedding_array(self) -> np.ndarray:
        """The embedding as float32 (empty when the model gave none)."""
        return unpack_embedding(self.embedding)


def unpack_embedding(packed: bytes) -> np.ndarray:
    """``pack_embedding``'s bytes back as float32 values."""
    return np.frombuffer(packed, dtype="<f2").astype(np.float32)


def pack_embedding(vector: Sequence[float] | np.ndarray) -> bytes:
    """A content embedding's wire and record form: float16, little-endian (a value beyond float16's range becomes
    inf quietly here; ``read_answer`` refuses it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(vector, dtype="<f2").tobytes()


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's wire name: BYTES, INT64, FP16, ...
    dims: tuple[int, ...]  # per item (the batch dimension is Triton's)
    optional: bool = False

    @property
    def config_type(self) -> str:
        """The data_type config.pbtxt names for it."""
        return "TYPE_STRING" if self.dtype == "BYTES" else f"TYPE_{self.dtype}"


@dataclass(frozen=True)
class ModelContract:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> Tensor:
        return next(t for t in self.outputs if t.name == name)


IMAGE = Tensor("IMAGE", "BYTES", (1,))
PROMPT = Tensor("PROMPT", "BYTES", (1,), optional=True)
CAPTION = Tensor("CAPTION", "BYTES", (1,))
TOKEN_IDS = Tensor("TOKEN_IDS", "INT64", (-1,))
CAPTIONER_VERSION = Tensor("CAPTIONER_VERSION", "BYTES", (1,))
EMBEDDING = Tensor("EMBEDDING", "FP16", (-1,))
CAPTIONER = ModelContract("captioner", inputs=(IMAGE, PROMPT), outputs=(CAPTION, TOKEN_IDS, CAPTIONER_VERSION, EMBEDDING))
TEXT = Tensor("TEXT", "BYTES", (1,))
OCR_VERSION = Tensor("OCR_VERSION", "BYTES", (1,))
OCR = ModelContract("ocr", inputs=(IMAGE,), outputs=(TEXT, OCR_VERSION))
AUDIO = Tensor("AUDIO", "BYTES", (1,))
ASR_VERSION = Tensor("ASR_VERSION", "BYTES", (1,))
ASR = ModelContract("asr", inputs=(AUDIO,), outputs=(TEXT, ASR_VERSION))
AUDIO_RATE = 16_000
TOKEN_PAD = -1
MAX_EMBEDDING_DIM = 4096
MAX_TEXT_CHARS = 20_000  # a read text longer than this is cut (a record's raw text is bounded)


def request_arrays(media: bytes, prompt: str) -> dict[str, np.ndarray]:
    """One item's request tensors, (1, 1) each (a batch of one); PROMPT only when there is one."""
    arrays = {IMAGE.name: np.array([[media]], dtype=np.object_)}
    if prompt:
        arrays[PROMPT.name] = np.array([[prompt.encode()]], dtype=np.object_)
    return arrays


def read_request(get: Callable[[str], np.ndarray | None]) -> tuple[list[bytes], list[str]]:
    """A request's media and prompts (the model side); ``get(name)`` is None for an absent optional input."""
    media = [bytes(b) for b in _require(get, IMAGE).reshape(-1)]
    prompt = get(PROMPT.name)
    prompts = [b"" for _ in media] if prompt is None else list(prompt.reshape(-1))
    if len(prompts) != len(media):
        raise ValueError(f"{len(media)} {IMAGE.name} items but {len(prompts)} {PROMPT.name} items")
    return media, [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in prompts]


def answer_arrays(captions: Sequence[Caption], version: str) -> dict[str, np.ndarray]:
    """The output tensors of one request's captions (the model side)."""
    width = max((len(c.token_ids) for c in captions), default=0)
    ids = np.full((len(captions), width), TOKEN_PAD, dtype=np.int64)
    for row, c in enumerate(captions):
        ids[row, : len(c.token_ids)] = c.token_ids
    dims = {len(c.embedding) // 2 for c in captions}
    if len(dims) > 1:
        raise ValueError(f"one request's embeddings differ in width: {sorted(dims)}")
    emb = np.zeros((len(captions), dims.pop() if dims else 0), dtype=np.float16)
    for row, c in enumerate(captions):
        emb[row] = unpack_embedding(c.embedding)
    return {
        CAPTION.name: np.array([[c.text.encode()] for c in captions], dtype=np.object_),
        TOKEN_IDS.name: ids,
        CAPTIONER_VERSION.name: np.array([[version.encode()]] * len(captions), dtype=np.object_),
        EMBEDDING.name: emb,
    }


def read_answer(get: Callable[[str], np.ndarray | None]) -> tuple[Caption, str]:
    """A one-item answer (the client side): its caption and the captioner version that made it. EMBEDDING may be
    absent (a model that predates it): the caption then has none."""
    ids = [int(t) for t in _require(get, TOKEN_IDS).reshape(-1) if t != TOKEN_PAD]
    text = _require(get, CAPTION).reshape(-1)[0].decode("utf-8", "replace")
    version = _require(get, CAPTIONER_VERSION).reshape(-1)[0].decode("utf-8", "replace")
    emb = get(EMBEDDING.name)
    if emb is not None and emb.size > MAX_EMBEDDING_DIM:
        raise ValueError(f"tensor {EMBEDDING.name} has {emb.size} values (at most {MAX_EMBEDDING_DIM})")
    embedding = b"" if emb is None else pack_embedding(emb.reshape(-1))
    # checked after the cast: a finite float32 above 65504 is inf in float16, which no record may carry
    if not np.isfinite(unpack_embedding(embedding)).all():
        raise ValueError(f"tensor {EMBEDDING.name} has non-finite values (in float16)")
    return Caption(text=text, token_ids=ids, embedding=embedding), version


def _require(get: Callable[[str], np.ndarray | None], t: Tensor) -> np.ndarray:
    got = get(t.name)
    if got is None:
        raise ValueError(f"tensor {t.name} is missing")
    return got


def text_answer_arrays(texts: Sequence[str], version: str, version_tensor: Tensor = OCR_VERSION) -> dict[str, np.ndarray]:
    """The output tensors of one request's texts (the model side of OCR, or of ASR with ``ASR_VERSION``)."""
    return {
        TEXT.name: np.array([[t.encode()] for t in texts], dtype=np.object_),
        version_tensor.name: np.array([[version.encode()]] * len(texts), dtype=np.object_),
    }


def read_text_answer(get: Callable[[str], np.ndarray | None], version_tensor: Tensor = OCR_VERSION) -> tuple[str, str]:
    """A one-item OCR or ASR answer (the client side): the text, cut to MAX_TEXT_CHARS, and the model version."""
    text = _require(get, TEXT).reshape(-1)[0].decode("utf-8", "replace")[:MAX_TEXT_CHARS]
    return text, _require(get, version_tensor).reshape(-1)[0].decode("utf-8", "replace")
