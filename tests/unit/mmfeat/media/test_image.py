import io

import pytest
from PIL import Image

from mmfeat.errors import MediaRejected
from mmfeat.media.image import decode_rgb, probe_image


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def test_probe_reads_header_only() -> None:
    assert probe_image(png((30, 20)), 10_000) == ("PNG", 30, 20)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png((20000, 20000), mode="1")  # 400 M pixels in a file of a few tens of kB
    assert len(bomb) < 200_000
    with pytest.raises(MediaRejected) as e:
        probe_image(bomb, 40_000_000)
    assert e.value.reason == "image_too_large"


def test_garbage_and_truncated_images() -> None:
    with pytest.raises(MediaRejected) as e:
        probe_image(b"definitely not an image", 1000)
    assert e.value.reason == "not_an_image"
    data = png((64, 64))
    with pytest.raises(MediaRejected) as e2:
        decode_rgb(data[: len(data) // 2], 1_000_000)
    assert e2.value.reason in ("corrupt_image", "not_an_image")


def test_transparent_pixels_become_white_and_size_is_capped() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (3000, 10), (0, 0, 0, 0)).save(buf, "PNG")
    img = decode_rgb(buf.getvalue(), 1_000_000, max_side=300)
    assert img.mode == "RGB" and img.size == (300, 1)
    assert img.getpixel((0, 0)) == (255, 255, 255)
