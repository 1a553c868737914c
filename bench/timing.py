"""The tables of `bench.py --timing`: cue timing against speech whose every sentence's start and end are
known, and what is heard where speech is hard (noise, music-like tones, long pauses, quiet, hoarse or
fast words), for this project and plain faster-whisper in the same run.

Timing: each cue (or faster-whisper segment) belongs to the sentence it overlaps most; a sentence's
onset error is its first cue's start minus the speech's start, its end error its last cue's end minus
the speech's end. A negative end error is text gone from the screen while the words are still spoken.

Hard speech: word error rate, the share of the reference's words found, and words inserted per minute
(text where nobody spoke, or more words than were said), from jiwer's alignment.
"""

from pathlib import Path
from statistics import median

import jiwer
import numpy as np
import srt

import speech  # the tests' espeak-ng speech: sentences whose text and timing are known
from helpers import normalise
from speech import Placed

SHORT_ANSWERS = ["Yes.", "No, thank you.", "Right.", "Maybe later."]
PAUSES_S = [0.3, 0.5, 0.8, 1.2, 2.0, 3.0, 0.4, 1.5, 0.6]
EARLY_END_S = -0.05  # an end error below this is an early end


def timing_composition() -> tuple[np.ndarray, list[Placed]]:
    """About two minutes of sentences, short answers and long sentences (two joined by "and"), with
    pauses of 0.3-3 s; the audio and where each sentence was spoken."""
    random = np.random.default_rng(3)
    long_enough = [sentence for sentence in speech.SENTENCES if len(sentence.split()) > 5]
    sentences = []
    for index, sentence in enumerate(speech.SENTENCES[:20]):
        sentences.append(sentence)
        if index % 4 == 1:
            sentences.append(SHORT_ANSWERS[index // 4 % len(SHORT_ANSWERS)])
        if index % 5 == 3:
            first, second = random.choice(long_enough, 2, replace=False)
            sentences.append(f"{first.rstrip('.')} and {second[0].lower()}{second[1:]}")
    pieces: list[str | np.ndarray] = [speech.silence(1.0)]
    for index, sentence in enumerate(sentences):
        pieces += [sentence, speech.silence(PAUSES_S[index % len(PAUSES_S)])]
    audio, placed = speech.compose(pieces)
    return audio, placed


def hard_composition() -> tuple[np.ndarray, list[Placed]]:
    """About two minutes where speech is hard to hear: each sentence clean, in noise (10 dB SNR), quiet
    (-26 dB), hoarse (espeak-ng's croak), whispered, or fast (260 words a minute), with music-like
    tones, noise alone and long pauses between them; the audio and where each sentence was said."""
    random = np.random.default_rng(4)
    styles = ["clean", "noise", "quiet", "croak", "whisper", "fast"]
    pieces, said, position = [speech.silence(1.0)], [], 1.0
    for index, sentence in enumerate(speech.SENTENCES[:18]):
        style = styles[index % len(styles)]
        voice = {"croak": "en-us+croak", "whisper": "en-us+whisper"}.get(style, "en-us")
        samples = speech.speak(sentence, voice, words_per_minute=260 if style == "fast" else 150)
        if style == "noise":
            samples = samples + _noise(len(samples), _rms(samples) / 10 ** (10 / 20), random)
        if style == "quiet":
            samples = samples * 10 ** (-26 / 20)
        pieces.append(samples)
        said.append(Placed(sentence, position, position + len(samples) / speech.SAMPLE_RATE))
        between = index % 3
        if between == 0:
            pieces.append(speech.silence(float(random.choice(PAUSES_S))))
        elif between == 1:
            pieces += [speech.silence(0.5), speech.music(3.0, seed=index), speech.silence(0.5)]
        else:
            pieces += [speech.silence(1.0), _noise(2 * speech.SAMPLE_RATE, 0.02, random), speech.silence(8.0)]
        position = sum(len(piece) for piece in pieces) / speech.SAMPLE_RATE
    audio, _ = speech.compose(pieces)
    return audio, said


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def _noise(length: int, level: float, random: np.random.Generator) -> np.ndarray:
    return (random.standard_normal(length) * level).astype(np.float32)


def timing_row(errors: list[tuple[float, float] | None]) -> dict:
    """The medians and the worst of the onset and end errors, the early ends, and the sentences without a
    cue of their own (missed, or shown inside the cue of another)."""
    found = [error for error in errors if error is not None]
    onsets, ends = [error[0] for error in found], [error[1] for error in found]
    return {
        "onset_median": median(onsets),
        "onset_worst": max(onsets, key=abs),
        "end_median": median(ends),
        "end_worst": min(ends),
        "early_ends": sum(end < EARLY_END_S for end in ends),
        "sentences": len(errors),
        "missed": len(errors) - len(found),
    }


def print_timing_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}: onset = shown start - speech start, end = shown end - speech end (s)")
    print(f"{'run':<16} {'onset median':>12} {'onset worst':>11} {'end median':>10} {'end worst':>9}  early ends")
    for name, row in rows.items():
        print(
            f"{name:<16} {row['onset_median']:>+12.3f} {row['onset_worst']:>+11.3f} {row['end_median']:>+10.3f} "
            f"{row['end_worst']:>+9.3f}  {row['early_ends']} of {row['sentences']}"
            + (f", {row['missed']} without a cue of their own" if row["missed"] else "")
        )


def hearing_row(reference: str, hypothesis: str, minutes: float) -> dict:
    """Word error rate, the share of the reference's words found, and inserted words per minute."""
    alignment = jiwer.process_words(normalise(reference), normalise(hypothesis) or "-")
    words = alignment.hits + alignment.substitutions + alignment.deletions
    return {
        "wer": alignment.wer,
        "found": alignment.hits / words,
        "inserted_per_minute": alignment.insertions / minutes,
    }


def print_hearing_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'run':<16} {'WER':>6} {'words found':>11} {'inserted/min':>12}")
    for name, row in rows.items():
        print(f"{name:<16} {100 * row['wer']:>5.1f}% {100 * row['found']:>10.1f}% {row['inserted_per_minute']:>12.2f}")


def read_reference_times(path: Path) -> list[Placed]:
    """Utterance times a user made by hand, as an SRT file (one cue per utterance)."""
    return [
        Placed(item.content, item.start.total_seconds(), item.end.total_seconds())
        for item in srt.parse(path.read_text(encoding="utf-8"))
    ]
