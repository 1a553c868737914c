"""The one way from a file to subtitles: file -> audio -> work units -> segments -> cues.

Every door (the page, the APIs, the command line, the watched folder) runs its files through
`transcribe_file`, by way of the job layer (`jobs.py`).
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from audio import declared_duration, stream_audio
from cleanup import DEFAULT_CHINESE_SCRIPT, clean_segments, convert_chinese_script
from datatypes import (
    LANGUAGES_WITHOUT_SPACES,
    SAMPLE_RATE,
    Cue,
    Dropped,
    Segment,
    TranscribeOptions,
    Transcript,
    WorkUnit,
)
from job_state import JobState
from subtitles import BROADCAST, CHINESE_JAPANESE, CueOptions, build_cues
from vad_splitter import VadOptions, stream_units
from worker_pool import WorkerPool

log = logging.getLogger("whisper_for_subs")

# Where each unit's language is detected, a pause this long also ends a unit: languages change where
# speakers take turns, and a window holding both would be transcribed in one of them.
LANGUAGE_CHANGE_PAUSE_S = 1.5
# The share of a job's progress that decoding the file and finding its speech stand for; the rest is
# transcribing the speech found.
DECODING_SHARE = 0.1
POLL_S = 0.2  # how often a running job's progress is looked at


@dataclass(frozen=True)
class Progress:
    """How far one file's job is, for the people waiting on it."""

    fraction: float  # of the whole job, from 0 to 1; it never goes back
    elapsed_s: float
    left_s: float | None  # the time left, once it can be told
    decoded_s: float  # the file's audio decoded so far
    duration_s: float | None  # the file's length as its header states it (None: not stated)
    transcribing: bool  # False while no speech has reached a worker yet
    busy: tuple[str, ...]  # the workers working for the job now, by name
    workers: tuple[str, ...]  # every worker the job may use


class _ProgressMeter:
    """Turns what is known of a job (audio decoded, speech found, batches done and running) into a
    Progress whose fraction only grows: the speech still to come is estimated from how much of the
    audio decoded so far was speech, and a running batch counts for the time it has run, at the pace
    of the batches before it."""

    def __init__(self, duration_s: float | None):
        self.duration_s = duration_s
        self.started = time.monotonic()
        self.expected_s = 0.0
        self.fraction = 0.0

    def measure(self, decoded_s: float, found_s: float, decoding: bool, state: JobState) -> Progress:
        now = time.monotonic()
        if decoding and self.duration_s and decoded_s:
            self.expected_s = max(self.expected_s, found_s * self.duration_s / decoded_s)
        elif not decoding:
            self.expected_s = found_s  # known now
        if decoding:
            read = min(decoded_s / self.duration_s, 1.0) if self.duration_s else 0.0
        else:
            read = 1.0
        worked_s = sum(batch.finished - batch.started for batch in state.batches)
        pace = sum(batch.speech_s for batch in state.batches) / worked_s if worked_s else 0.0
        running_s = sum(min(0.9 * speech_s, pace * max(now - since, 0.0)) for speech_s, since in state.running)
        expected_s = max(self.expected_s, found_s)
        heard = min((state.done_s + running_s) / expected_s, 1.0) if expected_s else 0.0
        finished = state.finished_at is not None and not decoding
        fraction = 1.0 if finished else min(DECODING_SHARE * read + (1 - DECODING_SHARE) * heard, 0.99)
        self.fraction = max(self.fraction, fraction)
        elapsed = now - self.started
        left = elapsed * (1 - self.fraction) / self.fraction if self.fraction >= 0.02 and elapsed >= 1 else None
        return Progress(
            self.fraction,
            elapsed,
            0.0 if finished else left,
            decoded_s,
            self.duration_s,
            bool(state.busy or state.done_s),
            state.busy,
            state.workers,
        )


def cue_options_for(language: str) -> CueOptions:
    """The cue rules for `language`: narrower lines for Chinese and Japanese."""
    return CHINESE_JAPANESE if language in LANGUAGES_WITHOUT_SPACES else BROADCAST


