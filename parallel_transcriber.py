"""One persistent worker process per device, each with its model loaded once, serving every job.

Each device gets a `ProcessPoolExecutor(max_workers=1)` started with `spawn`, whose initializer loads
the Whisper model into a worker global. The pools live from server start to shutdown: a job never
loads a model. A dispatcher thread hands batches of work units to whichever worker is free, longest
first, taking turns between jobs, and keeps at most two batches in flight per worker, so that a
worker always has its next batch queued and a newly arrived job never waits behind a whole other job.

Which units share a batch is decided by the job alone (see `Job.form_batches`), never by timing: a
batched model's arithmetic differs a little with its batch, and the same file must give the same
subtitles whether it runs alone, beside other jobs, on one worker or several, or through a crash.
"""

import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace

from transcriber import ModelError, Segment, TranscribeOptions, WhisperTranscriber, cpu_threads_per_worker, has_gpu
from vad_splitter import WorkUnit

log = logging.getLogger("whisper_for_subs")

MAX_TRIES = 3  # a unit whose worker dies this many times fails its job
BATCHES_IN_FLIGHT = 2  # per worker: one running, one queued behind it
MAX_AUTO_CPU_WORKERS = 4


class JobFailed(RuntimeError):
    """A job could not be finished; the message says why."""


class JobCancelled(RuntimeError):
    """The job was cancelled by its owner."""


@dataclass(frozen=True)
class ModelSpec:
    """What every worker loads: a resolved model folder, and how to run it."""

    model_path: str
    name: str  # as the user gave it, for the logs
    compute_type: str | None = None
    cpu_threads: int | None = None  # per CPU worker; None: the machine's cores shared among them
    engine: type = WhisperTranscriber  # the class that owns the model in the worker


def parse_devices(text: str) -> list[str]:
    """`auto` (every GPU, else a CPU worker per core, at most 4), `cuda:0,cuda:1`, `cpu`, or `cpu*2`."""
    text = text.strip()
    if text == "auto":
        import ctranslate2

        if has_gpu():
            return [f"cuda:{index}" for index in range(ctranslate2.get_cuda_device_count())]
        # Without a GPU, one single-thread worker per core beats one worker with every core's
        # threads (bench/RESULTS.md); each worker holds its own copy of the model, hence the cap.
        return ["cpu"] * min(os.cpu_count() or 1, MAX_AUTO_CPU_WORKERS)
    devices: list[str] = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, _, copies = part.partition("*")
        if name == "cuda":
            name = "cuda:0"
        if name != "cpu" and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise ValueError(f"unknown device {part!r}: use auto, cpu, cpu*N or cuda:N")
        if not copies.isdigit() and copies:
            raise ValueError(f"bad worker count in {part!r}: use for example cpu*2")
        devices.extend([name] * int(copies or 1))
    if not devices:
        raise ValueError("no device given")
    return devices


# --- The worker process side. Each worker holds one model in these globals for its whole life. ---

_transcriber = None
_device = ""
_events = None
_load_error: str | None = None
_memory_limit: int | None = None  # the most windows that fit, once a batch has run out of memory


def _load_model(spec: ModelSpec, device: str, cpu_threads: int, events) -> None:
    """Executor initializer: pin the device and load the model, once per worker process."""
    global _transcriber, _device, _events, _load_error
    _device, _events = device, events
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    local_device = "cpu"
    if device.startswith("cuda:"):
        # The worker sees only its own GPU, which it then calls cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2]
        local_device = "cuda:0"
    started = time.perf_counter()
    try:
        _transcriber = spec.engine(spec.model_path, local_device, spec.compute_type, cpu_threads)
    except Exception as error:  # reported by _worker_info: an initializer that raises breaks the pool silently
        _load_error = f"{type(error).__name__}: {error}"
        return
    events.put(("loaded", device, spec.name, time.perf_counter() - started, _transcriber.batch_size))


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker if the server dies without shutting it down (SIGKILL, a crash), so that no
    orphan keeps a GPU's memory."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def _worker_info() -> tuple[int, str | None, bool, int]:
    """(process id, load error or None, whether the model is multilingual, the batch size that fits)."""
    if _transcriber is None:
        return os.getpid(), _load_error, False, 1
    return os.getpid(), _load_error, _transcriber.multilingual, _transcriber.batch_size


def _detect_language(unit: WorkUnit) -> str:
    return _transcriber.detect_language(unit)


@dataclass
class Transcribed:
    """A worker's answer for a batch."""

    segments: list[list[Segment]]  # one list per unit, in the batch's order
    batch_size: int  # the most windows the worker now runs at once: smaller after running out of memory


