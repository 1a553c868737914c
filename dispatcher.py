"""The dispatcher: which batch of which job goes to which worker, and what becomes of the answer.

One thread runs it, taking one message at a time from its inbox (jobs opened, units added, a batch's
answer...), so that only it ever changes jobs and workers and nothing needs a lock. It hands batches
to whichever worker is free, longest first, taking turns between jobs, with at most two batches in
flight per worker: one running and the next queued behind it, so that a worker never waits for the
dispatcher and a newly arrived job never waits behind a whole other job.

Which units share a batch is decided by the job and the number of the server's GPUs alone
(`Job.form_batches`), never by timing: a batched model's arithmetic differs a little with its batch, and
the same file must give the same subtitles whether it runs alone, beside other jobs, on one worker or
several, or through a crash.

It sees workers only through `WorkerHandle` (the processes are in `parallel_transcriber.py`), so that
its decisions can be tested with workers that are not processes.
"""

import functools
import itertools
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace

from datatypes import Segment, TranscribeOptions, WorkUnit
from job_state import BatchTime, JobCancelled, JobFailed, JobState
from worker_protocol import Detected, Transcribed, WorkerHandle

log = logging.getLogger("whisper_for_subs")

MAX_TRIES = 3  # a unit whose worker dies this many times fails its job
BATCHES_IN_FLIGHT = 2  # per worker: one running, one queued behind it
# A job's first batch holds this share of its batch size (at least one unit), each next one twice as
# many up to the full size, and none more than a GPU's share of what is left of the file (`Job.share`);
# when the job closes, what is left goes in halves while they hold LAST_BATCH_SHARE of the batch size.
# Small first batches start the workers while the file is still being decoded, and small last ones let
# the workers end together; but a GPU runs a batch of 8 windows in about three times the time of one
# (decoding takes a step per token, whatever the batch): of a GPU's 32, the first holds 4, the last
# 8 or more (but the very last). Chosen with the GPU's times by batch size, in bench/bench.py's paced
# engine.
FIRST_BATCH_SHARE = 8
LAST_BATCH_SHARE = 4
WINDOW_S = 30.0  # Whisper's window: a unit holds at most this much audio


