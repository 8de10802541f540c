"""`mmfeat tail`'s rendering of a feature record: the embedding line, and whatever a topic holds there escaped."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mmfeat.cli.render import render_record
from mmfeat.kafka.reader import TopicRecord
from mmfeat.untrusted import clean


def record(value: object) -> TopicRecord:
    return TopicRecord("media.item-features.v1", 0, 7, 0, "it-1", json.dumps(value).encode(), {})


def test_a_feature_record_shows_its_lists_and_its_embedding() -> None:
    value = {"caption": "a dog", "token_ids": {"sid": [5, 71, 129]}, "embedding": {"dtype": "float16", "dim": 256, "b64": "AAA="}}
    text = render_record(record(value)).plain
    assert "sid      [5 71 129] (3)" in text and "embedding: float16 x 256" in text


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3))


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_any_embedding_field_renders_as_one_escaped_line(dtype: object, dim: object) -> None:
    plain = render_record(record({"caption": "x", "token_ids": {}, "embedding": {"dtype": dtype, "dim": dim}})).plain
    without = render_record(record({"caption": "x", "token_ids": {}})).plain
    assert len(plain.splitlines()) == len(without.splitlines()) + 1  # no forged line
    line = next(x for x in plain.splitlines() if x.startswith("  embedding: "))
    assert clean(line, 10**6) == line  # nothing left that clean would escape


def test_a_version_2_record_shows_each_sources_text_and_its_frames() -> None:
    value = {
        "schema_version": 2, "media_type": "video", "frames": [{"t_s": 0.0, "caption": "a cat"}, {"t_s": 2.5, "caption": "a dog"}],
        "sources": {
            "caption": {"text": "a cat and a dog", "token_ids": {"word": [1, 2]}}, "post_text": {"text": "my pets", "token_ids": {}},
        },
    }  # fmt: skip
    text = render_record(record(value)).plain
    assert "caption: 'a cat and a dog'" in text and "post_text: 'my pets'" in text and "word     [1 2] (2)" in text
    assert "frame 2.5 s: 'a dog'" in text and "  video" in text


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4), json_values)
def test_any_sources_and_frames_render_as_escaped_lines(sources: dict[str, object], frames: object) -> None:
    plain = render_record(record({"schema_version": 2, "sources": sources, "frames": frames, "media_type": "\x1b[2J"})).plain
    lines = plain.splitlines()
    assert all(clean(line, 10**6) == line for line in lines)  # every line is escaped, none forged by the values
    assert len(lines) <= 3 + len(sources) * (1 + 8) + 8 + 3


def test_a_files_kind_comes_from_its_first_bytes() -> None:
    import io

    import numpy as np
    from PIL import Image

    from mmfeat.cli.produce import sniff_kind
    from mmfeat.media.audio import encode_test_audio
    from mmfeat.media.video import encode_test_video

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    frames = [Image.new("RGB", (32, 32))] * 2
    tone = np.zeros(8000, "<i2").tobytes()
    assert sniff_kind(png.getvalue()[:512]) == "image"
    assert sniff_kind(encode_test_video(frames)[:512]) == "video"
    assert sniff_kind(encode_test_video(frames, codec="libvpx", container="webm")[:512]) == "video"
    assert sniff_kind(encode_test_audio(tone, 16000)[:512]) == "audio"
    assert sniff_kind(encode_test_audio(tone, 16000, "ogg")[:512]) == "audio"
    assert sniff_kind(b"%PDF-1.7 ...") is None and sniff_kind(b"") is None
