"""What a media kind makes of an upload's bytes for the models: the images the captioner and OCR see, and the
sound the ASR model hears."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prepared:
    images: list[tuple[float | None, bytes]] = field(default_factory=list)  # (seconds into a video, or None; bytes)
    audio: bytes | None = None  # 16 kHz mono int16 PCM (mmfeat.triton_contract.AUDIO), or None: nothing to hear
