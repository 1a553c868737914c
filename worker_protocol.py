"""What the dispatcher asks of a worker and what a worker answers: the same for a local process
(`parallel_transcriber.py`), a Ray actor (`ray_workers.py`) and the tests' fake workers."""

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from datatypes import Segment, TranscribeOptions, WorkUnit


@dataclass
class Transcribed:
    """The answer for a batch."""

    segments: list[list[Segment]]  # one list per unit, in the batch's order
    batch_size: int  # the most windows the worker now runs at once: smaller after running out of memory
    started: float  # when the worker began the batch and when it ended it (`time.monotonic`, which
    finished: float  # all processes of a machine share)


@dataclass
class Detected:
    """The answer for a language detection."""

    language: str
    probability: float = 1.0  # how sure the model is


class WorkerHandle(Protocol):
    """One worker, as the dispatcher uses it. Each call's future fails with BrokenProcessPool when the
    worker dies on it (or is cancelled); a worker that died must be restarted before it takes more."""

    device: str

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> "Future[Transcribed]":
        """Transcribe `units` as one batch (in smaller ones only where the device's memory demands)."""
        ...

    def detect_language(self, unit: WorkUnit) -> "Future[Detected]":
        """The language spoken in `unit`."""
        ...

    def restart(self) -> "Future[int]":
        """Replace the dead worker; the future gives the new one's batch size once its model is loaded
        (it may take long: a Ray actor waits for room in the cluster), or fails if it cannot be."""
        ...