def main_language(segments: list[Segment]) -> str:
    """The language most of the speech is in (where each unit had its own); English where none."""
    seconds: dict[str, float] = {}
    for segment in segments:
        seconds[segment.language or "en"] = seconds.get(segment.language or "en", 0.0) + segment.end - segment.start
    return max(seconds, key=seconds.get, default="en")


def silences_between(units: list[WorkUnit], speech_pad_s: float) -> list[tuple[float, float]]:
    """Where the VAD heard nobody, between the units' speech spans: each gap widened by the padding
    the VAD put on both sides of every span."""
    spans = sorted(span for unit in units for span in unit.spans)
    return [(end - speech_pad_s, start + speech_pad_s) for (_, end), (start, _) in zip(spans, spans[1:])]


def make_cues(
    segments: list[Segment],
    language: str | None,
    chinese_script: str,
    max_line_chars: int | None,
    silences: Sequence[tuple[float, float]],
) -> tuple[list[Segment], list[Dropped], list[Cue]]:
    """The last stage: drop what Whisper invented, write Chinese in the script asked for, and group the
    words into cues (for Chinese and Japanese, narrower ones), breaking at `silences` too."""
    segments, dropped = clean_segments(segments)
    segments = [
        convert_chinese_script([segment], chinese_script)[0] if segment.language == "zh" else segment
        for segment in segments
    ]
    cue_options = cue_options_for(language or main_language(segments))
    if max_line_chars:
        cue_options = replace(cue_options, max_line_chars=max_line_chars)
    return segments, dropped, build_cues(segments, cue_options, silences)


class _LiveCues:
    """The cues of the units finished so far, for people to read while the job runs: each unit's cues
    are made once, when it comes back, and shown in time order. (The transcript's cues are made again
    over the whole file at the end: a cue may then join words across two units.)"""

    def __init__(self, units: list[WorkUnit], chinese_script: str, max_line_chars: int | None, speech_pad_s: float):
        self.units = units  # as the pipeline sends them: the list grows
        self.chinese_script, self.max_line_chars, self.speech_pad_s = chinese_script, max_line_chars, speech_pad_s
        self.by_unit: dict[int, list[Cue]] = {}
        self.seen = 0

    def grow(self, state: JobState) -> list[Cue] | None:
        """All the cues so far, where more units are finished than last time; else None."""
        new = state.finished_units[self.seen :]
        if not new:
            return None
        self.seen = len(state.finished_units)
        for index, segments in new:
            unit = next(unit for unit in self.units if unit.index == index)
            silences = silences_between([unit], self.speech_pad_s)
            self.by_unit[index] = make_cues(
                list(segments), state.language, self.chinese_script, self.max_line_chars, silences
            )[2]
        return [cue for index in sorted(self.by_unit) for cue in self.by_unit[index]]


