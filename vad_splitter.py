"""Find speech with Silero VAD and cut it into work units of at most 30 s for batched Whisper.

A work unit is one or more speech spans of the file, joined with a short fixed silence between them
(the file's longer silences left out), so that each 30-s Whisper window is filled with speech. The
unit keeps where its spans came from, so that times inside the unit map back to times in the file.
"""

import functools
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from datatypes import BLOCK_SAMPLES, JOINT_SILENCE_S, SAMPLE_RATE, WorkUnit

FRAME_SAMPLES = 512  # Silero's window at 16 kHz: one speech probability per 32 ms
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE
# Silero's own rule: speech that started above the threshold ends only where the probability falls
# this far below it (get_speech_timestamps' default `neg_threshold`).
SILENCE_BELOW_THRESHOLD = 0.15
CONTEXT_SAMPLES = 64  # Silero sees this much of the previous frame with each frame
# The VAD of a long file runs on stretches of up to this length at once, on THREADS threads (one per
# core). The first stretch is one decoded block and each next one twice the one before, so that the
# first units go out early and the threads share the file's beginning too.
STRETCH_FRAMES = 7500  # 4 min
THREADS = os.cpu_count() or 1
# A stretch run from a fresh state gives the same probabilities as one long run once Silero has
# forgotten its starting state, after about a minute of audio. Its beginning is run again from the
# previous stretch's end state, in pieces of this length, until the two runs agree within AGREEMENT:
# far below the 5e-5 by which Silero's own TorchScript and ONNX models differ.
FIXUP_FRAMES = 256
AGREEMENT = 1e-5
# A full unit ends at the longest pause after this share of Whisper's window: full enough that the
# speech needs few more windows than packed end to end, free enough to end where a sentence does.
MIN_UNIT_FILL = 0.75


@dataclass(frozen=True)
class VadOptions:
    """How speech is found and grouped; the defaults suit speech in films, talks and meetings. The
    names are those of silero-vad's `get_speech_timestamps`, which takes them as they are (`asdict`)."""

    threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_duration_ms: int = 250  # shorter blips are noise, but a short "Yes." is longer than this
    # A pause shorter than this does not end a speech span. Short, so that spans end at the pauses
    # between clauses and sentences and units can end there (the word error rates of 300 and 160, with
    # pads of 200 to 400 ms, are in bench/RESULTS.md: faster-whisper's batched pipeline uses 160 too).
    min_silence_duration_ms: int = 160
    speech_pad_ms: int = 300  # kept on each side of a span so that no word is clipped
    max_speech_duration_s: float = 30.0  # Whisper's window: no span, and no unit, is longer

    @property
    def silence_threshold(self) -> float:
        """The speech probability below which speech that started ends."""
        return max(self.threshold - SILENCE_BELOW_THRESHOLD, 0.01)  # as silero-vad computes it


def load_vad() -> None:
    """Load Silero's model now, once for the life of the process (it imports torch: a second or more),
    so that a door can do it while its workers load Whisper instead of in its first job."""
    _silero_session()


@functools.cache
def _silero_session():
    # Imported here, not at the top: the silero_vad package imports torch, which worker processes
    # (they only need WorkUnit) should not pay for in start time and memory.
    from silero_vad import load_silero_vad

    # The "sequence" export runs many frames per ONNX call, with the LSTM state as input and
    # output, and gives the same probabilities as the frame-by-frame model, several times faster.
    return load_silero_vad(sequence=True).session


State = tuple[np.ndarray, np.ndarray]  # Silero's LSTM state (h, c)
FRESH_STATE: State = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))


def _run_silero(context: np.ndarray, audio: np.ndarray, state: State) -> tuple[np.ndarray, State]:
    """Silero's speech probability for each frame of `audio` (the last one padded with zeros),
    starting from `state`, with `context` the samples just before `audio`. Returns the state after."""
    frame_count = math.ceil(len(audio) / FRAME_SAMPLES)
    padded = np.zeros(CONTEXT_SAMPLES + frame_count * FRAME_SAMPLES, dtype=np.float32)
    padded[CONTEXT_SAMPLES - len(context) : CONTEXT_SAMPLES] = context
    padded[CONTEXT_SAMPLES : CONTEXT_SAMPLES + len(audio)] = audio
    # Each row: a frame with the end of the frame before it, as the model takes them.
    rows = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT_SAMPLES + FRAME_SAMPLES)[::FRAME_SAMPLES]
    session, (hidden, cell) = _silero_session(), state
    probabilities = []
    for first in range(0, frame_count, 512):  # 512 frames per call keeps its memory small
        values, hidden, cell = session.run(
            ["speech_probs", "hn", "cn"],
            {"input": np.ascontiguousarray(rows[first : first + 512]), "h": hidden, "c": cell},
        )
        probabilities.append(values)
    return np.concatenate(probabilities), (hidden, cell)


