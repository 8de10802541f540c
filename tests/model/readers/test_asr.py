"""Speech as Triton serves it (readers/asr.py): PocketSphinx's en-us model on sentences espeak-ng speaks here."""

from __future__ import annotations

import numpy as np
import pytest

from captioner.world.speech import silence, speak
from mmfeat.media.audio import AudioLimits, decode_sound, encode_test_audio
from readers.asr import AsrRuntime, PocketSphinx, voiced_segments
from readers.evaluation import word_errors


@pytest.fixture(scope="module")
def asr() -> AsrRuntime:
    return AsrRuntime(PocketSphinx(), max_seconds=30)


def pcm16(text: str, pause_s: float = 0.0) -> bytes:
    u = speak(text)
    raw = u.pcm + (silence(pause_s, u.rate) + speak("the end").pcm if pause_s else b"")
    return decode_sound(encode_test_audio(raw, u.rate), AudioLimits())  # the served path's resampling


def test_pauses_split_speech_into_segments() -> None:
    one = voiced_segments(np.frombuffer(pcm16("a dog is running on the beach"), "<i2"))
    two = voiced_segments(np.frombuffer(pcm16("a dog is running on the beach", pause_s=1.0), "<i2"))
    assert len(one) >= 1 and len(two) == len(one) + 1


def test_speech_gives_words_and_silence_gives_none(asr: AsrRuntime) -> None:
    said = "the children play football in the park"
    heard = asr.transcribe(pcm16(said))
    errors, words = word_errors(said, heard)
    assert heard and errors <= 2 * words  # a sanity floor only: on this voice most words come back wrong (docs/media.md)
    assert asr.transcribe(np.zeros(16000, "<i2").tobytes()) == ""
    assert asr.version.startswith("pocketsphinx-5.")


def test_odd_or_overlong_audio_is_refused(asr: AsrRuntime) -> None:
    with pytest.raises(ValueError, match="even number"):
        asr.transcribe(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="over the 30 s limit"):
        asr.transcribe(np.zeros(31 * 16000, "<i2").tobytes())


def test_word_errors_counts_edits() -> None:
    assert word_errors("a b c d", "a x c") == (2, 4) and word_errors("a b", "a b") == (0, 2) and word_errors("a", "") == (1, 1)