def transcribe_file(
    path: str | Path,
    pool: WorkerPool,
    options: TranscribeOptions = TranscribeOptions(),
    vad_options: VadOptions = VadOptions(),
    max_line_chars: int | None = None,
    chinese_script: str = DEFAULT_CHINESE_SCRIPT,
    on_progress: Callable[[Progress], None] | None = None,
    on_cues: Callable[[list[Cue]], None] | None = None,
    all_workers: bool = True,
    cancel: threading.Event | None = None,
    blocks: Iterable[np.ndarray] | None = None,
) -> Transcript:
    """Transcribe one file into segments and cues. Raises AudioError for a file that is not usable
    audio, JobFailed or JobCancelled when the transcription does not finish.

    `blocks` is the file's audio where the caller has decoded it already (as `stream_audio` does:
    16 kHz mono, one-minute blocks); otherwise the file is decoded here. The options are checked
    before (`jobs.py`). `on_progress` is told how far the job is, from the first block decoded on;
    `on_cues` is given the cues of the units finished so far, each time more are."""
    stages: dict[str, float] = {}
    started = time.perf_counter()
    duration_s = declared_duration(path) if blocks is None else None
    job = pool.open_job(options, all_workers, audio_s=duration_s)
    units: list[WorkUnit] = []  # sent to the workers
    samples = 0
    found_s = 0.0  # speech found so far
    meter = _ProgressMeter(duration_s)
    live = _LiveCues(units, chinese_script, max_line_chars, vad_options.speech_pad_ms / 1000)
    decoding = True
    shown: Progress | None = None

    def report() -> None:
        """Tell the caller how far the job is, and the cues finished since last time."""
        nonlocal shown
        state = job.state
        if on_cues is not None and (cues := live.grow(state)) is not None:
            on_cues(cues)
        if on_progress is not None:
            progress = meter.measure(samples / SAMPLE_RATE, found_s, decoding, state)
            if shown is None or _moved(shown, progress):
                shown = progress
                on_progress(progress)

    def counted(decoded: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal samples
        for block in decoded:
            samples += len(block)
            report()  # from the first block on, while nothing is transcribed yet
            yield block

    try:
        # Decoding, the VAD and transcription overlap: each unit goes to the workers as soon as
        # its speech is settled, while the rest of the file is still being decoded.
        decoded = blocks if blocks is not None else stream_audio(path)
        pause = LANGUAGE_CHANGE_PAUSE_S if options.multilingual else None
        for unit in stream_units(counted(decoded), vad_options, pause):
            units.append(unit)
            pool.add_units(job, [unit])
            found_s += unit.duration
            if cancel is not None and cancel.is_set():
                break
    except BaseException:  # a bad file, Ctrl-C: the units already sent are not worth finishing
        pool.cancel(job)
        raise
    pool.close_job(job)
    decoding = False
    stages["decode+vad"] = time.perf_counter() - started

    started = time.perf_counter()
    # Progress is reported from this thread, the caller's.
    while not job.wait(timeout=POLL_S):
        if cancel is not None and cancel.is_set():
            pool.cancel(job)
        report()
    segments = job.segments()
    stages["transcribe"] = time.perf_counter() - started

    started = time.perf_counter()
    state = job.state
    language = state.language or main_language(segments)
    silences = silences_between(units, vad_options.speech_pad_ms / 1000)
    segments, dropped, cues = make_cues(segments, language, chinese_script, max_line_chars, silences)
    for item in dropped:
        log.info("job %d: dropped %.1f-%.1f s %r: %s", job.id, item.start, item.end, item.text, item.reason)
    stages["cues"] = time.perf_counter() - started
    report()
    if on_cues is not None:
        on_cues(cues)  # the last cues shown are the transcript's

    transcript = Transcript(
        source=Path(path).name,
        duration=samples / SAMPLE_RATE,
        speech=sum(unit.duration for unit in units),
        language=language,
        segments=segments,
        cues=cues,
        dropped=dropped,
        stage_seconds=stages,
        workers=len(state.workers),
        first_batch_s=state.first_batch_s,
        workers_idle_s=state.workers_idle_s,
        batch_times=[
            (batch.device, batch.units, batch.started - state.opened_at, batch.finished - state.opened_at)
            for batch in state.batches
        ],
    )
    log.info(
        "job %d done: %.1f s of audio in %.1f s (%.1f x realtime) on %d workers; "
        "first batch after %.2f s, workers idle %.2f s in all",
        job.id,
        transcript.duration,
        transcript.wall_seconds,
        transcript.realtime_factor,
        transcript.workers,
        transcript.first_batch_s,
        transcript.workers_idle_s,
    )
    return transcript


def _moved(before: Progress, now: Progress) -> bool:
    """Whether a person would see a difference: a tenth of a percent, another worker busy, a second less
    to wait."""
    return (
        round(now.fraction, 3) != round(before.fraction, 3)
        or now.busy != before.busy
        or now.transcribing != before.transcribing
        or (now.left_s is None) != (before.left_s is None)
        or (now.left_s is not None and abs(now.left_s - before.left_s) >= 1)
    )