@dataclass
class Job:
    """One file's work units on their way through the workers. Only the dispatcher's thread reads and
    changes its fields; other threads read `state`, and wait for the end with `wait` or `segments`."""

    id: int
    options: TranscribeOptions
    all_workers: bool  # False: the job keeps to one worker (single-device mode)
    state: JobState = field(default_factory=lambda: JobState(time.monotonic()))
    units: list[WorkUnit] = field(default_factory=list)
    worker_indexes: list[int] = field(default_factory=list)  # the workers it may use, set when it opens
    audio_s: float | None = None  # the file's length, where known when the job opens
    batch_size: int = 1  # the most units in one of its batches, set when it opens
    gpus: int = 1  # the server's GPUs when it opened, which share what is left of the file
    unbatched: list[WorkUnit] = field(default_factory=list)  # units not yet in a batch, in file order
    batches: list[list[WorkUnit]] = field(default_factory=list)  # formed, waiting for a worker
    batches_formed: int = 0
    results: dict[int, list[Segment]] = field(default_factory=dict)  # unit index -> its segments
    finished_units: list[tuple[int, tuple[Segment, ...]]] = field(default_factory=list)  # as they came back
    batch_times: list[BatchTime] = field(default_factory=list)
    tries: dict[int, int] = field(default_factory=dict)  # unit index -> times its worker died on it
    detecting: bool = False
    detect_only: bool = False  # the job ends once its language is known: its units are not transcribed
    language_probability: float = 1.0
    closed: bool = False  # no more units will be added
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def language(self) -> str | None:
        """The job's one language, once known; None while it is to be detected."""
        return self.options.language

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended (or `timeout`); whether it has."""
        return self.finished.wait(timeout)

    def segments(self) -> list[Segment]:
        """Wait for the job; its segments in time order, or the reason it failed."""
        self.finished.wait()
        if self.state.error is not None:
            raise self.state.error
        return self.state.segments()

    def form_batches(self) -> None:
        """Cut the units received so far into batches, in file order: the first of an eighth of
        `batch_size`, then twice as many each time up to `batch_size` or the job's `share` of a GPU;
        once the job is closed, what is left in halves while they hold at least a quarter of
        `batch_size` (at 32, 40 units left: 20, 10, 10). The sizes depend only on the job and the
        server, so its batches are the same however its units arrive and whoever runs them; the small
        first ones start the workers while the rest of the file is decoded, the full ones keep a GPU
        busy, and the smaller last ones let the workers end together instead of one finishing a full
        batch while the others wait."""
        first = max(self.batch_size // FIRST_BATCH_SHARE, 1)
        smallest = max(self.batch_size // LAST_BATCH_SHARE, 1)
        while self.unbatched:
            size = min(self.batch_size, first * 2**self.batches_formed, max(self.share(), smallest))
            if len(self.unbatched) < size:
                if not self.closed:
                    return
                left = len(self.unbatched)
                size = (left + 1) // 2 if left >= 2 * smallest else left
            self.batches.append(self.unbatched[:size])
            del self.unbatched[:size]
            self.batches_formed += 1

    def share(self) -> int:
        """One GPU's share of the windows left in the file from the next unit on, as its length tells
        them: the most the next batch should hold for every GPU of the server to have work to the
        file's end. On eight GPUs, batches of 32 would leave most of them idle at the end of a 60-minute
        file; far from its end the share is that file's eighth. On one GPU (or the CPU), or where the
        length is unknown, a full batch."""
        if self.audio_s is None or self.gpus == 1:
            return self.batch_size
        windows_left = math.ceil((self.audio_s - self.unbatched[0].spans[0][0]) / WINDOW_S)
        return math.ceil(windows_left / self.gpus)

    def take_batch(self) -> list[WorkUnit]:
        """The batch to send next: the longest, so that no worker is left with a long one at the end
        while the others sit idle (the classic longest-processing-time rule)."""
        longest = max(self.batches, key=lambda batch: sum(unit.duration for unit in batch))
        self.batches.remove(longest)
        return longest


# Messages to the dispatcher, handled in the order they come.


@dataclass
class OpenJob:
    """A new job, from now on in the dispatcher's hands."""

    job: Job


@dataclass
class AddUnits:
    """More units of an open job, in file order."""

    job: Job
    units: list[WorkUnit]


@dataclass
class CloseJob:
    """No more units will come for the job."""

    job: Job


@dataclass
class CancelJob:
    """Its owner no longer wants the job."""

    job: Job


@dataclass
class Answer:
    """A worker's future for a batch (or a language detection) is done."""

    worker: "_Worker"
    generation: int  # of the worker process that was sent the batch
    job: Job
    units: list[WorkUnit]
    future: Future


@dataclass
class WorkerRestarted:
    """A dead worker's replacement has loaded its model, or could not."""

    worker: "_Worker"
    generation: int
    future: "Future[int]"  # the new worker's batch size


@dataclass
class AddWorker:
    """A worker that joined after the start (a Ray cluster grew)."""

    handle: WorkerHandle
    batch_size: int


@dataclass
class Stop:
    """End the dispatcher's thread."""

    pass


@dataclass
class _InFlight:
    """A call sent to a worker and not yet answered."""

    job: Job
    speech_s: float
    sent_at: float  # time.monotonic()


@dataclass
class _Worker:
    handle: WorkerHandle
    batch_size: int  # what fits the device: reported when its model loaded, and after each batch
    generation: int = 0  # bumped each time a dead process is replaced
    running: list[_InFlight] = field(default_factory=list)  # in the order sent: the first is being worked on
    answered_at: float = 0.0  # when its last answer came (time.monotonic())
    ready: bool = True  # False from its death until its replacement has loaded the model
    gone: bool = False  # it could not be replaced: it takes no more work

    @property
    def device(self) -> str:
        return self.handle.device


