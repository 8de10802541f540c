"""Media kinds, as a registry: what an upload's ``media_type`` means to the pipeline.

A kind says how to refuse bad media before Triton (``probe``: bounded in time and memory), which images
of it the models see and hear (``prepare``: the image itself, or a video's sampled frames and sound track), what a small valid
sample looks like (``sample``), and which model input those images feed (``model_input``: a tensor of
mmfeat.triton_contract). The captioner's runtime decodes the
media with the kind's own decoder. Adding a kind is one module here plus one line in ``KINDS``
(docs/adding-a-media-kind.md, with the image kind as the worked example).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mmfeat.errors import SchemaError
from mmfeat.media import audio, image, video
from mmfeat.media.audio import AudioLimits
from mmfeat.media.prepared import Prepared
from mmfeat.media.video import VideoLimits
from mmfeat.triton_contract import Tensor


@dataclass(frozen=True)
class Limits:
    """Bounds a probe enforces (from the settings)."""

    max_pixels: int = 40_000_000
    video: VideoLimits = field(default_factory=VideoLimits)
    audio: AudioLimits = field(default_factory=AudioLimits)


class MediaKind(Protocol):
    name: str
    model_input: Tensor | None  # None: the kind has no pictures (audio)

    def probe(self, data: bytes, limits: Limits) -> object:
        """Refuse what this kind cannot take (MediaRejected with a reason); read only what that needs."""
        ...

    def prepare(self, data: bytes, limits: Limits) -> Prepared:
        """The images the captioner and OCR see, with their time in seconds (None: a still image), and the sound
        the ASR model hears; probes first."""
        ...

    def sample(self) -> bytes:
        """A tiny valid item of this kind."""
        ...


KINDS: dict[str, MediaKind] = {kind.name: kind for kind in (image.KIND, video.KIND, audio.KIND)}


def kind_of(media_type: str) -> MediaKind:
    try:
        return KINDS[media_type]
    except KeyError:
        raise SchemaError(f"media_type {media_type!r} is not one of {', '.join(sorted(KINDS))}") from None
