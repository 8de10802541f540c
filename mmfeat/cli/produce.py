"""Upload producers: real images or any media from a folder (inline bytes or file:// references), or synthetic ones."""

from __future__ import annotations

import base64
import io
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw

from mmfeat.engagements import EngagementV1
from mmfeat.kafka.client import DeliveryTracker, OutRecord
from mmfeat.schemas import TEXT_ONLY, Upload, UploadV1, UploadV2, now_utc
from mmfeat.settings import Settings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


@dataclass(frozen=True)
class UploadSource:
    """Where an upload came from, for printing next to its caption."""

    item_id: str
    name: str


def list_images(root: Path, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files under ``root`` (symlinks skipped), a seeded spread across sub-folders when limited."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_symlink())
    if limit is None or limit >= len(files):
        return files
    return sorted(random.Random(seed).sample(files, limit))


def synthetic_png(rng: random.Random, size: int = 96) -> bytes:
    """A small PNG of a few coloured shapes: cheap, valid, distinct per seed."""
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 4)):
        x0, y0 = rng.randrange(size - 20), rng.randrange(size - 20)
        box = (x0, y0, x0 + rng.randint(10, size - x0), y0 + rng.randint(10, size - y0))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def upload_for_file(path: Path, item_id: str, owner_id: str, *, inline: bool, created_at: datetime | None = None) -> UploadV1:
    return UploadV1(
        item_id=item_id,
        owner_id=owner_id,
        media_type="image",
        media_b64=base64.b64encode(path.read_bytes()).decode() if inline else None,
        media_uri=None if inline else path.resolve().as_uri(),
        text=path.stem,
        created_at=created_at or now_utc(),
    )


def synthetic_uploads(n: int, seed: int = 0, prefix: str = "syn") -> Iterator[UploadV1]:
    rng = random.Random(seed)
    for i in range(n):
        data = synthetic_png(rng)
        yield UploadV1(
            item_id=f"{prefix}-{seed}-{i:06d}", owner_id=f"owner-{rng.randrange(50)}", media_type="image",
            media_b64=base64.b64encode(data).decode(), created_at=now_utc(),
        )  # fmt: skip


def image_uploads(paths: Sequence[Path], *, inline: bool, prefix: str = "img") -> Iterator[tuple[UploadV1, UploadSource]]:
    for i, path in enumerate(paths):
        item_id = f"{prefix}-{i:06d}"
        yield upload_for_file(path, item_id, f"owner-{i % 50}", inline=inline), UploadSource(item_id, f"{path.parent.name}/{path.name}")


def sniff_kind(head: bytes) -> str | None:
    """The media kind a file's first bytes say it is (never its name): image, video, audio, or None (not one we take)."""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[4:8] == b"ftyp" and head[8:12] in (b"M4A ", b"M4B "):
        return "audio"  # MPEG-4 audio
    if head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "video"  # MP4/MOV, Matroska/WebM, AVI
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or head.startswith((b"ID3", b"OggS", b"fLaC")):
        return "audio"  # WAV, MP3 with an ID3 tag, Ogg (Vorbis/Opus), FLAC
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio"  # an MPEG audio frame (MP3 without a tag)
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:
        return "video"  # MPEG transport stream
    return None


TEXT_SUFFIX = ".txt"  # a sidecar with a media file's stem is its post text; a lone one is a text post
TEXT_MAX = 5000


def _post_text(path: Path) -> str | None:
    try:
        text = path.read_bytes()[: TEXT_MAX * 4].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text[:TEXT_MAX] if "\x00" not in text else None


def media_uploads(
    root: Path, *, inline: bool, prefix: str = "media", limit: int | None = None, skipped: list[tuple[Path, str]] | None = None
) -> Iterator[tuple[UploadV2, UploadSource]]:
    """One version 2 upload per file under ``root`` (sorted, symlinks skipped), its kind found from its
    content; ``<stem>.txt`` beside a media file is that upload's text, and a lone text file is a text post.
    Files of no kind we take are listed in ``skipped`` with why."""
    skipped = skipped if skipped is not None else []
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    media = {p.with_suffix(""): p for p in files if p.suffix.lower() != TEXT_SUFFIX}
    n = 0
    for path in files:
        if limit is not None and n >= limit:
            return
        text = ""
        if path.suffix.lower() == TEXT_SUFFIX:
            if path.with_suffix("") in media:
                continue  # a sidecar: read with its media file
            kind = TEXT_ONLY
            body = _post_text(path)
            if body is None or not body.strip():
                skipped.append((path, "not UTF-8 text, or empty"))
                continue
            text = body
        else:
            with path.open("rb") as f:
                sniffed = sniff_kind(f.read(512))
            if sniffed is None:
                skipped.append((path, "not an image, a video or a sound (by its content)"))
                continue
            kind = sniffed
            sidecar = path.with_suffix(TEXT_SUFFIX)
            text = (_post_text(sidecar) or "") if sidecar.is_file() else ""
        item_id = f"{prefix}-{n:06d}"
        up = UploadV2(
            schema_version=2, item_id=item_id, owner_id=f"owner-{n % 50}", media_type=kind, text=text, created_at=now_utc(),
            media_b64=base64.b64encode(path.read_bytes()).decode() if inline and kind != TEXT_ONLY else None,
            media_uri=path.resolve().as_uri() if not inline and kind != TEXT_ONLY else None,
        )  # fmt: skip
        n += 1
        yield up, UploadSource(item_id, str(path.relative_to(root)))


