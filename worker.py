"""The worker side: one model, loaded once, on one device, transcribing the batches it is sent.

Shared by the two kinds of worker: a local worker process (`parallel_transcriber.py`) and a Ray actor
(`ray_workers.py`) each hold one `ModelWorker` for their whole life.
"""

import logging
import time
from dataclasses import dataclass, replace

from threadpoolctl import threadpool_limits

from datatypes import Segment, TranscribeOptions, WorkUnit
from redecoding import failed_checks, is_better, unpunctuated
from transcriber import WhisperTranscriber
from word_edges import refine_word_edges
from worker_protocol import Detected, Transcribed

log = logging.getLogger("whisper_for_subs")


@dataclass(frozen=True)
class ModelSpec:
    """What every worker loads: a resolved model folder, and how to run it."""

    model_path: str
    name: str  # as the user gave it, for the logs
    compute_type: str | None = None
    cpu_threads: int | None = None  # per CPU worker; None: the machine's cores shared among them
    engine: type = WhisperTranscriber  # the class that owns the model in the worker


class ModelWorker:
    """One model on one device for a worker's whole life, transcribing the batches it is sent."""

    def __init__(self, spec: ModelSpec, device: str, cpu_threads: int, workers_on_device: int = 1, label: str = ""):
        # numpy's BLAS (the log-mel features' one matrix product) gives results that differ in their
        # last bits with its thread count, and a worker would start one per core: one thread in every
        # worker keeps the same file's subtitles the same on one worker or several, in a process or
        # a Ray actor (which Ray gives one thread), and costs little on a product this small.
        threadpool_limits(limits=1, user_api="blas")
        self.engine = spec.engine(spec.model_path, device, spec.compute_type, cpu_threads, workers_on_device)
        self.label = label or device  # for the logs
        self.memory_limit: int | None = None  # the most windows that fit, once a batch has run out of memory

    @property
    def multilingual(self) -> bool:
        """Whether the model knows more than English."""
        return self.engine.multilingual

    @property
    def batch_size(self) -> int:
        """The most windows this worker runs at once."""
        return self.engine.batch_size

    def detect_language(self, unit: WorkUnit) -> Detected:
        """The language spoken in `unit`."""
        return Detected(*self.engine.detect_language(unit))

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> Transcribed:
        """Transcribe `units` as one batch; the segments with when the batch began and ended."""
        started = time.monotonic()
        results = self._transcribe_within(units, options)
        for position, unit in enumerate(units):
            before = results[position - 1] if position else []
            results[position] = self._checked(unit, results[position], options, before)
            refine_word_edges(unit, results[position])
        return Transcribed(results, self.engine.batch_size, started, time.monotonic())

    def _checked(
        self, unit: WorkUnit, segments: list[Segment], options: TranscribeOptions, before: list[Segment]
    ) -> list[Segment]:
        """`segments` where they pass every check; otherwise the better of them and the unit decoded again
        with the text of the unit `before` it in the batch as its prompt (the same in every run, since a
        job's batches are), marked with what failed and which was kept."""
        failed = failed_checks(unit, segments) if self.engine.decodes_again else []
        if failed:
            prompt = " ".join(segment.text for segment in before) or options.initial_prompt
            language = segments[0].language if segments else options.language
            again = self.engine.decode_again(unit, options, language, prompt)
            kept = again if is_better(again, segments, unit) else segments
            which = "the second" if kept is again else "the first"
            note = f"{'; '.join(failed)}: decoded again, {which} decoding kept"
        else:
            kept, note = segments, unpunctuated(segments)
        if note:
            log.warning("[%s] unit %d: %s", self.label, unit.index, note)
        for segment in kept:
            segment.checks = note
        return kept

    def _transcribe_within(self, units: list[WorkUnit], options: TranscribeOptions) -> list[list[Segment]]:
        """Transcribe `units` as one batch (the dispatcher chose it), unless this worker's memory has
        proved too small for that many windows: then in halves. A batch that runs out of memory is
        done in halves too, and sets that limit."""
        if self.memory_limit is None or len(units) <= self.memory_limit:
            try:
                return self.engine.transcribe(units, replace(options, batch_size=len(units)))
            except RuntimeError as error:
                if "out of memory" not in str(error).lower() or len(units) == 1:
                    raise
            self.memory_limit = len(units) // 2
            log.warning(
                "[%s] out of memory with %d windows: batch size now %d", self.label, len(units), self.memory_limit
            )
            self.engine.batch_size = min(self.engine.batch_size, self.memory_limit)
        # Halves, then halves of those: the same split for the same batch and limit, every time.
        half = (len(units) + 1) // 2
        return self._transcribe_within(units[:half], options) + self._transcribe_within(units[half:], options)
