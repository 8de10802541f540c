"""The video kind's boundary: real videos encoded here with PyAV, hostile ones made from them, the sandbox."""

from __future__ import annotations

import io
import os
import signal
import struct

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmfeat.errors import MediaRejected
from mmfeat.media import Limits, kind_of
from mmfeat.media.sandbox import run
from mmfeat.media.video import FRAME_SIDE, VideoLimits, decode_video, encode_test_video, sample_frames


def scene(k: int, size: tuple[int, int] = (160, 120), jitter: int = 0) -> Image.Image:
    """Scene k: a big block of its own colour and place on white (a scene change covers a third of the frame)."""
    img = Image.new("RGB", size, "white")
    colours = [(200, 30, 30), (30, 160, 30), (30, 30, 200), (200, 200, 0)]
    x = 10 + 45 * (k % 3)
    img.paste(colours[k % 4], (x, 10 + jitter, x + 60, 100 + jitter))
    return img


def three_scenes(per_scene: int = 8) -> list[Image.Image]:
    return [scene(k, jitter=j % 2) for k in range(3) for j in range(per_scene)]


def test_samples_every_scene_start_then_uniform_frames_in_time_order() -> None:
    data = encode_test_video(three_scenes(), fps=4)  # scenes start at 0, 2 and 4 s
    s = sample_frames(data, VideoLimits(frames=5))
    times = [t for t, _ in s.frames]
    assert s.decoded == 24 and len(s.frames) == 5 and times == sorted(times)
    assert {0.0, 2.0, 4.0} <= set(times)
    for _, png in s.frames:
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and max(img.size) <= FRAME_SIDE


def test_a_still_scene_is_one_picture_however_many_frames_are_sampled() -> None:
    s = sample_frames(encode_test_video([scene(1)] * 20, fps=4), VideoLimits(frames=5))
    assert len(s.frames) == 5 and len({png for _, png in s.frames}) == 1  # captioned once: equal bytes, equal content key


def test_sample_count_is_a_setting_and_a_short_video_gives_what_it_has() -> None:
    assert len(sample_frames(encode_test_video(three_scenes(), fps=4), VideoLimits(frames=2)).frames) == 2
    one = sample_frames(encode_test_video([scene(0)], fps=1), VideoLimits(frames=5))
    assert one.decoded == 1 and [t for t, _ in one.frames] == [0.0]


@pytest.mark.parametrize(("container", "codec"), [("mp4", "mpeg4"), ("mp4", "libx264"), ("webm", "libvpx"), ("avi", "mpeg4")])
def test_common_containers_and_codecs_decode(container: str, codec: str) -> None:
    s = sample_frames(encode_test_video(three_scenes(4), fps=4, codec=codec, container=container), VideoLimits(frames=3))
    assert s.decoded == 12 and len(s.frames) == 3


# ---- hostile media ------------------------------------------------------------------------------------


def _good() -> bytes:
    return encode_test_video(three_scenes(2), fps=4)


def _ten_hours() -> bytes:
    """A Matroska file whose header declares 10 hours (the Duration element patched)."""
    mkv = bytearray(encode_test_video(three_scenes(2), fps=4, container="matroska"))
    i = mkv.find(b"\x44\x89\x88")  # Duration, an 8-byte float, in ms
    assert i > 0
    mkv[i + 3 : i + 11] = struct.pack(">d", 10 * 3600 * 1000.0)
    return bytes(mkv)


def _huge_still() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (16384, 16384)).save(buf, "PNG")  # 16k x 16k, 32 KB: a bomb FFmpeg opens as a one-frame video
    return buf.getvalue()


def _audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as c:
        stream = c.add_stream("pcm_s16le", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        c.mux(stream.encode(frame))
        c.mux(stream.encode())
    return buf.getvalue()


def _unknown_codec() -> bytes:
    avi = encode_test_video(three_scenes(2), fps=4, container="avi")
    assert b"FMP4" in avi
    return avi.replace(b"FMP4", b"ZZZZ")  # a FourCC no decoder claims


@pytest.mark.parametrize(
    ("name", "make", "limits", "reason"),
    [
        ("truncated mp4 (index never arrived)", lambda: _good()[: len(_good()) // 2], VideoLimits(), "not_a_video"),
        ("truncated inside the moov atom", lambda: _good()[: _good().find(b"moov") + 40], VideoLimits(), "not_a_video"),
        ("zero bytes", lambda: b"", VideoLimits(), "not_a_video"),
        ("random bytes named .mp4", lambda: np.random.default_rng(0).bytes(65536), VideoLimits(), "not_a_video"),
        ("declares 10 hours", _ten_hours, VideoLimits(), "video_too_long"),
        ("16k x 16k frame", _huge_still, VideoLimits(), "video_too_large"),
        ("frames over the pixel cap, from the header", _good, VideoLimits(max_pixels=100 * 100), "video_too_large"),
        ("audio with no video stream", _audio_only, VideoLimits(), "no_video_stream"),
        ("unsupported codec", _unknown_codec, VideoLimits(), "unsupported_codec"),
        ("more frames than the cap (an endless stream)", _good, VideoLimits(max_frames=3), "video_too_long"),
        ("runs past the duration cap", _good, VideoLimits(max_seconds=0.5), "video_too_long"),
    ],
)
def test_hostile_video_is_refused_with_its_reason(name: str, make: object, limits: VideoLimits, reason: str) -> None:
    data = make()  # type: ignore[operator]
    with pytest.raises(MediaRejected) as e:
        sample_frames(data, limits)
    assert e.value.reason == reason, f"{name}: {e.value}"
    with pytest.raises(MediaRejected) as sandboxed:
        decode_video(data, limits)  # the same answer through the sandbox
    assert sandboxed.value.reason == reason and str(sandboxed.value) == str(e.value)


def test_a_decode_past_its_deadline_is_stopped() -> None:
    with pytest.raises(MediaRejected) as e:
        run(_sleep, (30.0,), timeout_s=0.5, memory_mb=256, what="video decode")
    assert e.value.reason == "decode_timeout" and "0.5 s deadline" in str(e.value)


def test_a_decoder_that_crashes_or_runs_out_of_memory_is_the_records_error() -> None:
    with pytest.raises(MediaRejected) as crashed:
        run(_segfault, (), timeout_s=10, memory_mb=256, what="video decode")
    assert crashed.value.reason == "decoder_crashed" and "-11" in str(crashed.value)
    with pytest.raises(MediaRejected) as hog:
        run(_allocate, (2048,), timeout_s=10, memory_mb=256, what="video decode")
    assert hog.value.reason == "media_too_large"
    assert run(_allocate, (16,), timeout_s=10, memory_mb=256, what="video decode") == 16  # within the cap: fine


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _allocate(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    return len(block) // (1024 * 1024)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_and_mutated_videos_are_accepted_or_refused_never_anything_else(data: st.DataObject) -> None:
    base = _GOOD_MKV if data.draw(st.booleans()) else _GOOD_MP4
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(0, 12))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    sample = bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw)
    kind = kind_of("video")
    try:
        frames = kind.prepare(sample, Limits(video=VideoLimits(timeout_s=10, frames=3))).images
    except MediaRejected as e:
        assert e.reason and "\n" not in str(e)
    else:
        assert 1 <= len(frames) <= 3 and all(isinstance(t, float) and png[:8] == b"\x89PNG\r\n\x1a\n" for t, png in frames)


_GOOD_MP4 = encode_test_video(three_scenes(2), fps=4)
_GOOD_MKV = encode_test_video(three_scenes(2), fps=4, container="matroska")