class Dispatcher:
    """Runs on its own thread from construction until `stop()`."""

    def __init__(self, workers: list[WorkerHandle], batch_sizes: list[int]):
        self._workers = [_Worker(handle, size) for handle, size in zip(workers, batch_sizes)]
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: list[Job] = []  # open jobs, the one served longest ago first
        self._job_ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    @property
    def batch_sizes(self) -> list[int]:
        """Each worker's batch size now."""
        return [worker.batch_size for worker in self._workers]

    def open_job(
        self, options: TranscribeOptions, all_workers: bool, detect_only: bool = False, audio_s: float | None = None
    ) -> Job:
        """A new job; its units follow with AddUnits, then CloseJob. `detect_only`: it ends once the language
        of its first unit is known. `audio_s`: the file's length, where known, to share a long file among
        many GPUs."""
        job = Job(next(self._job_ids), options, all_workers, audio_s=audio_s, detect_only=detect_only)
        self._inbox.put(OpenJob(job))
        return job

    def send(self, message: AddUnits | CloseJob | CancelJob) -> None:
        """A message about an open job, handled in the order sent."""
        self._inbox.put(message)

    def add_worker(self, handle: WorkerHandle, batch_size: int) -> None:
        """A new worker, with its model loaded: jobs that use every worker use it too."""
        self._inbox.put(AddWorker(handle, batch_size))

    def stop(self) -> None:
        """Fail every open job, and end the thread."""
        self._inbox.put(Stop())
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not isinstance(message := self._inbox.get(), Stop):
            try:
                self._handle(message)
                self._hand_out_work()
            except Exception:  # a bug here must not stop every later job: log it and serve on
                log.exception("dispatcher error while handling %s", type(message).__name__)
        for job in list(self._jobs):
            self._finish(job, JobFailed("the server is shutting down"))

    def _handle(self, message) -> None:
        match message:
            case OpenJob(job):
                self._open(job)
            case AddUnits(job, units):
                self._add(job, units)
            case CloseJob(job):
                job.closed = True
                job.form_batches()
                self._finish_if_done(job)
            case CancelJob(job):
                if not job.finished.is_set():
                    self._finish(job, JobCancelled(f"job {job.id} was cancelled"))
            case Answer():
                self._take_answer(message)
            case WorkerRestarted(worker, generation, future):
                self._restarted(worker, generation, future)
            case AddWorker(handle, batch_size):
                self._workers.append(_Worker(handle, batch_size))
                for job in self._jobs:
                    if job.all_workers:
                        job.worker_indexes.append(len(self._workers) - 1)
                        self._publish(job)
                log.info("[%s] joined: %d workers", handle.device, len(self._workers))

    def _open(self, job: Job) -> None:
        if all(worker.gone for worker in self._workers):
            self._finish(job, JobFailed(f"job {job.id} failed: no worker is left to run it"))
            return
        if job.all_workers:
            job.worker_indexes = list(range(len(self._workers)))
        else:  # the device the fewest single-device jobs keep to, with every worker it has
            devices = [indexes for indexes in self._single_devices() if not all(self._workers[i].gone for i in indexes)]
            pinned = [sum(other.worker_indexes == indexes for other in self._jobs) for indexes in devices]
            job.worker_indexes = devices[pinned.index(min(pinned))]
        # Fixed for the job's life, the same for every worker of the same kind of device.
        job.batch_size = job.options.batch_size or min(self._workers[index].batch_size for index in job.worker_indexes)
        job.gpus = self._gpus()
        self._jobs.insert(0, job)  # it has had no turn yet: it goes first
        self._publish(job)

    def _gpus(self) -> int:
        """How many GPUs the server's workers have (at least 1: the CPU workers' cores count as one
        device). Every GPU of the server, not those a job uses: the same file has the same batches with
        Multi-GPU ticked or not, and on one or two workers a GPU or on one or several CPU workers."""
        return max(len({worker.device for worker in self._workers if "cuda" in worker.device}), 1)

    def _name(self, index: int) -> str:
        """A worker's name for people: its device, numbered where workers share one ("cpu #2")."""
        device = self._workers[index].device
        same = [i for i, worker in enumerate(self._workers) if worker.device == device]
        return f"{device} #{same.index(index) + 1}" if len(same) > 1 else device

    def _single_devices(self) -> list[list[int]]:
        """The worker indexes of each device: the workers that share a GPU together, each CPU worker
        alone (it stands for a share of the machine's cores)."""
        devices: dict[str, list[int]] = {}
        for index, worker in enumerate(self._workers):
            devices.setdefault(worker.device if worker.device.startswith("cuda") else f"cpu #{index}", []).append(index)
        return list(devices.values())

    def _add(self, job: Job, units: list[WorkUnit]) -> None:
        indexes = [unit.index for unit in job.units + units]
        if len(set(indexes)) < len(indexes):
            # Results are kept by unit index: a repeated one would leave the job waiting forever.
            self._finish(job, JobFailed(f"job {job.id} was given two units with the same index"))
            return
        job.units.extend(units)
        job.unbatched = sorted(job.unbatched + units, key=lambda unit: unit.index)
        job.form_batches()
        self._publish(job)

    def _hand_out_work(self) -> None:
        # First every worker's running batch, then the one queued behind it, so that no worker
        # takes two batches while another has none; a batch is queued only behind the worker with
        # the least speech in flight, so that no batch waits behind a long one while another worker
        # runs dry at a job's end. Jobs take turns: each time a job is given a batch, it goes to the
        # back of the line.
        for slot in range(BATCHES_IN_FLIGHT):
            for index, worker in enumerate(self._workers):
                if len(worker.running) > slot or not worker.ready:
                    continue
                job = next(
                    (
                        job
                        for job in self._jobs
                        if index in job.worker_indexes and self._has_work(job) and self._least_loaded(index, job)
                    ),
                    None,
                )
                if job is not None:
                    self._jobs.remove(job)
                    self._jobs.append(job)
                    self._send(worker, job)

    def _least_loaded(self, index: int, job: Job) -> bool:
        """Whether worker `index` is idle, or has no more speech in flight than any other ready worker
        that `job` may use."""
        if not self._workers[index].running:
            return True
        ready = [i for i in job.worker_indexes if self._workers[i].ready and not self._workers[i].gone]
        load = {i: sum(call.speech_s for call in self._workers[i].running) for i in ready + [index]}
        return load[index] <= min(load.values())

    @staticmethod
    def _needs_language(job: Job) -> bool:
        """Whether the job waits for its one language to be detected (not when each unit has its own)."""
        return job.language is None and not job.options.multilingual

    def _has_work(self, job: Job) -> bool:
        if self._needs_language(job):
            return not job.detecting and bool(job.units)
        return bool(job.batches)

    def _send(self, worker: _Worker, job: Job) -> None:
        if self._needs_language(job):
            # Detect the language once, from the file's first speech, and use it for every unit.
            job.detecting = True
            units = [min(job.units, key=lambda unit: unit.index)]
            send = functools.partial(worker.handle.detect_language, units[0])
        else:
            units = job.take_batch()
            send = functools.partial(worker.handle.transcribe, units, job.options)  # the batch, as one call
        try:
            future = send()
        except Exception as error:  # a call that cannot even be sent is answered as one that failed
            future = Future()
            future.set_exception(error)
        worker.running.append(_InFlight(job, sum(unit.duration for unit in units), time.monotonic()))
        self._publish(job)
        generation = worker.generation
        future.add_done_callback(lambda done: self._inbox.put(Answer(worker, generation, job, units, done)))

    def _take_answer(self, answer: Answer) -> None:
        worker, job, units, future = answer.worker, answer.job, answer.units, answer.future
        if answer.generation == worker.generation:
            worker.running.remove(next(call for call in worker.running if call.job is job))
            worker.answered_at = time.monotonic()
        crashed = future.cancelled() or isinstance(future.exception(), BrokenProcessPool)
        if crashed and answer.generation == worker.generation:
            self._restart(worker)
        if job.finished.is_set():
            return  # cancelled or failed meanwhile: the work is dropped
        if crashed:
            self._retry(job, units)
            return
        if future.exception() is not None:
            error = future.exception()
            self._finish(
                job, JobFailed(f"job {job.id} failed in unit {units[0].index}: {type(error).__name__}: {error}")
            )
            return
        match future.result():
            case Detected(language, probability):
                job.detecting = False
                job.options = replace(job.options, language=language)
                job.language_probability = probability
                log.info("job %d: language %s (%.2f)", job.id, language, probability)
                self._publish(job)
                if job.detect_only:
                    self._finish(job)
            case Transcribed(segments, batch_size, started, finished):
                worker.batch_size = batch_size
                speech_s = sum(unit.duration for unit in units)
                job.batch_times.append(BatchTime(worker.device, len(units), speech_s, started, finished))
                for unit, unit_segments in zip(units, segments):
                    job.results[unit.index] = unit_segments
                    job.finished_units.append((unit.index, tuple(unit_segments)))
                self._publish(job)
                self._finish_if_done(job)

    def _publish(self, job: Job, ended: bool = False, error: Exception | None = None) -> None:
        """A new JobState for `job`: as units come, as batches start and end, and when it ends (`ended`,
        failed where `error` says why)."""
        done_s = sum(unit.duration for unit in job.units if unit.index in job.results)
        working = [
            (index, worker.running[0])
            for index, worker in enumerate(self._workers)
            if worker.running and worker.running[0].job is job
        ]
        job.state = JobState(
            opened_at=job.state.opened_at,
            units=len(job.units),
            speech_s=sum(unit.duration for unit in job.units),
            done_s=done_s,
            finished_units=tuple(job.finished_units),
            workers=tuple(self._name(index) for index in job.worker_indexes),
            busy=tuple(
                self._name(index)
                for index, worker in enumerate(self._workers)
                if any(call.job is job for call in worker.running)
            ),
            running=tuple(
                (call.speech_s, max(call.sent_at, self._workers[index].answered_at)) for index, call in working
            ),
            language=job.language,
            language_probability=job.language_probability,
            batches=tuple(job.batch_times),
            finished_at=time.monotonic() if ended else None,
            error=error,
        )

    def _restart(self, worker: _Worker) -> None:
        log.warning("[%s] worker process died; starting a new one", worker.device)
        worker.generation += 1
        worker.ready = False
        worker.running.clear()  # what the dead process had is answered as crashed, by generation
        generation = worker.generation
        worker.handle.restart().add_done_callback(
            lambda done: self._inbox.put(WorkerRestarted(worker, generation, done))
        )

    def _restarted(self, worker: _Worker, generation: int, future: "Future[int]") -> None:
        if generation != worker.generation:
            return
        if future.exception() is None:
            worker.batch_size, worker.ready = future.result(), True
            return
        worker.gone = True
        log.warning("[%s] could not be replaced (%s); going on without it", worker.device, future.exception())
        for job in list(self._jobs):
            if all(self._workers[index].gone for index in job.worker_indexes):
                self._finish(job, JobFailed(f"job {job.id} failed: no worker is left to run it"))

    def _retry(self, job: Job, units: list[WorkUnit]) -> None:
        if self._needs_language(job):
            job.detecting = False
        for unit in units:
            job.tries[unit.index] = job.tries.get(unit.index, 0) + 1
            if job.tries[unit.index] >= MAX_TRIES:
                start = unit.spans[0][0]
                self._finish(
                    job,
                    JobFailed(
                        f"job {job.id} failed: the worker process died {MAX_TRIES} times on the speech "
                        f"at {int(start // 60)}:{start % 60:04.1f} ({unit.duration:.1f} s)"
                    ),
                )
                return
        if not self._needs_language(job):
            job.batches.append(units)  # the same batch again, so that its result is the same

    def _finish_if_done(self, job: Job) -> None:
        if job.closed and len(job.results) == len(job.units) and not job.finished.is_set():
            self._finish(job)

    def _finish(self, job: Job, error: Exception | None = None) -> None:
        job.batches.clear()
        if job in self._jobs:
            self._jobs.remove(job)
        self._publish(job, ended=True, error=error)
        job.finished.set()
