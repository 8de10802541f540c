"""Speech: PocketSphinx (its PyPI wheel ships the en-us acoustic model, language model and dictionary) as
Triton serves it, on 16 kHz mono int16 PCM (mmfeat.triton_contract.AUDIO).

Before decoding, the sound is cut into voiced segments by an energy detector (30 ms frames, voiced when
within 35 dB of the loudest and above -60 dB full scale; a pause of 0.3 s or more ends a segment) and each segment is decoded on its
own, with 0.2 s of silence around it: a long recording is then many short utterances, which is what the
decoder's language model and its cepstral mean normalization expect, and pauses cost nothing. The
recognizer is poor on synthetic speech (docs/media.md has the measured word error rate); a Hugging Face
Whisper directory plugs in behind the same Triton contract (``Whisper``, ``load_engine``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mmfeat.triton_contract import AUDIO_RATE

FRAME_S, VOICED_DB, PAUSE_S, MARGIN_S, MAX_SEGMENT_S = 0.03, 35.0, 0.3, 0.2, 30.0
FLOOR_DB = 30.0  # 10 log10 of the mean square of int16 samples: -60 dB below full scale is never speech


class AsrEngine(Protocol):
    version: str

    def transcribe(self, pcm: np.ndarray) -> str:
        """16 kHz mono int16 samples -> lower-case words."""
        ...


def voiced_segments(pcm: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample ranges of speech, by frame energy; a segment is at most MAX_SEGMENT_S long."""
    hop = int(FRAME_S * AUDIO_RATE)
    n = len(pcm) // hop
    if n == 0:
        return []
    frames = pcm[: n * hop].astype(np.float64).reshape(n, hop)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    voiced = (db >= db.max() - VOICED_DB) & (db >= FLOOR_DB)
    segments: list[tuple[int, int]] = []
    start, quiet = None, 0
    pause = int(PAUSE_S / FRAME_S)
    for i, v in enumerate(voiced):
        if v:
            start = i if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet >= pause:
                segments.append((start, i - quiet + 1))
                start, quiet = None, 0
    if start is not None:
        segments.append((start, n - quiet))
    longest = int(MAX_SEGMENT_S / FRAME_S)
    split = [(a + k, min(b, a + k + longest)) for a, b in segments for k in range(0, b - a, longest)]
    return [(a * hop, b * hop) for a, b in split]


