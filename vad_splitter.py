"""Find speech with Silero VAD and cut it into work units of at most 30 s for batched Whisper.

A work unit is one or more speech spans of the file, joined end to end (the silence between them left
out), so that each 30-s Whisper window is filled with speech. The unit keeps where its spans came from,
so that times inside the unit map back to times in the file.
"""

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from audio import SAMPLE_RATE

FRAME_SAMPLES = 512  # Silero's window at 16 kHz: one speech probability per 32 ms
# Each stretch of audio run on its own thread starts from a fresh model state; running this much of
# the audio before it first lets the state settle, so the stitched probabilities match one long run.
WARMUP_FRAMES = 96  # about 3 s
MIN_STRETCH_FRAMES = 1875  # about 60 s: shorter stretches cost more in warm-up than they save
# Silence put between the spans of a unit, so that Whisper hears a pause where the file had one and
# its word timings do not run from one span into the next.
JOINT_SILENCE_S = 0.3


@dataclass(frozen=True)
class VadOptions:
    """How speech is found and grouped; the defaults suit speech in films, talks and meetings."""

    threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_ms: int = 250  # shorter blips are noise, but a short "Yes." is longer than this
    min_silence_ms: int = 300  # a pause shorter than this does not end a speech span
    speech_pad_ms: int = 200  # kept on each side of a span so that no word is clipped
    max_unit_s: float = 30.0  # Whisper's window


@dataclass
class WorkUnit:
    """Speech spans of a file joined together: what one Whisper window transcribes."""

    index: int  # position in the file, counting from 0
    spans: list[tuple[float, float]]  # (start, end) in seconds of the file, in order
    audio: np.ndarray  # the spans' samples, with JOINT_SILENCE_S of silence between them

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def to_file_times(self, start: float, end: float) -> tuple[float, float]:
        """Map a stretch of the unit's audio (a word, say) to its times in the file.

        A word belongs to the span that holds its middle; one whose middle falls in the silence
        between two spans belongs to the later span (Whisper stretches a word's start back over the
        pause before it). The word is then kept inside its span.
        """
        start, end = float(start), float(end)
        middle = (start + end) / 2
        offset = 0.0
        for index, (span_start, span_end) in enumerate(self.spans):
            length = span_end - span_start
            is_last = index + 1 == len(self.spans)
            if is_last or middle < offset + length + JOINT_SILENCE_S:
                if not is_last and middle >= offset + length:  # in the silence after this span
                    offset += length + JOINT_SILENCE_S
                    span_start, span_end = self.spans[index + 1]
                    length = span_end - span_start
                break
            offset += length + JOINT_SILENCE_S
        inside_start = min(max(start - offset, 0.0), length)
        inside_end = min(max(end - offset, inside_start), length)
        return round(span_start + inside_start, 3), round(span_start + inside_end, 3)


@functools.cache
def _silero_model():
    # Imported here, not at the top: the silero_vad package imports torch, which worker processes
    # (they only need WorkUnit) should not pay for in start time and memory.
    from silero_vad import load_silero_vad

    # The "sequence" export runs hundreds of frames per ONNX call with the same result as the
    # frame-by-frame model, several times faster.
    return load_silero_vad(sequence=True)


def speech_probabilities(audio: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Silero's speech probability for every 32-ms frame, computed on several stretches at once."""
    threads = threads or os.cpu_count() or 1
    model = _silero_model()
    frame_count = math.ceil(len(audio) / FRAME_SAMPLES)
    stretch = max(math.ceil(frame_count / threads), MIN_STRETCH_FRAMES)

    def run_stretch(first_frame: int) -> np.ndarray:
        warmup = min(first_frame, WARMUP_FRAMES)
        piece = audio[(first_frame - warmup) * FRAME_SAMPLES : (first_frame + stretch) * FRAME_SAMPLES]
        return model.audio_forward(piece, SAMPLE_RATE)[warmup:]

    with ThreadPoolExecutor(threads) as pool:
        stretches = list(pool.map(run_stretch, range(0, frame_count, stretch)))
    return np.concatenate(stretches) if stretches else np.zeros(0, dtype=np.float32)


def find_speech(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech spans as (start, end) sample indices, padded, none longer than one unit.

    Silero's own state machine turns probabilities into spans; a span that would outgrow a unit is
    split at its longest internal pause, and cut hard only where there is no pause at all.
    """
    from silero_vad import get_speech_timestamps_from_probs

    probabilities = speech_probabilities(audio)
    spans = get_speech_timestamps_from_probs(
        probabilities.tolist(),
        sampling_rate=SAMPLE_RATE,
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_ms,
        max_speech_duration_s=options.max_unit_s,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
        use_max_poss_sil_at_max_speech=True,
        audio_length_samples=len(audio),
    )
    return [(span["start"], span["end"]) for span in spans]


def split_audio(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[WorkUnit]:
    """Cut the speech in `audio` into work units; audio without speech gives no units."""
    max_unit_samples = int(options.max_unit_s * SAMPLE_RATE)
    joint = np.zeros(int(JOINT_SILENCE_S * SAMPLE_RATE), dtype=np.float32)
    groups: list[list[tuple[int, int]]] = []
    group_samples = 0
    for start, end in find_speech(audio, options):
        if not groups or group_samples + len(joint) + (end - start) > max_unit_samples:
            groups.append([])
            group_samples = -len(joint)  # no silence before a unit's first span
        groups[-1].append((start, end))
        group_samples += len(joint) + end - start
    units = []
    for index, group in enumerate(groups):
        pieces = [piece for start, end in group for piece in (joint, audio[start:end])][1:]
        spans = [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in group]
        units.append(WorkUnit(index=index, spans=spans, audio=np.concatenate(pieces)))
    return units


def longest_first(units: list[WorkUnit]) -> list[WorkUnit]:
    """The order in which to hand units to whichever worker is free, so that all finish together.

    Handing out the longest remaining unit first is the classic longest-processing-time rule: no
    worker is left with a long unit while the others sit idle at the end.
    """
    return sorted(units, key=lambda unit: unit.duration, reverse=True)
