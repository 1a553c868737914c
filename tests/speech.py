"""Test audio with known words and known timing: espeak-ng sentences joined by silences."""

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me when you arrive at the station.",
    "The weather today is sunny and warm.",
    "We need to buy milk, bread and eggs.",
    "My brother plays the guitar every evening.",
    "The meeting has been moved to Thursday morning.",
    "She opened the window to let in some fresh air.",
    "The children are playing football in the park.",
    "I would like a cup of coffee with sugar.",
    "The train to London leaves at nine o'clock.",
    "Turn left at the next traffic light.",
    "This book is about the history of science.",
    "The doctor told him to drink more water.",
    "Our garden is full of red and yellow flowers.",
    "The museum is closed on Mondays.",
    "He forgot his umbrella at the office.",
    "The river flows slowly through the valley.",
    "Can you help me carry these heavy boxes?",
    "The restaurant serves fresh fish every day.",
    "We watched a movie about space travel.",
    "Yes.",
    "The teacher wrote the answer on the board.",
]


@dataclass
class Placed:
    """A sentence, spoken (or a cue, shown) from `start` to `end`, in seconds of the file."""

    text: str
    start: float
    end: float


def speak(text: str, voice: str = "en-us", words_per_minute: int = 150) -> np.ndarray:
    """espeak-ng's speech for `text`, at 16 kHz, trimmed of its leading and trailing silence."""
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text], check=True)
        samples, rate = soundfile.read(wav, dtype="float32")
    samples = _resample(samples, rate)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1] * 0.8


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    times = np.arange(int(len(samples) * SAMPLE_RATE / rate)) / SAMPLE_RATE
    return np.interp(times, np.arange(len(samples)) / rate, samples).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def tone(seconds: float, frequency: float = 440.0) -> np.ndarray:
    times = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * frequency * times)).astype(np.float32)


def compose(pieces: list[str | np.ndarray], voice: str = "en-us") -> tuple[np.ndarray, list[Placed]]:
    """Join spoken sentences (str, in espeak-ng's `voice`) and ready-made sounds (arrays); return the
    audio and where each sentence was placed."""
    chunks: list[np.ndarray] = []
    placed: list[Placed] = []
    position = 0
    for piece in pieces:
        samples = speak(piece, voice) if isinstance(piece, str) else piece
        if isinstance(piece, str):
            placed.append(Placed(piece, position / SAMPLE_RATE, (position + len(samples)) / SAMPLE_RATE))
        chunks.append(samples)
        position += len(samples)
    return np.concatenate(chunks), placed


def standard_composition() -> tuple[np.ndarray, list[Placed]]:
    """Every sentence, silences of 0.3 s to 3 s between them, and a 20-s silence and a 10-s steady
    tone in the middle."""
    gaps = [0.3, 0.5, 0.8, 1.2, 2.0, 3.0, 0.4, 1.5]
    pieces: list[str | np.ndarray] = [silence(1.0)]
    for index, sentence in enumerate(SENTENCES):
        pieces += [sentence, silence(gaps[index % len(gaps)])]
        if index == len(SENTENCES) // 2 - 1:
            pieces += [silence(20.0), silence(1.0), tone(10.0), silence(1.0)]
    return compose(pieces)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return path


def music(seconds: float, seed: int = 7) -> np.ndarray:
    """Music-like sound: a melody of quarter-second notes, each with a few harmonics and a decay."""
    random = np.random.default_rng(seed)
    note_samples = SAMPLE_RATE // 4
    times = np.arange(note_samples) / SAMPLE_RATE
    notes = []
    for _ in range(int(seconds * 4)):
        frequency = 220.0 * 2 ** (random.integers(0, 24) / 12)
        note = sum(np.sin(2 * np.pi * frequency * k * times) / k for k in (1, 2, 3))
        notes.append(0.2 * note * np.exp(-4 * times))
    return np.concatenate(notes).astype(np.float32)


def edge_errors(spoken: list[Placed], shown: list[Placed]) -> list[tuple[float, float] | None]:
    """Per sentence spoken, (onset error, end error) of the cues shown for it, or None where none was."""
    assigned: list[list[Placed]] = [[] for _ in spoken]
    for item in shown:
        overlaps = [min(item.end, sentence.end) - max(item.start, sentence.start) for sentence in spoken]
        best = max(range(len(spoken)), key=overlaps.__getitem__)
        if overlaps[best] > 0:
            assigned[best].append(item)
    return [
        (min(item.start for item in items) - sentence.start, max(item.end for item in items) - sentence.end)
        if items
        else None
        for sentence, items in zip(spoken, assigned)
    ]
