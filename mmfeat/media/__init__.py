"""Media kinds, as a registry: what an upload's ``media_type`` means to the pipeline.

A kind says how to refuse bad media cheaply before Triton (``probe``: header-only, bounded), what a small
valid sample looks like (``sample``: the captioner version probe sends one), and which model input its
bytes feed (``model_input``: a tensor of mmfeat.triton_contract). The captioner's runtime decodes the
media with the kind's own decoder. Adding a kind is one module here plus one line in ``KINDS``
(docs/adding-a-media-kind.md, with the image kind as the worked example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mmfeat.errors import SchemaError
from mmfeat.media import image
from mmfeat.triton_contract import Tensor


@dataclass(frozen=True)
class Limits:
    """Bounds a probe enforces (from the settings)."""

    max_pixels: int = 40_000_000


class MediaKind(Protocol):
    name: str
    model_input: Tensor

    def probe(self, data: bytes, limits: Limits) -> object:
        """Refuse what this kind cannot take (MediaRejected with a reason); read only what that needs."""
        ...

    def sample(self) -> bytes:
        """A tiny valid item of this kind."""
        ...


KINDS: dict[str, MediaKind] = {image.KIND.name: image.KIND}


def kind_of(media_type: str) -> MediaKind:
    try:
        return KINDS[media_type]
    except KeyError:
        raise SchemaError(f"media_type {media_type!r} is not one of {', '.join(sorted(KINDS))}") from None
