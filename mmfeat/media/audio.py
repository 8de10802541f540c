"""Sound: an audio upload, or the audio track of a video, decoded to what the ASR model reads (16 kHz mono
signed 16-bit PCM), bounded like video (docs/media.md): decoded in the sandbox, its duration capped from
the header and while decoding. FFmpeg's resampler (swresample, with its anti-aliasing filter) converts any
rate and layout."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmfeat.errors import MediaRejected
from mmfeat.media.prepared import Prepared
from mmfeat.media.sandbox import run as run_sandboxed
from mmfeat.triton_contract import AUDIO_RATE, Tensor

MIN_SPEECH_S = 0.3  # shorter sound is not worth a request


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = 600.0
    timeout_s: float = 30.0
    memory_mb: int = 1024


def track_pcm(container: Any, max_seconds: float) -> bytes | None:
    """The first audio stream of an open container as PCM (None: no audio stream, or under MIN_SPEECH_S)."""
    import av

    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        return None
    stream = streams[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        return None  # a track we cannot decode: the video's pictures still count
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    out, samples, cap = io.BytesIO(), 0, int(max_seconds * AUDIO_RATE)
    try:
        for frame in container.decode(stream):
            for piece in resampler.resample(frame):
                pcm = piece.to_ndarray().astype("<i2").reshape(-1)
                samples += len(pcm)
                if samples > cap:
                    raise MediaRejected(f"audio runs past {max_seconds:.0f} s", reason="audio_too_long")
                out.write(pcm.tobytes())
    except av.FFmpegError:
        pass  # a truncated tail: keep what decoded
    return out.getvalue() if samples >= MIN_SPEECH_S * AUDIO_RATE else None


def decode_sound(data: bytes, limits: AudioLimits) -> bytes:
    """An audio upload's PCM (in this process: call it through ``decode_audio``)."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        raise MediaRejected(f"not a decodable audio file ({type(e).__name__}: {e})", reason="not_audio") from e
    with container:
        if container.duration is not None and container.duration / 1e6 > limits.max_seconds:
            declared = container.duration / 1e6
            raise MediaRejected(f"audio declares {declared:.0f} s, over the {limits.max_seconds:.0f} s limit", reason="audio_too_long")
        if not any(s.type == "audio" for s in container.streams):
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise MediaRejected(f"file has no audio stream (streams: {kinds})", reason="no_audio_stream")
        pcm = track_pcm(container, limits.max_seconds)
    if pcm is None:
        raise MediaRejected(f"audio has no decodable sound of at least {MIN_SPEECH_S} s", reason="empty_audio")
    return pcm


def decode_audio(data: bytes, limits: AudioLimits) -> bytes:
    return run_sandboxed(decode_sound, (data, limits), timeout_s=limits.timeout_s, memory_mb=limits.memory_mb, what="audio decode")


def encode_test_audio(pcm: bytes, rate: int, container: str = "wav") -> bytes:
    """Mono int16 PCM at ``rate`` as an audio file (wav, m4a with AAC, ogg with Opus, mka): the tests' and the demo's."""
    import av

    buf = io.BytesIO()
    codec = {"wav": "pcm_s16le", "mp4": "aac", "ogg": "libopus", "matroska": "pcm_s16le"}[container]
    with av.open(buf, mode="w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=rate if codec != "libopus" else 48000)
        stream.layout = "mono"
        samples = np.frombuffer(pcm, "<i2")
        resampler = av.AudioResampler(format=stream.format.name if codec != "pcm_s16le" else "s16", layout="mono", rate=stream.rate)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024].copy(), format="s16", layout="mono")
            frame.sample_rate = rate
            for piece in resampler.resample(frame):
                out.mux(stream.encode(piece))
        out.mux(stream.encode())
    return buf.getvalue()


class AudioKind:
    """``media_type: "audio"``: a sound file FFmpeg reads (WAV, MP3, M4A/AAC, Ogg/Opus ...), for the ASR model."""

    name = "audio"
    model_input: Tensor | None = None  # no image: the captioner is not called

    def probe(self, data: bytes, limits: Any) -> bytes:
        return decode_audio(data, limits.audio)

    def prepare(self, data: bytes, limits: Any) -> Prepared:
        return Prepared([], self.probe(data, limits))

    def sample(self) -> bytes:
        return encode_test_audio(np.zeros(AUDIO_RATE // 2, "<i2").tobytes(), AUDIO_RATE)


KIND = AudioKind()
