"""Speech made offline: known English sentences spoken by espeak-ng (Debian's package) to 16 kHz mono PCM.
The ASR model's tests and its word-error-rate figure use them; a dev seed and an eval seed keep any
setting chosen on one from being measured on the same sentences."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SUBJECTS = ("the dog", "a little girl", "my brother", "the old man", "a young woman", "the children", "our teacher", "the cat")
VERBS = ("is playing with", "is looking at", "likes", "is holding", "found", "is painting", "is carrying", "bought")
OBJECTS = ("a red ball", "the big box", "a green apple", "the new bicycle", "a small boat", "the yellow flower", "a warm coat")
PLACES = ("in the park", "at the beach", "in the kitchen", "near the river", "on the table", "in the garden", "at school")


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes  # int16 little-endian, mono
    rate: int  # espeak-ng's own rate (22,050 Hz): resampling is the ASR model's job


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}" for _ in range(n)]


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; `make sysdeps` installs it)")
    return path


def speak(text: str, *, words_per_minute: int = 150, voice: str = "en-us") -> Utterance:
    wav = subprocess.run([espeak(), "-v", voice, "-s", str(words_per_minute), "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        return Utterance(text, w.readframes(w.getnframes()), w.getframerate())


def utterances(n: int, seed: int) -> Iterator[Utterance]:
    for text in sentences(n, seed):
        yield speak(text)


def silence(seconds: float, rate: int) -> bytes:
    return np.zeros(int(seconds * rate), dtype="<i2").tobytes()