class PocketSphinx:
    """The en-us model of the pocketsphinx wheel, default decoder settings."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder, get_model_path

        root = Path(get_model_path()) / "en-us"
        files = {"hmm": root / "en-us", "lm": root / "en-us.lm.bin", "dict": root / "cmudict-en-us.dict"}
        self.decoder = Decoder(**{k: str(v) for k, v in files.items()}, loglevel="FATAL")
        digest = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(path.name.encode() + str(os.path.getsize(path)).encode())
        self.version = f"pocketsphinx-{importlib.metadata.version('pocketsphinx')}-en-us@{digest.hexdigest()[:8]}"

    def transcribe(self, pcm: np.ndarray) -> str:
        pad = np.zeros(int(MARGIN_S * AUDIO_RATE), dtype=np.int16)
        return " ".join(self._decode(np.concatenate([pad, pcm[a:b], pad])) for a, b in voiced_segments(pcm)).strip()

    def transcribe_whole(self, pcm: np.ndarray) -> str:
        """The recording as one utterance, no segmentation (the evaluation's baseline)."""
        return self._decode(pcm)

    def _decode(self, pcm: np.ndarray) -> str:
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.astype("<i2").tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return " ".join(w for w in (hyp.hypstr.split() if hyp is not None else []) if not w.startswith(("<", "[")))


WHISPER_MANIFEST = "mmfeat-asr.json"  # name, version, trained: written beside a Whisper directory mmfeat made
WINDOW_S = 30.0  # Whisper hears 30 s at a time


class Whisper:
    """A Hugging Face ``WhisperForConditionalGeneration`` directory (a real Whisper, or the tiny untrained one
    `mmfeat make-asr` writes), greedy-decoded per 30 s window of voiced sound."""

    def __init__(self, model_dir: Path, *, device: str = "cpu", max_new_tokens: int = 96) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir).to(device).eval()  # type: ignore[arg-type]  # transformers types .to() oddly
        self.features = WhisperFeatureExtractor.from_pretrained(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # the decoder's positions bound what one window can say (its start token included)
        self.device, self.max_new_tokens = device, min(max_new_tokens, int(self.model.config.max_target_positions) - 2)
        manifest = model_dir / WHISPER_MANIFEST
        if manifest.exists():
            self.version = str(json.loads(manifest.read_text())["version"])
        else:
            weights = b"".join(p.read_bytes()[: 1 << 20] for p in sorted(model_dir.glob("*.safetensors")))
            self.version = f"whisper-{model_dir.name}@{hashlib.sha256(weights).hexdigest()[:8]}"

    def transcribe(self, pcm: np.ndarray) -> str:
        import torch

        window = int(WINDOW_S * AUDIO_RATE)
        voiced = np.concatenate([pcm[a:b] for a, b in voiced_segments(pcm)] or [np.zeros(0, np.int16)])
        texts = []
        for start in range(0, len(voiced), window):
            chunk = voiced[start : start + window].astype(np.float32) / 32768.0
            feats = self.features(chunk, sampling_rate=AUDIO_RATE, return_tensors="pt").input_features.to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(feats, max_new_tokens=self.max_new_tokens, do_sample=False)
            texts.append(str(self.tokenizer.decode(ids[0], skip_special_tokens=True)).strip())
        return " ".join(t for t in texts if t).lower()


def load_engine(model: str, device: str = "cpu") -> AsrEngine:
    """``pocketsphinx`` (the wheel's en-us model) or a Whisper model directory."""
    if model == "pocketsphinx":
        return PocketSphinx()
    path = Path(model)
    config = path / "config.json"
    if not config.exists() or json.loads(config.read_text()).get("model_type") != "whisper":
        raise ValueError(f"ASR model {model!r} is neither 'pocketsphinx' nor a Whisper directory (config.json, model_type whisper)")
    return Whisper(path, device=device)


def make_untrained_whisper(out_dir: Path, *, seed: int = 0) -> str:
    """Write a tiny, randomly initialised Whisper with a word-level tokenizer over the test sentences' words.
    It transcribes random words: correct in shape, not in content (the HF path's tests). Returns its version."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from captioner.modeling.hf_blip2 import word_tokenizer
    from captioner.world.speech import OBJECTS, PLACES, SUBJECTS, VERBS

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    words = sorted({w for phrase in (*SUBJECTS, *VERBS, *OBJECTS, *PLACES) for w in phrase.split()})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    config = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        begin_suppress_tokens=None, suppress_tokens=[0, 1, 3, 4],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out_dir)
    word_tokenizer(vocab).save_pretrained(out_dir)
    weights = b"".join(p.read_bytes() for p in sorted(out_dir.glob("*.safetensors")))
    version = f"untrained-tiny-whisper@{hashlib.sha256(weights).hexdigest()[:8]}"
    (out_dir / WHISPER_MANIFEST).write_text(json.dumps({"name": "untrained-tiny-whisper", "version": version, "trained": False}, indent=2))
    return version


@dataclass
class AsrRuntime:
    """PCM bytes -> transcript; bounded by ``max_seconds`` (a longer request is refused)."""

    engine: AsrEngine
    max_seconds: float = 600.0

    @property
    def version(self) -> str:
        return self.engine.version

    def transcribe(self, pcm: bytes) -> str:
        if len(pcm) % 2:
            raise ValueError("AUDIO must be int16 samples (an even number of bytes)")
        if len(pcm) / 2 / AUDIO_RATE > self.max_seconds:
            raise ValueError(f"AUDIO is {len(pcm) / 2 / AUDIO_RATE:.0f} s, over the {self.max_seconds:.0f} s limit")
        return self.engine.transcribe(np.frombuffer(pcm, dtype="<i2"))
