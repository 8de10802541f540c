"""The video media kind: a bounded decode that samples frames for the captioner (docs/media.md).

Every byte of a video is hostile, and FFmpeg is a large C library: a container may declare ten hours or
16k x 16k frames, never end, or crash the demuxer. So the decode runs in a child process of a fork server
(mmfeat.media.sandbox) with a wall-clock deadline and an address-space cap, and checks what it can from the
header before it decodes a frame: duration, resolution, that there is a video stream and a decoder for it.
While decoding it counts frames and seconds against the same caps, so a header that lies is caught too.

Frames are sampled two ways in one pass, in bounded memory: uniformly over the video (a stride buffer that
doubles its stride when full, so the video's length need not be known or trusted) and at scene changes
(the frames where the largest share of a small grey thumbnail's pixels changed). The chosen frames are downscaled
and PNG-encoded, so equal frames are equal bytes: the gate's dedupe then captions a repeated frame once.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mmfeat.errors import MediaRejected
from mmfeat.media.audio import track_pcm
from mmfeat.media.prepared import Prepared
from mmfeat.media.sandbox import run as run_sandboxed
from mmfeat.triton_contract import IMAGE, Tensor

FRAME_SIDE = 384  # frames are downscaled to this (the captioner reads 224x224) before PNG encoding
THUMB = 32  # scene changes are measured on THUMB x THUMB grey thumbnails
SAME_FRAME = 0.01  # frames whose thumbnails differ in at most this share of pixels are the same picture
PIXEL_CHANGE = 0.1  # a thumbnail pixel changed when its grey level moved by more than this (codec noise stays below)


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float = 600.0
    max_pixels: int = 3840 * 2160
    max_frames: int = 20_000
    timeout_s: float = 30.0
    memory_mb: int = 1024
    frames: int = 5
    scene_threshold: float = 0.15


@dataclass(frozen=True)
class Sampled:
    """A video's sampled frames (seconds from the start, PNG bytes), in time order, and what was decoded."""

    frames: list[tuple[float, bytes]]
    decoded: int
    seconds: float
    width: int
    height: int
    audio: bytes | None = None  # the sound track as 16 kHz mono PCM (mmfeat.media.audio), None without one


def _reject(message: str, reason: str) -> MediaRejected:
    return MediaRejected(message, reason=reason)


def _open(data: bytes) -> Any:
    import av

    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        raise _reject(f"not a decodable video container ({type(e).__name__}: {e})", "not_a_video") from e


def _check_header(container: Any, limits: VideoLimits) -> Any:
    """The video stream, once the header's claims pass the caps."""
    if container.duration is not None and container.duration / 1e6 > limits.max_seconds:
        raise _reject(f"video declares {container.duration / 1e6:.0f} s, over the {limits.max_seconds:.0f} s limit", "video_too_long")
    streams = [s for s in container.streams if s.type == "video"]
    if not streams:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        if not any(s.type == "audio" for s in container.streams):  # a truncated MP4 whose index never arrived reads so
            raise _reject(f"container has no audio or video stream (streams: {kinds}): truncated or not a video", "not_a_video")
        raise _reject(f"container has no video stream (streams: {kinds})", "no_video_stream")
    stream = streams[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise _reject("no decoder for the video stream's codec", "unsupported_codec")
    w, h = int(ctx.width or 0), int(ctx.height or 0)
    if w * h > limits.max_pixels:
        raise _reject(f"video frames are {w}x{h} = {w * h} pixels, over the {limits.max_pixels} limit", "video_too_large")
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
        if declared > limits.max_seconds:
            raise _reject(f"video stream declares {declared:.0f} s, over the {limits.max_seconds:.0f} s limit", "video_too_long")
    stream.thread_type = "NONE"  # one thread: the sandbox's CPU and memory stay the caps it was given
    return stream


def _check_still(data: bytes, limits: VideoLimits) -> None:
    from mmfeat.media.image import probe_image

    try:
        probe_image(data, limits.max_pixels)
    except MediaRejected as e:
        if e.reason == "image_too_large":
            raise _reject(f"video is one still frame, refused: {e}", "video_too_large") from e
        # not an image PIL reads: FFmpeg's own decoder decides below


def _frame_thumb(frame: Any) -> np.ndarray:
    """A THUMB x THUMB grey thumbnail in [0, 1]: the luma plane subsampled where the frame is YUV (most video),
    a conversion otherwise."""
    name = frame.format.name
    if name.startswith(("yuv", "yuvj", "nv12", "gray")) and frame.width >= THUMB and frame.height >= THUMB:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
        rows = np.linspace(0, frame.height - 1, THUMB).astype(int)
        cols = np.linspace(0, frame.width - 1, THUMB).astype(int)
        grey = luma[np.ix_(rows, cols)]
    else:
        grey = frame.reformat(width=THUMB, height=THUMB, format="gray").to_ndarray()
    out: np.ndarray = grey.astype(np.float32) / 255.0
    return out


def _picture(frame: Any) -> Image.Image:
    img: Image.Image = frame.to_image()
    img.thumbnail((FRAME_SIDE, FRAME_SIDE))
    return img


def _thumb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False, compress_level=1)  # fast: the bytes go to Triton once, and to no topic
    return buf.getvalue()