def _stretch_probabilities(
    context: np.ndarray, audio: np.ndarray, fresh_end: Future, previous: tuple[Future, Future] | None
) -> tuple[np.ndarray, State, bool]:
    """Silero's probabilities for one stretch of the file, equal to those of one run over the whole
    file; the state at the stretch's end; whether the stretch forgot its fresh start before its end.

    The stretch runs from a fresh state, in parallel with the others, and puts the state it ended
    in into `fresh_end`. Then its beginning runs again from the state in which the previous
    stretch ended (`previous`: that stretch's `fresh_end` and this function's future for it).
    """
    try:
        probabilities, end_state = _run_silero(context, audio, FRESH_STATE)
    except BaseException as error:  # the next stretch waits for `fresh_end`: it must not wait forever
        fresh_end.set_exception(error)
        raise
    fresh_end.set_result(end_state)
    if previous is None:
        return probabilities, end_state, True
    previous_fresh_end, previous_done = previous
    # The previous stretch's fresh end state is its true one once that stretch has forgotten its
    # own fresh start, as all but very short stretches do: so stretches need not wait for each
    # other in turn. Where the previous one had not, start again from its true end state.
    fixed, state, agreed = _fix_start(context, audio, probabilities, previous_fresh_end.result())
    _, previous_end, previous_agreed = previous_done.result()
    if not previous_agreed:
        fixed, state, agreed = _fix_start(context, audio, probabilities, previous_end)
    return fixed, (end_state if agreed else state), agreed


def _fix_start(
    context: np.ndarray, audio: np.ndarray, fresh: np.ndarray, state: State
) -> tuple[np.ndarray, State, bool]:
    """Run the beginning of `audio` again from `state` until it agrees with the `fresh` run.
    Returns the probabilities, the state where the new run stopped, and whether it agreed."""
    probabilities = fresh.copy()
    for first in range(0, len(fresh), FIXUP_FRAMES):
        start = first * FRAME_SAMPLES
        piece_context = audio[start - CONTEXT_SAMPLES : start] if first else context
        piece, state = _run_silero(piece_context, audio[start : start + FIXUP_FRAMES * FRAME_SAMPLES], state)
        probabilities[first : first + len(piece)] = piece
        if np.abs(piece - fresh[first : first + len(piece)]).max() < AGREEMENT:
            return probabilities, state, True
    return probabilities, state, False