def _transcribe_units(units: list[WorkUnit], options: TranscribeOptions) -> Transcribed:
    for unit in units:
        _events.put(("started", _device, unit.index, unit.duration))
    results = _transcribe_within(units, options, options.batch_size or _transcriber.batch_size)
    for unit, segments in zip(units, results):
        _events.put(("done", _device, unit.index, len(segments)))
    return Transcribed(results, _transcriber.batch_size)


def _transcribe_within(units: list[WorkUnit], options: TranscribeOptions, limit: int) -> list[list[Segment]]:
    """Transcribe `units` in one call where they fit within `limit` windows, else in halves. A call
    that runs out of memory is done in halves too, and makes this worker's later batches no bigger."""
    global _memory_limit
    if _memory_limit is not None:
        limit = min(limit, _memory_limit)
    if len(units) <= limit:
        try:
            return _transcriber.transcribe(units, replace(options, batch_size=len(units)))
        except RuntimeError as error:
            if "out of memory" not in str(error).lower() or len(units) == 1:
                raise
        limit = len(units) // 2
        log.warning("[%s] out of memory with %d windows: batch size now %d", _device, len(units), limit)
        _memory_limit = limit
        _transcriber.batch_size = min(_transcriber.batch_size, limit)
    # Halves, then halves of those: the same split for the same batch and limit, every time.
    half = (len(units) + 1) // 2
    return _transcribe_within(units[:half], options, limit) + _transcribe_within(units[half:], options, limit)


# --- The server side. ---


@dataclass
class Progress:
    done_s: float  # speech transcribed so far
    total_s: float  # speech found in the file
    busy_devices: list[str]  # devices working on this job right now


@dataclass
class _Worker:
    device: str
    executor: ProcessPoolExecutor
    generation: int = 0  # bumped each time a dead process is replaced
    in_flight: int = 0
    batch_size: int = 1  # what fits the device, reported by the worker once its model is loaded


@dataclass
class Job:
    """One file's work units on their way through the workers."""

    id: int
    units: list[WorkUnit]
    options: TranscribeOptions
    worker_indexes: list[int]  # the workers this job may use
    batch_size: int  # the most units in one of its batches
    progress: Progress | None = None  # replaced (never changed in place) after each batch
    unbatched: list[WorkUnit] = field(default_factory=list)  # units not yet in a batch, in file order
    batches: list[list[WorkUnit]] = field(default_factory=list)  # formed, waiting for a worker
    batches_formed: int = 0
    results: dict[int, list[Segment]] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # device -> batches in flight
    detecting: bool = False
    closed: bool = False  # no more units will be added
    error: Exception | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def language(self) -> str | None:
        return self.options.language

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def form_batches(self) -> None:
        """Cut the units received so far into batches, in file order: the first of 1 unit, then 2, 4
        and so on up to `batch_size`, the last one what is left once the job is closed. The sizes
        depend only on the job, so its batches are the same however its units arrive and whoever
        runs them; the small first ones start the workers while the rest of the file is decoded,
        and the full ones after them keep a GPU busy."""
        while self.unbatched:
            size = min(self.batch_size, 2**self.batches_formed)
            if len(self.unbatched) < size and not self.closed:
                return
            self.batches.append(self.unbatched[:size])
            del self.unbatched[:size]
            self.batches_formed += 1

    def take_batch(self) -> list[WorkUnit]:
        """The batch to send next: the longest, so that no worker is left with a long one at the end
        while the others sit idle (the classic longest-processing-time rule)."""
        longest = max(self.batches, key=lambda batch: sum(unit.duration for unit in batch))
        self.batches.remove(longest)
        return longest

    def segments(self) -> list[Segment]:
        """Wait for the job; its segments in time order, or the reason it failed."""
        self.finished.wait()
        if self.error is not None:
            raise self.error
        return [segment for index in sorted(self.results) for segment in self.results[index]]


