"""The audio kind and a video's sound track: decoded to 16 kHz mono PCM through FFmpeg's resampler, bounded."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmfeat.errors import MediaRejected
from mmfeat.media import Limits, kind_of
from mmfeat.media.audio import AudioLimits, decode_sound, encode_test_audio
from mmfeat.media.video import VideoLimits, encode_test_video, sample_frames


def tone(seconds: float, rate: int, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


@pytest.mark.parametrize(("container", "rate"), [("wav", 22050), ("wav", 48000), ("mp4", 44100), ("ogg", 16000)])
def test_any_rate_and_container_becomes_16k_mono_pcm_of_the_same_length(container: str, rate: int) -> None:
    pcm = decode_sound(encode_test_audio(tone(1.5, rate), rate, container), AudioLimits())
    assert abs(len(pcm) / 2 / 16000 - 1.5) < 0.1  # codec padding aside, the same duration
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 5  # still a 440 Hz tone after resampling


def test_a_videos_sound_track_comes_with_its_frames_and_a_silent_video_has_none() -> None:
    frames = [Image.new("RGB", (64, 48), (i * 40, 0, 0)) for i in range(8)]
    track = np.frombuffer(tone(2.0, 16000), "<i2")
    with_sound = sample_frames(encode_test_video(frames, fps=4, audio=track), VideoLimits())
    assert with_sound.audio is not None and abs(len(with_sound.audio) / 32000 - 2.0) < 0.15
    assert sample_frames(encode_test_video(frames, fps=4), VideoLimits()).audio is None
    prepared = kind_of("video").prepare(encode_test_video(frames, fps=4, audio=track), Limits())
    assert prepared.audio == with_sound.audio and len(prepared.images) == 5


def _mka_declaring(seconds: float) -> bytes:
    mka = bytearray(encode_test_audio(tone(1.0, 16000), 16000, "matroska"))
    i = mka.find(b"\x44\x89\x88")  # Duration, an 8-byte float, in ms
    assert i > 0
    mka[i + 3 : i + 11] = struct.pack(">d", seconds * 1000.0)
    return bytes(mka)


@pytest.mark.parametrize(
    ("name", "data", "limits", "reason"),
    [
        ("random bytes", np.random.default_rng(1).bytes(4096), AudioLimits(), "not_audio"),
        ("zero bytes", b"", AudioLimits(), "not_audio"),
        ("an image", None, AudioLimits(), "no_audio_stream"),
        ("over the duration cap", encode_test_audio(tone(3.0, 16000), 16000), AudioLimits(max_seconds=1.0), "audio_too_long"),
        ("declares 10 hours", _mka_declaring(36000), AudioLimits(), "audio_too_long"),
        ("too short to hold speech", encode_test_audio(tone(0.1, 16000), 16000), AudioLimits(), "empty_audio"),
    ],
)
def test_hostile_audio_is_refused_with_its_reason(name: str, data: bytes | None, limits: AudioLimits, reason: str) -> None:
    if data is None:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "PNG")
        data = buf.getvalue()
    with pytest.raises(MediaRejected) as e:
        decode_sound(data, limits)
    assert e.value.reason == reason, f"{name}: {e.value}"
    with pytest.raises(MediaRejected) as sandboxed:
        kind_of("audio").prepare(data, Limits(audio=limits))
    assert sandboxed.value.reason == reason


_GOOD = encode_test_audio(tone(1.0, 22050), 22050)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_and_mutated_sound_is_accepted_or_refused_never_anything_else(data: st.DataObject) -> None:
    raw = bytearray(_GOOD)
    for _ in range(data.draw(st.integers(0, 12))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    sample = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    try:
        prepared = kind_of("audio").prepare(sample, Limits(audio=AudioLimits(timeout_s=10)))
    except MediaRejected as e:
        assert e.reason and "\n" not in str(e)
    else:
        assert prepared.images == [] and prepared.audio is not None and len(prepared.audio) % 2 == 0
