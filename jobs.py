"""The job layer: the one way in for every door (the page, the APIs, the command line, the watched folder).

A door turns its own protocol into a `JobRequest`, which `JobService.check` checks once against the
server's models and limits; `JobService.run` then transcribes one file on the worker pools and gives a
Transcript, or raises a `messages.UserError` that says what went wrong in the words every door shows.
A door keeps only its protocol: how requests come in, and how results go out.
"""

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import messages
from audio import AudioError, stream_audio
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from datatypes import SAMPLE_RATE, Cue, TranscribeOptions, Transcript
from job_state import JobCancelled, JobFailed
from models import LANGUAGE_CODES, can_translate, check_prompt, knows_only_english
from pipeline import Progress, transcribe_file
from serving import JobCounter, ServerDraining
from vad_splitter import VadOptions, split_audio
from worker import ModelSpec
from worker_pool import WorkerPool
from writers import FORMATS, write

log = logging.getLogger("whisper_for_subs")

VAD_THRESHOLD_RANGE = (0.2, 0.8)
LINE_CHARS_RANGE = (16, 60)


@dataclass(frozen=True)
class JobRequest:
    """A job as a door asks for it, before it is checked: "auto" for a language to detect, empty texts for
    none, numbers as a person gave them."""

    model: str | None = None  # a name of the server's models; None: the default (the first)
    language: str = "auto"
    task: str = "transcribe"  # or "translate" (to English)
    initial_prompt: str = ""
    hotwords: str = ""
    multilingual: bool = False  # the recording changes language: each part's language is detected
    vad_threshold: float = VadOptions.threshold
    max_line_chars: int | float | None = None  # None: the language's default (42, 16 for CJK)
    chinese_script: str = DEFAULT_CHINESE_SCRIPT  # a key of cleanup.CHINESE_SCRIPTS
    formats: tuple[str, ...] = ("srt",)
    word_highlight: bool = False  # ASS and WebVTT time each word (karaoke)
    all_workers: bool = True  # False: the job keeps to one device
    batch_size: int | None = None  # None: the server's setting


@dataclass(frozen=True)
class JobOptions:
    """A job's settings once checked: everything the pipeline and the writers need."""

    model: str  # the name of the pool that runs it
    transcribe: TranscribeOptions
    vad: VadOptions
    max_line_chars: int | None
    chinese_script: str
    formats: tuple[str, ...]
    word_highlight: bool
    all_workers: bool


class JobService:
    """The worker pools, the server's limits and its drain, behind one way of running a job.

    At most `running` jobs transcribe at once (enough to keep every worker's next batch queued) and at
    most `waiting` more wait for a place; a job beyond those is refused at once (QUEUE_FULL)."""

    def __init__(
        self, pools: dict[str, WorkerPool], batch_size: int | None = None, running: int | None = None, waiting: int = 32
    ):
        self.pools = pools
        self.batch_size = batch_size
        self.counter = JobCounter()  # the jobs running now, and the drain at shutdown
        workers = len(next(iter(pools.values())).devices)
        self.running = running or 2 * workers
        self.waiting = waiting
        self._places = threading.BoundedSemaphore(self.running)
        self._admitted = 0  # running and waiting
        self._admitting = threading.Lock()

    @property
    def default_model(self) -> str:
        """The model a request that names none gets: the first."""
        return next(iter(self.pools))

    def check(self, request: JobRequest) -> JobOptions:
        """The request's options, checked against its model and the limits; raises UserError."""
        return check_request(request, {name: pool.spec for name, pool in self.pools.items()}, self.batch_size)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """A place in the queue for one job, or at once UserError(QUEUE_FULL), or SERVER_DRAINING while the
        server shuts down; held until the block ends.
        Doors take it only once they have everything the job needs (a whole upload): a slow client
        holds no place."""
        with self._admitting:
            if self.counter.draining:
                raise messages.UserError(messages.SERVER_DRAINING, status=503)
            if self._admitted >= self.running + self.waiting:
                raise messages.UserError(messages.QUEUE_FULL, status=429, code="queue_full")
            self._admitted += 1
        try:
            yield
        finally:
            with self._admitting:
                self._admitted -= 1

    def run(
        self,
        source: Path,
        options: JobOptions,
        on_progress: Callable[[Progress], None] | None = None,
        on_cues: Callable[[list[Cue]], None] | None = None,
        cancel: threading.Event | None = None,
        on_waiting: Callable[[], None] | None = None,
    ) -> Transcript:
        """Transcribe `source` (inside `admitted`): wait for a place among the running jobs, then run it.
        Raises UserError for a file that cannot be transcribed, a job that failed or was cancelled, or a
        server that is shutting down."""
        if not self._places.acquire(blocking=False):
            if on_waiting is not None:
                on_waiting()
            while not self._places.acquire(timeout=0.2):
                if cancel is not None and cancel.is_set():
                    log.info("%s: cancelled while waiting", source.name)
                    raise messages.Cancelled()
        try:
            with self.counter.job():
                return transcribe_file(
                    source,
                    self.pools[options.model],
                    options.transcribe,
                    options.vad,
                    max_line_chars=options.max_line_chars,
                    chinese_script=options.chinese_script,
                    on_progress=on_progress,
                    on_cues=on_cues,
                    all_workers=options.all_workers,
                    cancel=cancel,
                )
        except ServerDraining:
            raise messages.UserError(messages.SERVER_DRAINING, status=503) from None
        except Exception as error:
            explained = messages.explain(error)
            log.info("%s: %s", source.name, explained.message)
            raise explained from None
        finally:
            self._places.release()

    def detect_language(
        self, source: Path, offset_s: float = 0.0, length_s: float = 30.0, cancel: threading.Event | None = None
    ) -> tuple[str, float]:
        """The language spoken in `source`, from its first speech in `length_s` seconds from `offset_s`, and
        how sure the default model is. Raises UserError for a file that cannot be read, or holds no
        speech there."""
        try:
            with self.counter.job():
                clip = clip_of(source, offset_s, length_s)
                units = split_audio(clip)
                if not units:
                    raise messages.UserError(
                        f"no speech found in the {length_s:g} s from {offset_s:g} s", param="audio_file"
                    )
                if cancel is not None and cancel.is_set():
                    raise messages.Cancelled()
                return self.pools[self.default_model].detect(units[0])
        except ServerDraining:
            raise messages.UserError(messages.SERVER_DRAINING, status=503) from None
        except (AudioError, JobFailed, JobCancelled) as error:
            raise messages.explain(error) from None

    @staticmethod
    def write(
        transcript: Transcript, folder: Path, stem: str, options: JobOptions, formats: tuple[str, ...] | None = None
    ) -> dict[str, Path]:
        """The transcript's files in `folder`, `stem.fmt` for each of the job's formats (or `formats`)."""
        return {
            fmt: write(transcript, folder / f"{stem}.{fmt}", fmt, options.word_highlight)
            for fmt in formats or options.formats
        }