class ParallelTranscriber:
    """The worker pool: `devices` such as ["cuda:0", "cuda:1"] or ["cpu", "cpu"]."""

    def __init__(self, spec: ModelSpec, devices: list[str]):
        self.spec = spec
        self.devices = devices
        self.multilingual = False
        self._context = multiprocessing.get_context("spawn")
        # SimpleQueue writes each event before put() returns: a worker killed right after loading
        # its model has still reported the load.
        self._events = self._context.SimpleQueue()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: deque[Job] = deque()
        self._job_ids = itertools.count(1)
        self._loads = 0
        self._loads_changed = threading.Condition()
        self._closed = False
        self._cpu_threads = spec.cpu_threads or cpu_threads_per_worker(devices.count("cpu"))
        self._listener = threading.Thread(target=self._log_events, name="worker-events", daemon=True)
        self._listener.start()
        self._workers = [_Worker(device, self._new_executor(device)) for device in devices]
        self._dispatcher = threading.Thread(target=self._dispatch, name="dispatcher", daemon=True)
        self._dispatcher.start()
        self._wait_until_loaded()

    # Public interface

    @property
    def model_loads(self) -> int:
        """Models loaded since start: one per worker process ever started."""
        with self._loads_changed:
            return self._loads

    @property
    def batch_sizes(self) -> list[int]:
        """The batch size each worker chose from its device's free memory when its model loaded."""
        return [worker.batch_size for worker in self._workers]

    def worker_pids(self) -> list[int]:
        return [pid for worker in self._workers for pid in worker.executor._processes]

    def open_job(self, options: TranscribeOptions, all_workers: bool = True) -> Job:
        """Start a job whose units come later (`add_units`, then `close_job`), so that the first
        units are transcribed while the rest of the file is still being decoded.
        `all_workers=False` keeps the job on one worker (single-device mode)."""
        if all_workers:
            worker_indexes = list(range(len(self._workers)))
        else:
            worker_indexes = [self._least_loaded_worker()]
        if not self.multilingual:
            options = replace(options, language="en")
        batch_size = options.batch_size or min(self._workers[index].batch_size for index in worker_indexes)
        job = Job(next(self._job_ids), [], options, worker_indexes, batch_size)
        self._inbox.put(("open", job))
        return job

    def add_units(self, job: Job, units: list[WorkUnit]) -> None:
        self._inbox.put(("add", (job, units)))

    def close_job(self, job: Job) -> None:
        """No more units will come: the job ends when the ones it has are done."""
        self._inbox.put(("close", job))

    def submit(self, units: list[WorkUnit], options: TranscribeOptions, all_workers: bool = True) -> Job:
        """A job with all its units known up front."""
        job = self.open_job(options, all_workers)
        self.add_units(job, units)
        self.close_job(job)
        return job

    def cancel(self, job: Job) -> None:
        self._inbox.put(("cancel", job))

    def shutdown(self) -> None:
        """Stop every worker process; jobs still open fail."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(("stop", None))
        self._dispatcher.join(timeout=10)
        for worker in self._workers:
            self._stop_executor(worker.executor)
        self._events.put(None)
        self._listener.join(timeout=5)
        self._events.close()

    def __enter__(self) -> "ParallelTranscriber":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    # Worker processes

    def _new_executor(self, device: str) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._context,
            initializer=_load_model,
            initargs=(self.spec, device, self._cpu_threads if device == "cpu" else 1, self._events),
        )
        return executor

    def _wait_until_loaded(self) -> None:
        """Start every worker and wait for its model, so that the first job loads nothing."""
        infos = [worker.executor.submit(_worker_info) for worker in self._workers]
        for worker, info in zip(self._workers, infos):
            try:
                _pid, error, multilingual, worker.batch_size = info.result()
            except BrokenProcessPool:
                error = "the worker process died while loading the model"
            if error:
                self.shutdown()
                raise ModelError(f"[{worker.device}] could not load the model {self.spec.name!r}: {error}")
            self.multilingual = multilingual
        with self._loads_changed:
            self._loads_changed.wait_for(lambda: self._loads >= len(self._workers), timeout=30)

    @staticmethod
    def _stop_executor(executor: ProcessPoolExecutor) -> None:
        processes = list(executor._processes.values())  # the executor keeps no public handle on them
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():  # still in the middle of a batch: no reason to wait for it
                process.kill()
                process.join()

    def _log_events(self) -> None:
        while (event := self._events.get()) is not None:
            kind, device, *details = event
            if kind == "loaded":
                model, seconds, batch_size = details
                log.info("[%s] model loaded: %s (%.1f s), batch size %d", device, model, seconds, batch_size)
                with self._loads_changed:
                    self._loads += 1
                    self._loads_changed.notify_all()
            elif kind == "started":
                log.info("[%s] unit %d (%.1f s)", device, *details)
            elif kind == "done":
                log.info("[%s] unit %d done: %d segments", device, *details)

    def _least_loaded_worker(self) -> int:
        pinned = [0] * len(self._workers)
        for job in list(self._jobs):
            if len(job.worker_indexes) == 1:
                pinned[job.worker_indexes[0]] += 1
        return pinned.index(min(pinned))

    # The dispatcher thread: the only code that changes jobs and workers, one message at a time.

    def _dispatch(self) -> None:
        while True:
            kind, payload = self._inbox.get()
            if kind == "stop":
                for job in list(self._jobs):
                    self._finish(job, JobFailed("the server is shutting down"))
                return
            try:
                self._handle(kind, payload)
            except Exception:  # a bug here must not stop every later job: log it and serve on
                log.exception("dispatcher error while handling %s", kind)

    def _handle(self, kind: str, payload) -> None:
        if kind == "open":
            self._jobs.append(payload)
        elif kind == "add":
            job, units = payload
            indexes = [unit.index for unit in job.units + units]
            if len(set(indexes)) < len(indexes):
                # Results are kept by unit index: a repeated one would leave the job waiting forever.
                self._finish(job, JobFailed(f"job {job.id} was given two units with the same index"))
                return
            job.units.extend(units)
            job.unbatched = sorted(job.unbatched + units, key=lambda unit: unit.index)
            job.form_batches()
        elif kind == "close":
            payload.closed = True
            payload.form_batches()
            self._finish_if_done(payload)
        elif kind == "cancel":
            if not payload.finished.is_set():
                self._finish(payload, JobCancelled(f"job {payload.id} was cancelled"))
        elif kind == "result":
            self._take_result(*payload)
        self._hand_out_work()

    def _hand_out_work(self) -> None:
        # First every worker's running batch, then the one queued behind it, so that no worker
        # takes two batches while another has none. Jobs take turns: each time a job is given a
        # batch, it goes to the back of the line.
        for slot in range(BATCHES_IN_FLIGHT):
            for worker_index, worker in enumerate(self._workers):
                if worker.in_flight > slot:
                    continue
                job = next((job for job in self._jobs if worker_index in job.worker_indexes and self._has_work(job)), None)
                if job is not None:
                    self._jobs.remove(job)
                    self._jobs.append(job)
                    self._send(worker, job)

    @staticmethod
    def _has_work(job: Job) -> bool:
        if job.language is None:
            return not job.detecting and bool(job.units)
        return bool(job.batches)

    def _send(self, worker: _Worker, job: Job) -> None:
        if job.language is None:
            # Detect the language once, from the file's first speech, and use it for every unit.
            job.detecting = True
            units = [min(job.units, key=lambda unit: unit.index)]
            future = self._submit(worker, _detect_language, units[0])
        else:
            units = job.take_batch()
            # The batch is transcribed as one call, whatever batch size the worker would choose.
            future = self._submit(worker, _transcribe_units, units, replace(job.options, batch_size=len(units)))
        worker.in_flight += 1
        job.busy[worker.device] = job.busy.get(worker.device, 0) + 1
        generation = worker.generation
        future.add_done_callback(lambda done: self._inbox.put(("result", (worker, generation, job, units, done))))

    @staticmethod
    def _submit(worker: _Worker, function, *args) -> Future:
        try:
            return worker.executor.submit(function, *args)
        except BrokenProcessPool as error:
            # The process died after its last result came in; the crash message is on its way.
            # Failing this batch the same way lets one path replace the worker and retry the units.
            failed: Future = Future()
            failed.set_exception(error)
            return failed

    def _take_result(self, worker: _Worker, generation: int, job: Job, units: list[WorkUnit], future: Future) -> None:
        if generation == worker.generation:
            worker.in_flight -= 1
        job.busy[worker.device] -= 1
        crashed = future.cancelled() or isinstance(future.exception(), BrokenProcessPool)
        if crashed:
            self._replace_dead_worker(worker, generation)
        if job.finished.is_set():
            return  # cancelled or failed meanwhile: the work is dropped
        if crashed:
            self._retry_after_crash(job, units)
            return
        try:
            result = future.result()
        except Exception as error:
            self._finish(job, JobFailed(f"job {job.id} failed in unit {units[0].index}: {type(error).__name__}: {error}"))
            return
        if isinstance(result, str):
            job.options = replace(job.options, language=result)
            log.info("job %d: language %s", job.id, result)
            return
        worker.batch_size = result.batch_size
        for unit, segments in zip(units, result.segments):
            job.results[unit.index] = segments
        done_s = sum(unit.duration for unit in job.units if unit.index in job.results)
        busy = [device for device, count in job.busy.items() if count > 0]
        job.progress = Progress(done_s, sum(unit.duration for unit in job.units), busy)
        self._finish_if_done(job)

    def _replace_dead_worker(self, worker: _Worker, generation: int) -> None:
        if generation != worker.generation:
            return  # another batch of the same dead process already got it replaced
        log.warning("[%s] worker process died; starting a new one", worker.device)
        self._stop_executor(worker.executor)
        worker.executor = self._new_executor(worker.device)
        worker.executor.submit(_worker_info)  # start the process now, so that its model is warm
        worker.generation += 1
        worker.in_flight = 0

    def _retry_after_crash(self, job: Job, units: list[WorkUnit]) -> None:
        if job.language is None:
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
        if job.language is not None:
            job.batches.append(units)  # the same batch again, so that its result is the same

    def _finish_if_done(self, job: Job) -> None:
        if job.closed and len(job.results) == len(job.units) and not job.finished.is_set():
            self._finish(job)

    def _finish(self, job: Job, error: Exception | None = None) -> None:
        job.error = error
        job.batches.clear()
        if job in self._jobs:
            self._jobs.remove(job)
        job.finished.set()