def send_records(
    settings: Settings,
    records: Iterable[OutRecord],
    progress: Callable[[int], None] | None = None,
    chunk: int = 50,
    tracker: DeliveryTracker | None = None,
) -> int:
    """Produce records in acknowledged chunks (acks=all, idempotent); return the count acknowledged. A steady sender
    passes its own ``tracker`` (one producer for all its calls)."""
    tracker = tracker or DeliveryTracker.of(settings)
    total = 0
    it = iter(records)
    while batch := list(itertools.islice(it, chunk)):
        total += tracker.produce_all(batch, settings.kafka.delivery_timeout_s)
        if progress:
            progress(total)
    return total


def send_uploads(
    settings: Settings,
    uploads: Iterator[Upload],
    topic: str | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 50,
    tracker: DeliveryTracker | None = None,
) -> int:
    """Produce uploads keyed by item_id, created_at stamped as they are sent; return the count acknowledged."""

    def stamped() -> Iterator[OutRecord]:
        for up in uploads:
            up = up.model_copy(update={"created_at": now_utc()})
            yield OutRecord(topic or settings.topics.uploads_topic, up.item_id, up.model_dump_json(exclude_none=True).encode())

    return send_records(settings, stamped(), progress, chunk, tracker)


def synthetic_engagements(
    users: Sequence[str], items: Sequence[str], n: int, *, seed: int = 0, start: datetime, spacing_s: float = 1.0, shuffle_s: float = 0.0
) -> Iterator[EngagementV1]:
    """Seeded engagements, one every ``spacing_s`` of event time from ``start``; ``shuffle_s`` jitters
    event times backwards so some arrive out of order. Each carries an ``event_id``."""
    rng = random.Random(seed)
    events = ("like", "comment", "share", "view", "time_spent")
    for i in range(n):
        event = rng.choices(events, weights=(4, 1, 1, 8, 3))[0]
        value = round(rng.uniform(1, 120), 1) if event == "time_spent" else 1.0
        ts = start + timedelta(seconds=i * spacing_s - rng.uniform(0, shuffle_s))
        yield EngagementV1(
            user_id=rng.choice(users), item_id=rng.choice(items), event=event, value=value, ts=ts, event_id=f"ev-{seed}-{i:07d}"
        )


def engagement_records(settings: Settings, engagements: Iterable[EngagementV1]) -> Iterator[OutRecord]:
    for e in engagements:
        yield OutRecord(settings.topics.engagements_topic, e.user_id, e.model_dump_json(exclude_none=True).encode())


def interest_engagements(
    captions: Mapping[str, str], users: int, n: int, *, seed: int = 0, start: datetime, span_s: float = 2 * 86400.0
) -> tuple[list[EngagementV1], dict[str, list[str]]]:
    """Engagements of users who each like two caption words: 70% of a user's engagements go to items whose
    caption has one of them. Returns the engagements (in event-time order) and each user's two words."""
    rng = random.Random(seed)
    by_word: dict[str, list[str]] = {}
    for item, caption in sorted(captions.items()):
        for word in set(caption.split()):
            if len(word) > 3:
                by_word.setdefault(word, []).append(item)
    # words of a few items (not "white", "background" or "large", which half of all captions have)
    most = max(3, len(captions) // 20)
    common = sorted((w for w, its in by_word.items() if 3 <= len(its) <= most), key=lambda w: (-len(by_word[w]), w))[:40]
    if not common:
        raise ValueError("no caption word is shared by 3 items: too few items for interest engagements")
    interests = {f"user-{u:03d}": rng.sample(common, min(2, len(common))) for u in range(users)}
    items = sorted(captions)
    out = []
    for i in range(n):
        user = rng.choice(sorted(interests))
        pool = by_word[rng.choice(interests[user])] if rng.random() < 0.7 else items
        event = rng.choices(("like", "comment", "share", "view", "time_spent"), weights=(4, 1, 1, 8, 3))[0]
        value = round(rng.uniform(2, 90), 1) if event == "time_spent" else 1.0
        ts = start + timedelta(seconds=span_s * i / n)
        out.append(EngagementV1(user_id=user, item_id=rng.choice(pool), event=event, value=value, ts=ts, event_id=f"demo-{seed}-{i:06d}"))
    return out, interests