def sample_frames(data: bytes, limits: VideoLimits) -> Sampled:
    """Decode ``data`` (in this process: call it through ``decode_video``) and sample its frames."""
    import av

    n = limits.frames
    uniform: list[tuple[int, float, Any]] = []  # every stride-th frame, at most 2n
    stride = 1
    scenes: list[tuple[float, int, float, Any]] = []  # (difference, index, t, frame): the n largest
    prev: np.ndarray | None = None
    decoded, t, size = 0, 0.0, (0, 0)
    with _open(data) as container:
        if container.format.name.endswith("_pipe"):  # a still image posing as a video: its size is in its own header
            _check_still(data, limits)
        stream = _check_header(container, limits)
        rate = float(stream.average_rate) if stream.average_rate else 25.0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > limits.max_pixels:
                    raise _reject(f"a frame is {frame.width}x{frame.height}, over the {limits.max_pixels}-pixel limit", "video_too_large")
                ft = frame.time
                t = float(ft) if ft is not None and math.isfinite(ft) and ft >= 0 else decoded / rate
                if t > limits.max_seconds:
                    raise _reject(f"video runs past {limits.max_seconds:.0f} s", "video_too_long")
                if decoded >= limits.max_frames:
                    raise _reject(f"video has more than {limits.max_frames} frames", "video_too_long")
                size = (frame.width, frame.height)
                thumb = _frame_thumb(frame)
                diff = 1.0 if prev is None else float((np.abs(thumb - prev) > PIXEL_CHANGE).mean())
                prev = thumb
                # decoded frames are kept as they are; only the n chosen at the end are converted to pictures
                if diff >= limits.scene_threshold or decoded == 0:
                    scenes.append((diff, -decoded, t, frame))
                    scenes.sort(key=lambda s: (s[0], s[1]), reverse=True)
                    del scenes[n:]
                if decoded % stride == 0:
                    uniform.append((decoded, t, frame))
                    if len(uniform) >= 2 * n:
                        stride *= 2
                        uniform = [u for u in uniform if u[0] % stride == 0]
                decoded += 1
        except av.FFmpegError as e:
            if decoded == 0:
                raise _reject(f"video stream does not decode ({type(e).__name__}: {e})", "corrupt_video") from e
            # a truncated tail: keep what decoded, as players do
    if decoded == 0:
        raise _reject("video has no decodable frame", "empty_video")
    chosen = _choose(uniform, scenes, n)
    with _open(data) as container:  # the sound track, in a second pass over the same bytes
        sound = track_pcm(container, limits.max_seconds)
    return Sampled(chosen, decoded, t, *size, audio=sound)


def _choose(uniform: list[tuple[int, float, Any]], scenes: list[tuple[float, int, float, Any]], n: int) -> list[tuple[float, bytes]]:
    """Scene starts first (largest change first), then evenly spaced uniform frames, n at most, in time order.

    A frame that looks the same as one already encoded (a lossy codec never decodes a still scene to equal
    pixels twice) reuses that frame's bytes, so the captioner sees it once."""
    chosen: dict[int, tuple[float, Any]] = {-neg: (t, frame) for _, neg, t, frame in scenes}
    if len(uniform) > 0:
        picks = sorted({round(i * (len(uniform) - 1) / max(n - 1, 1)) for i in range(n)})
        for k in picks:
            if len(chosen) >= n:
                break
            index, t, frame = uniform[k]
            chosen.setdefault(index, (t, frame))
    out: list[tuple[float, bytes]] = []
    encoded: list[tuple[np.ndarray, bytes]] = []
    for _, (t, frame) in sorted(chosen.items())[:n]:
        img = _picture(frame)
        thumb = _thumb(img)
        same = next((png for other, png in encoded if float((np.abs(thumb - other) > PIXEL_CHANGE).mean()) <= SAME_FRAME), None)
        if same is None:
            same = _png(img)
            encoded.append((thumb, same))
        out.append((t, same))
    return out


def decode_video(data: bytes, limits: VideoLimits) -> Sampled:
    """``sample_frames`` in the sandbox: a deadline, an address-space cap, and a crash is this video's error."""
    return run_sandboxed(sample_frames, (data, limits), timeout_s=limits.timeout_s, memory_mb=limits.memory_mb, what="video decode")


def encode_test_video(
    frames: list[Image.Image], fps: int = 4, codec: str = "mpeg4", container: str = "mp4", audio: np.ndarray | None = None
) -> bytes:
    """Frames (and optionally 16 kHz mono int16 audio) encoded as a video: the tests', the demo's and the sample's."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        w, h = frames[0].size
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        sound: Any = None
        if audio is not None:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for img in frames:
            frame = av.VideoFrame.from_image(img.convert("RGB").crop((0, 0, stream.width, stream.height)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None and audio is not None:
            for start in range(0, len(audio), 1024):
                chunk = av.AudioFrame.from_ndarray(audio[None, start : start + 1024].astype(np.int16), format="s16", layout="mono")
                chunk.sample_rate = 16000
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return buf.getvalue()


class VideoKind:
    """``media_type: "video"``: a container FFmpeg reads (MP4, WebM, MKV ...), sampled to frames for the IMAGE tensor."""

    name = "video"
    model_input: Tensor | None = IMAGE

    def probe(self, data: bytes, limits: Any) -> Sampled:
        return decode_video(data, limits.video)

    def prepare(self, data: bytes, limits: Any) -> Prepared:
        sampled = self.probe(data, limits)
        return Prepared(list(sampled.frames), sampled.audio)

    def sample(self) -> bytes:
        return encode_test_video([Image.new("RGB", (16, 16), (255, 255, 255))], fps=1)


KIND = VideoKind()
