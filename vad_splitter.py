"""Find speech with Silero VAD and cut it into work units of at most 30 s for batched Whisper.

A work unit is one or more speech spans of the file, joined with a short fixed silence between them
(the file's longer silences left out), so that each 30-s Whisper window is filled with speech. The unit keeps where its spans came from,
so that times inside the unit map back to times in the file.
"""

import functools
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

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
    return _spans_from_probabilities(speech_probabilities(audio), len(audio), options)


def _spans_from_probabilities(probabilities: np.ndarray, samples: int, options: VadOptions) -> list[tuple[int, int]]:
    from silero_vad import get_speech_timestamps_from_probs

    spans = get_speech_timestamps_from_probs(
        probabilities.tolist(),
        sampling_rate=SAMPLE_RATE,
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_ms,
        max_speech_duration_s=options.max_unit_s,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
        use_max_poss_sil_at_max_speech=True,
        audio_length_samples=samples,
    )
    return [(span["start"], span["end"]) for span in spans]


def split_audio(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[WorkUnit]:
    """Cut the speech in `audio` into work units; audio without speech gives no units."""
    return list(stream_units([audio], options))


def stream_units(blocks: Iterable[np.ndarray], options: VadOptions = VadOptions()) -> Iterator[WorkUnit]:
    """Work units in time order, each given out as soon as the speech in it is settled.

    `blocks` is the file's audio as it is decoded (every block but the last a whole number of VAD
    frames long). The VAD of each block runs on a thread as soon as it arrives; speech is settled
    up to the middle of the latest long silence, which no span can cross. So the first units go to
    Whisper while the rest of a long file is still being decoded and searched for speech.
    """
    grouper = _UnitGrouper(options)
    settled = 0  # samples of the file before `pending_audio`
    pending_audio: list[np.ndarray] = []
    pending_probabilities: list[np.ndarray] = []
    tail = np.zeros(0, dtype=np.float32)  # warm-up audio for the next block's VAD
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        running: deque = deque()
        for block in blocks:
            warm = np.concatenate([tail, block])
            running.append((block, pool.submit(_block_probabilities, warm, len(tail) // FRAME_SAMPLES)))
            tail = warm[-WARMUP_FRAMES * FRAME_SAMPLES :]
            while running and (running[0][1].done() or len(running) > 2 * (os.cpu_count() or 1)):
                block, probabilities = running.popleft()
                pending_audio.append(block)
                pending_probabilities.append(probabilities.result())
                settled, pending_audio, pending_probabilities = yield from _settle(
                    grouper, settled, pending_audio, pending_probabilities, options, final=False
                )
        for block, probabilities in running:
            pending_audio.append(block)
            pending_probabilities.append(probabilities.result())
        yield from _settle(grouper, settled, pending_audio, pending_probabilities, options, final=True)
    yield from grouper.flush()


def _block_probabilities(warm_audio: np.ndarray, warmup_frames: int) -> np.ndarray:
    return speech_probabilities(warm_audio, threads=1)[warmup_frames:]


def _settle(grouper, settled, pending_audio, pending_probabilities, options, final):
    """Turn the pending audio up to its last safe cut (all of it when `final`) into units."""
    audio = np.concatenate(pending_audio)
    probabilities = np.concatenate(pending_probabilities)
    cut = len(probabilities) if final else _last_safe_cut(probabilities, options)
    if cut == 0:
        return settled, [audio], [probabilities]
    cut_samples = min(cut * FRAME_SAMPLES, len(audio))
    for start, end in _spans_from_probabilities(probabilities[:cut], cut_samples, options):
        yield from grouper.add(settled + start, settled + end, audio[start:end])
    return settled + cut_samples, [audio[cut_samples:]], [probabilities[cut:]]


def _last_safe_cut(probabilities: np.ndarray, options: VadOptions) -> int:
    """The middle frame of the last silence long enough that no speech span can cross it, or 0."""
    needed = math.ceil((options.min_silence_ms + 2 * options.speech_pad_ms) / 32) + 2
    quiet = np.concatenate([[False], probabilities < options.threshold - 0.15, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    long_enough = np.flatnonzero(ends - starts >= needed)
    if not len(long_enough):
        return 0
    last = long_enough[-1]
    return int((starts[last] + ends[last]) // 2)


class _UnitGrouper:
    """Packs speech spans, in time order, into units of at most `max_unit_s`."""

    def __init__(self, options: VadOptions):
        self.max_samples = int(options.max_unit_s * SAMPLE_RATE)
        self.joint = np.zeros(int(JOINT_SILENCE_S * SAMPLE_RATE), dtype=np.float32)
        self.spans: list[tuple[int, int]] = []
        self.pieces: list[np.ndarray] = []
        self.index = 0

    def add(self, start: int, end: int, samples: np.ndarray) -> Iterator[WorkUnit]:
        size = sum(len(piece) for piece in self.pieces) + len(self.joint) * len(self.pieces)
        if self.spans and size + len(samples) > self.max_samples:
            yield from self.flush()
        self.spans.append((start, end))
        self.pieces.append(samples)

    def flush(self) -> Iterator[WorkUnit]:
        if not self.spans:
            return
        audio = np.concatenate([piece for samples in self.pieces for piece in (self.joint, samples)][1:])
        spans = [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in self.spans]
        yield WorkUnit(index=self.index, spans=spans, audio=audio)
        self.index += 1
        self.spans, self.pieces = [], []


def longest_first(units: list[WorkUnit]) -> list[WorkUnit]:
    """The order in which to hand units to whichever worker is free, so that all finish together.

    Handing out the longest remaining unit first is the classic longest-processing-time rule: no
    worker is left with a long unit while the others sit idle at the end.
    """
    return sorted(units, key=lambda unit: unit.duration, reverse=True)