def _stitched_probabilities(stretches: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each stretch of audio, in order, with its speech probabilities, computed on a thread per core.

    A stretch's task waits only for tasks started before it, so the pool cannot deadlock.
    """
    with ThreadPoolExecutor(THREADS) as pool:
        running: deque = deque()
        previous, context = None, np.zeros(0, dtype=np.float32)
        for stretch in stretches:
            fresh_end: Future = Future()
            done = pool.submit(_stretch_probabilities, context, stretch, fresh_end, previous)
            running.append((stretch, done))
            previous, context = (fresh_end, done), stretch[-CONTEXT_SAMPLES:]
            # Hand on what is done; wait when too much is in flight, which holds back decoding.
            while running and (running[0][1].done() or len(running) > 2 * THREADS):
                stretch, done = running.popleft()
                yield stretch, done.result()[0]
        for stretch, done in running:
            yield stretch, done.result()[0]


def _spans_from_probabilities(probabilities: np.ndarray, samples: int, options: VadOptions) -> list[tuple[int, int]]:
    from silero_vad import get_speech_timestamps_from_probs

    spans = get_speech_timestamps_from_probs(
        probabilities.tolist(),
        sampling_rate=SAMPLE_RATE,
        **asdict(options),
        use_max_poss_sil_at_max_speech=True,
        audio_length_samples=samples,
    )
    return [(span["start"], span["end"]) for span in spans]


def split_audio(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[WorkUnit]:
    """Cut the speech in `audio` into work units; audio without speech gives no units."""
    blocks = (audio[start : start + BLOCK_SAMPLES] for start in range(0, len(audio), BLOCK_SAMPLES))  # as decoded
    return list(stream_units(blocks, options))


def stream_units(
    blocks: Iterable[np.ndarray], options: VadOptions = VadOptions(), new_unit_after_pause_s: float | None = None
) -> Iterator[WorkUnit]:
    """Work units in time order, each given out as soon as the speech in it is settled.

    `new_unit_after_pause_s`: a pause this long also ends a unit, so that speech on either side of
    it (where speakers and languages change) is never in one window.

    `blocks` is the file's audio as it is decoded (every block but the last a whole number of VAD
    frames long). The VAD runs on stretches of the file on all cores while the rest is still being
    decoded; speech is settled up to the middle of the latest long silence, which no span can
    cross. So the first units go to Whisper while the rest of a long file is still being searched.
    """
    grouper = _UnitGrouper(options, new_unit_after_pause_s)
    settled = 0  # samples of the file before `pending_audio`
    pending_audio: list[np.ndarray] = []
    pending_probabilities: list[np.ndarray] = []
    for stretch, probabilities in _stitched_probabilities(_stretches(blocks)):
        pending_audio.append(stretch)
        pending_probabilities.append(probabilities)
        settled, pending_audio, pending_probabilities = yield from _settle(
            grouper, settled, pending_audio, pending_probabilities, options, final=False
        )
    if pending_audio:
        yield from _settle(grouper, settled, pending_audio, pending_probabilities, options, final=True)
    yield from grouper.flush()


def _stretches(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The first block alone (the sooner the first units go out), then blocks joined into stretches
    each at least twice as long as the one before, up to STRETCH_FRAMES."""
    joined: list[np.ndarray] = []
    wanted = 0  # samples in the next stretch
    for block in blocks:
        joined.append(block)
        if sum(map(len, joined)) >= wanted:
            stretch = np.concatenate(joined)
            yield stretch
            wanted = min(2 * len(stretch), STRETCH_FRAMES * FRAME_SAMPLES)
            joined = []
    if joined:
        yield np.concatenate(joined)


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
    needed = math.ceil((options.min_silence_duration_ms + 2 * options.speech_pad_ms) / FRAME_MS) + 2
    quiet = np.concatenate([[False], probabilities < options.silence_threshold, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    long_enough = np.flatnonzero(ends - starts >= needed)
    if not len(long_enough):
        return 0
    last = long_enough[-1]
    return int((starts[last] + ends[last]) // 2)


class _UnitGrouper:
    """Packs speech spans, in time order, into units of at most `max_speech_duration_s`.

    A unit that is full ends at the longest pause in its last part (where a sentence most likely
    ends), not simply before the span that did not fit: Whisper reads each unit without the text
    before it, and a sentence cut in two loses words at the cut."""

    def __init__(self, options: VadOptions, new_unit_after_pause_s: float | None = None):
        self.max_samples = int(options.max_speech_duration_s * SAMPLE_RATE)
        self.new_unit_after = int(new_unit_after_pause_s * SAMPLE_RATE) if new_unit_after_pause_s else None
        self.padding = 2 * options.speech_pad_ms * SAMPLE_RATE // 1000  # the pause is longer than the gap by this
        self.joint = np.zeros(int(JOINT_SILENCE_S * SAMPLE_RATE), dtype=np.float32)
        self.spans: list[tuple[int, int]] = []
        self.pieces: list[np.ndarray] = []
        self.index = 0

    def add(self, start: int, end: int, samples: np.ndarray) -> Iterator[WorkUnit]:
        paused = (
            self.spans
            and self.new_unit_after is not None
            and start - self.spans[-1][1] + self.padding >= self.new_unit_after
        )
        if paused:
            yield from self.flush()
        elif self.spans and self._size(self.pieces + [samples]) > self.max_samples:
            yield from self.flush(self._cut(start, samples))
        self.spans.append((start, end))
        self.pieces.append(samples)

    def _size(self, pieces: list[np.ndarray]) -> int:
        return sum(len(piece) for piece in pieces) + len(self.joint) * (len(pieces) - 1)

    def _cut(self, start: int, samples: np.ndarray) -> int:
        """How many of the spans held go into the full unit: those before the longest pause that leaves
        the unit at least MIN_UNIT_FILL full (fewer windows for the same speech) and lets the spans
        after it, with the new one, fit into the next unit."""
        gaps = [later[0] - earlier[1] for earlier, later in zip(self.spans, self.spans[1:] + [(start, start)])]
        fitting = [
            count
            for count in range(1, len(self.spans) + 1)
            if self._size(self.pieces[:count]) >= MIN_UNIT_FILL * self.max_samples
            and self._size(self.pieces[count:] + [samples]) <= self.max_samples
        ]
        # Of equally long pauses, the latest: the fuller unit.
        return max(fitting, key=lambda count: (gaps[count - 1], count), default=len(self.spans))

    def flush(self, count: int | None = None) -> Iterator[WorkUnit]:
        """The first `count` spans held (all by default) as the next unit."""
        count = len(self.spans) if count is None else count
        if not count:
            return
        audio = np.concatenate([piece for samples in self.pieces[:count] for piece in (self.joint, samples)][1:])
        spans = [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in self.spans[:count]]
        yield WorkUnit(index=self.index, spans=spans, audio=audio)
        self.index += 1
        self.spans, self.pieces = self.spans[count:], self.pieces[count:]
