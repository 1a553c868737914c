"""What a job is, as the dispatcher publishes it to any thread: an immutable snapshot of its progress,
its finished batches and segments, and the errors it can end with."""

import time
from dataclasses import dataclass

from datatypes import Segment


class JobFailed(RuntimeError):
    """A job could not be finished; the message says why."""


class JobCancelled(RuntimeError):
    """The job was cancelled by its owner."""


@dataclass(frozen=True)
class BatchTime:
    """One batch of a job, as its worker ran it (`time.monotonic`, which all processes of a machine share)."""

    device: str
    units: int
    speech_s: float
    started: float
    finished: float


@dataclass(frozen=True)
class JobState:
    """A job as its dispatcher last published it: an immutable snapshot that any thread may read. The
    dispatcher's thread replaces it (`Job.state`) after every change, and nothing else touches a job."""

    opened_at: float  # time.monotonic()
    units: int = 0  # received so far
    speech_s: float = 0.0  # their speech
    done_s: float = 0.0  # of it, transcribed
    # Each finished unit, in the order they came back: (its index, its segments).
    finished_units: tuple[tuple[int, tuple[Segment, ...]], ...] = ()
    workers: tuple[str, ...] = ()  # every worker the job may use, by name ("cpu #2", "cuda:0")
    busy: tuple[str, ...] = ()  # those with a batch of the job now
    # The batch each worker is working on now: (its speech, since when: time.monotonic()).
    running: tuple[tuple[float, float], ...] = ()
    language: str | None = None  # None until detected, where it is detected once per file
    language_probability: float = 1.0  # how sure the model was of the language it detected
    batches: tuple[BatchTime, ...] = ()  # those finished
    finished_at: float | None = None  # once it ended, well or not
    error: Exception | None = None  # why it failed, or JobCancelled

    @property
    def first_batch_s(self) -> float:
        """From the job's opening until a worker began its first batch."""
        return min((batch.started for batch in self.batches), default=self.opened_at) - self.opened_at

    @property
    def workers_idle_s(self) -> float:
        """Time the job's workers spent without a batch of it while it was open, added over workers."""
        open_s = (self.finished_at or time.monotonic()) - self.opened_at
        busy_s = sum(batch.finished - batch.started for batch in self.batches)
        return max(len(self.workers) * open_s - busy_s, 0.0)

    def segments(self) -> list[Segment]:
        """The segments of the units finished so far, in time order."""
        return [
            segment for _, segments in sorted(self.finished_units, key=lambda item: item[0]) for segment in segments
        ]
