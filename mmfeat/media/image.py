"""The image media kind: a header-only probe (the worker's gate) and a safe decode (the captioner's runtime).

A decompression bomb is refused from its header (width x height) before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from mmfeat.errors import MediaRejected
from mmfeat.media.prepared import Prepared
from mmfeat.triton_contract import IMAGE, Tensor

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP", "BMP"})


def probe_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Read only the header: format, width, height. Raise MediaRejected for non-images and bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format or "?", img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaRejected(f"not a decodable image ({type(e).__name__}: {e})", reason="not_an_image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaRejected(f"image refused as a decompression bomb: {e}", reason="image_too_large") from e
    if fmt not in ALLOWED_FORMATS:
        raise MediaRejected(f"image format {fmt} not accepted (accepted: {', '.join(sorted(ALLOWED_FORMATS))})", reason="not_an_image")
    if w * h > max_pixels:
        raise MediaRejected(f"image is {w}x{h} = {w * h} pixels, over the {max_pixels} limit", reason="image_too_large")
    return fmt, w, h


def decode_rgb(data: bytes, max_pixels: int, max_side: int = 1024) -> Image.Image:
    """Fully decode to RGB (transparent areas on white), downscaled to at most ``max_side``.

    Raises MediaRejected for a corrupt or truncated image as well as for a bomb.
    """
    probe_image(data, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced scale
            img.load()
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGB", rgba.size, (255, 255, 255))
                canvas.paste(rgba, mask=rgba.getchannel("A"))
                rgb = canvas
            else:
                rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaRejected(f"corrupt or truncated image ({e})", reason="corrupt_image") from e
    rgb.thumbnail((max_side, max_side))
    return rgb


class ImageKind:
    """``media_type: "image"``: PNG, JPEG, GIF, WebP or BMP bytes, fed to the captioner's IMAGE tensor."""

    name = "image"
    model_input: Tensor | None = IMAGE

    def probe(self, data: bytes, limits: Any) -> tuple[str, int, int]:
        return probe_image(data, limits.max_pixels)

    def prepare(self, data: bytes, limits: Any) -> Prepared:
        self.probe(data, limits)
        return Prepared([(None, data)])  # the bytes as uploaded: the content key, and so the dedupe, is the upload's

    def sample(self) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (255, 255, 255)).save(buf, "PNG")
        return buf.getvalue()


KIND = ImageKind()