def check_request(request: JobRequest, models: dict[str, ModelSpec], batch_size: int | None = None) -> JobOptions:
    """The request's options, checked against `models` (the first is the default) and the limits, before
    any worker runs it (the command line checks before it loads a model); raises UserError."""
    model = request.model or next(iter(models))
    if model not in models:
        raise messages.UserError(messages.unknown_model(model, list(models)), param="model", code="model_not_found")
    model_path = models[model].model_path
    language = (request.language or "auto").strip()
    if language != "auto" and language not in LANGUAGE_CODES:
        raise messages.UserError(
            f"unknown language {language[:20]!r}: give a code such as en, de, fr, zh or ja, or auto", param="language"
        )
    english_only = knows_only_english(model_path)
    if language not in ("auto", "en") and english_only:
        raise messages.UserError(messages.english_only(model, language), param="language")
    if request.multilingual and english_only:
        raise messages.UserError(messages.english_only(model, "several languages"), param="multilingual")
    if request.multilingual and language != "auto":
        raise messages.UserError(
            f"several languages are detected part by part: leave the language at auto, not {language}", param="language"
        )
    if request.task not in ("transcribe", "translate"):
        raise messages.UserError(f"the task is transcribe or translate, not {request.task[:20]!r}", param="task")
    if request.task == "translate" and not can_translate(model, not english_only):
        raise messages.UserError(messages.cannot_translate(model), param="model")
    unknown = [fmt for fmt in request.formats if fmt not in FORMATS]
    if unknown:
        raise messages.UserError(f"unknown format {unknown[0][:20]!r}: use {', '.join(FORMATS)}", param="formats")
    if request.chinese_script not in CHINESE_SCRIPTS:
        raise messages.UserError(f"the Chinese script is one of {', '.join(CHINESE_SCRIPTS)}", param="chinese_script")
    threshold = number_in_range("VAD sensitivity", request.vad_threshold, *VAD_THRESHOLD_RANGE)
    line_chars = None
    if request.max_line_chars is not None:
        line_chars = number_in_range("Characters per line", request.max_line_chars, *LINE_CHARS_RANGE)
        if line_chars != int(line_chars):
            raise messages.UserError(
                f"Characters per line must be a whole number, not {line_chars:g}", param="max_line_chars"
            )
    options = TranscribeOptions(
        language=None if language == "auto" else language,
        task=request.task,
        initial_prompt=request.initial_prompt or None,
        hotwords=request.hotwords or None,
        batch_size=request.batch_size or batch_size,
        multilingual=request.multilingual,
    )
    try:
        check_prompt(model_path, options)
    except ValueError as error:
        raise messages.UserError(str(error), param="prompt") from None
    return JobOptions(
        model,
        options,
        VadOptions(threshold=threshold),
        int(line_chars) if line_chars else None,
        request.chinese_script,
        tuple(dict.fromkeys(request.formats or ("srt",))),
        request.word_highlight,
        request.all_workers,
    )


def clip_of(source: Path, offset_s: float, length_s: float) -> np.ndarray:
    """`length_s` seconds of `source`'s audio from `offset_s` (16 kHz mono), decoding no further."""
    first, last = int(offset_s * SAMPLE_RATE), int((offset_s + length_s) * SAMPLE_RATE)
    blocks, read = [], 0
    for block in stream_audio(source):
        blocks.append(block[max(first - read, 0) : max(last - read, 0)])
        read += len(block)
        if read >= last:
            break
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def number_in_range(name: str, value, low: float, high: float) -> float:
    """`value` as a float; UserError where it is no number, not finite, or outside [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise messages.UserError(messages.out_of_range(name, value, low, high), param=name)
    return float(value)
