"""The one way from a file to subtitles: file -> audio -> work units -> segments -> cues.

The command line and the web app are thin shells over `transcribe_file`.
"""

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from audio import declared_duration, stream_audio
from cleanup import DEFAULT_CHINESE_SCRIPT, clean_segments, convert_chinese_script
from datatypes import SAMPLE_RATE, Cue, Dropped, Segment, TranscribeOptions, Transcript, WorkUnit
from dispatcher import Progress
from parallel_transcriber import WorkerPool
from subtitles import BROADCAST, CHINESE_JAPANESE, CueOptions, build_cues
from vad_splitter import VadOptions, stream_units

log = logging.getLogger("whisper_for_subs")

LANGUAGES_WITHOUT_SPACES = ("zh", "ja", "yue")
# Where each unit's language is detected, a pause this long also ends a unit: languages change where
# speakers take turns, and a window holding both would be transcribed in one of them.
LANGUAGE_CHANGE_PAUSE_S = 1.5


def cue_options_for(language: str) -> CueOptions:
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
    segments: list[Segment], language: str | None, chinese_script: str, max_line_chars: int | None,
    silences: Sequence[tuple[float, float]],
) -> tuple[list[Segment], list[Dropped], list[Cue]]:
    """The last stage: drop what Whisper invented, write Chinese in the script asked for, and group the
    words into cues (for Chinese and Japanese, narrower ones), breaking at `silences` too. Also run on
    the units finished so far, for the cues a person sees while the job runs."""
    segments, dropped = clean_segments(segments)
    segments = [convert_chinese_script([segment], chinese_script)[0] if segment.language == "zh" else segment
                for segment in segments]
    cue_options = cue_options_for(language or main_language(segments))
    if max_line_chars:
        cue_options = replace(cue_options, max_line_chars=max_line_chars)
    return segments, dropped, build_cues(segments, cue_options, silences)


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
    before (`startup.job_options`). `on_cues` is given the cues of the units finished so far, each
    time more are."""
    stages: dict[str, float] = {}
    started = time.perf_counter()
    job = pool.open_job(options, all_workers)
    samples = 0
    found_s = 0.0  # speech handed to the workers so far
    duration_s = declared_duration(path) if blocks is None else None
    expected_s = 0.0
    decoding = True
    cues_shown_for = 0  # how many units were finished when the caller last got cues

    def report() -> None:
        """Tell the caller how far the job is: how much is decoded, transcribed and expected."""
        nonlocal expected_s, cues_shown_for
        if on_cues is not None and len(job.results) != cues_shown_for:
            cues_shown_for = len(job.results)
            silences = silences_between(job.units, vad_options.speech_pad_ms / 1000)
            on_cues(make_cues(job.finished_segments(), job.language, chinese_script, max_line_chars, silences)[2])
        if on_progress is None:
            return
        decoded_s = samples / SAMPLE_RATE
        if decoding and duration_s and decoded_s:
            # The speech found so far, scaled to the whole file: the total grows smoothly instead of
            # jumping (and the percentage back) as the VAD finds more.
            expected_s = max(expected_s, found_s * duration_s / decoded_s)
        elif not decoding:
            expected_s = found_s  # known now
        batches = job.progress or Progress(0.0, 0.0, [])
        on_progress(replace(batches, total_s=found_s, decoded_s=decoded_s, duration_s=duration_s,
                            expected_s=max(expected_s, found_s)))

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
    # Progress is reported from this thread, the caller's, which may be a web request's.
    reported = None
    report()
    while not job.wait(timeout=0.2):
        if cancel is not None and cancel.is_set():
            pool.cancel(job)
        if job.progress is not reported:
            reported = job.progress
            report()
    segments = job.segments()
    if job.progress is not reported:
        report()
    stages["transcribe"] = time.perf_counter() - started

    started = time.perf_counter()
    language = job.language or main_language(segments)
    silences = silences_between(job.units, vad_options.speech_pad_ms / 1000)
    segments, dropped, cues = make_cues(segments, language, chinese_script, max_line_chars, silences)
    for item in dropped:
        log.info("job %d: dropped %.1f-%.1f s %r: %s", job.id, item.start, item.end, item.text, item.reason)
    stages["cues"] = time.perf_counter() - started

    transcript = Transcript(
        source=Path(path).name,
        duration=samples / SAMPLE_RATE,
        speech=sum(unit.duration for unit in job.units),
        language=language,
        segments=segments,
        cues=cues,
        dropped=dropped,
        stage_seconds=stages,
        workers=len(job.worker_indexes),
        first_batch_s=job.first_batch_s,
        workers_idle_s=job.workers_idle_s,
        batch_times=[(device, size, start - job.opened_at, end - job.opened_at)
                     for device, size, start, end in job.batch_times],
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
