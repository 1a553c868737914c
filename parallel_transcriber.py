"""One persistent worker process per device, each with its model loaded once, serving every job.

Each device gets a `ProcessPoolExecutor(max_workers=1)` started with `spawn`, whose initializer loads
the Whisper model into a worker global. The pools live from server start to shutdown: a job never
loads a model. Which batch goes to which worker is the dispatcher's business (`dispatcher.py`).
"""

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Callable

from threadpoolctl import threadpool_limits

from datatypes import Segment, TranscribeOptions, WorkUnit
from dispatcher import AddUnits, CancelJob, CloseJob, Detected, Dispatcher, Job, Transcribed, WorkerHandle
from models import ModelError, cpu_threads_per_worker, gpu_count
from transcriber import WhisperTranscriber

log = logging.getLogger("whisper_for_subs")

MAX_AUTO_CPU_WORKERS = 4
# Two workers share each GPU under `auto`: while one computes its next batch's features on the CPU
# and takes in its audio, the other keeps the GPU busy (on an H100, 60 minutes end to end in 5.3 s
# against 6.9 s with one worker; bench/RESULTS.md).
WORKERS_PER_GPU = 2


@dataclass(frozen=True)
class ModelSpec:
    """What every worker loads: a resolved model folder, and how to run it."""

    model_path: str
    name: str  # as the user gave it, for the logs
    compute_type: str | None = None
    cpu_threads: int | None = None  # per CPU worker; None: the machine's cores shared among them
    engine: type = WhisperTranscriber  # the class that owns the model in the worker


def parse_devices(text: str) -> list[str]:
    """`auto` (two workers on every GPU, else a CPU worker per core, at most 4), `cuda:0,cuda:1`,
    `cuda:0*2` (two workers on one GPU), `cpu`, or `cpu*2`."""
    text = text.strip()
    if text == "auto":
        if gpu_count():
            return [f"cuda:{index}" for index in range(gpu_count()) for _ in range(WORKERS_PER_GPU)]
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


# --- The worker side: one model, loaded once, in a worker process (below) or a Ray actor. ---


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
        return self.engine.multilingual

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    def detect_language(self, unit: WorkUnit) -> Detected:
        return Detected(self.engine.detect_language(unit))

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> Transcribed:
        started = time.monotonic()
        results = self._transcribe_within(units, options)
        return Transcribed(results, self.engine.batch_size, started, time.monotonic())

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
            log.warning("[%s] out of memory with %d windows: batch size now %d", self.label, len(units), self.memory_limit)
            self.engine.batch_size = min(self.engine.batch_size, self.memory_limit)
        # Halves, then halves of those: the same split for the same batch and limit, every time.
        half = (len(units) + 1) // 2
        return self._transcribe_within(units[:half], options) + self._transcribe_within(units[half:], options)


# A worker process holds its ModelWorker in these globals.
_worker: ModelWorker | None = None
_device = ""
_events = None
_load_error: str | None = None


def _load_model(spec: ModelSpec, device: str, cpu_threads: int, workers_on_device: int, events) -> None:
    """Executor initializer: pin the device and load the model, once per worker process."""
    global _worker, _device, _events, _load_error
    _device, _events = device, events
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    local_device = "cpu"
    if device.startswith("cuda:"):
        # The worker sees only its own GPU, which it then calls cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2]
        local_device = "cuda:0"
    started = time.perf_counter()
    try:
        _worker = ModelWorker(spec, local_device, cpu_threads, workers_on_device, label=device)
    except Exception as error:  # reported by _worker_info: an initializer that raises breaks the pool silently
        _load_error = f"{type(error).__name__}: {error}"
        return
    events.put(("loaded", device, spec.name, time.perf_counter() - started, _worker.batch_size))


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker if the server dies without shutting it down (SIGKILL, a crash), so that no
    orphan keeps a GPU's memory."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def _worker_info() -> tuple[int, str | None, bool, int]:
    """(process id, load error or None, whether the model is multilingual, the batch size that fits)."""
    if _worker is None:
        return os.getpid(), _load_error, False, 1
    return os.getpid(), _load_error, _worker.multilingual, _worker.batch_size


def _detect_language(unit: WorkUnit) -> Detected:
    return _worker.detect_language(unit)


def _transcribe_units(units: list[WorkUnit], options: TranscribeOptions) -> Transcribed:
    for unit in units:
        _events.put(("started", _device, unit.index, unit.duration))
    answer = _worker.transcribe(units, options)
    for unit, segments in zip(units, answer.segments):
        _events.put(("done", _device, unit.index, len(segments)))
    return answer


# --- The server side. ---


class _ProcessWorker:
    """One device's worker process, as the dispatcher uses it (a `dispatcher.WorkerHandle`)."""

    def __init__(self, device: str, start: Callable[[str], ProcessPoolExecutor]):
        self.device = device
        self._start = start  # makes a new executor for this device
        self.executor: ProcessPoolExecutor = start(device)

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> Future:
        return self._submit(_transcribe_units, units, options)

    def detect_language(self, unit: WorkUnit) -> Future:
        return self._submit(_detect_language, unit)

    def info(self) -> Future:
        return self._submit(_worker_info)

    def restart(self) -> Future:
        stop_executor(self.executor)
        self.executor = self._start(self.device)
        # Started now, so that its model is warm before the next batch; its answer is the batch size.
        loaded: Future = Future()

        def take(info: Future) -> None:
            if info.cancelled() or info.exception() is not None:
                loaded.set_exception(BrokenProcessPool("the new worker process did not start"))
            else:
                loaded.set_result(info.result()[3])

        self.info().add_done_callback(take)
        return loaded

    def _submit(self, function, *args) -> Future:
        try:
            return self.executor.submit(function, *args)
        except BrokenProcessPool as error:
            # The process died after its last answer came in; the crash is on its way. Failing this
            # call the same way lets one path replace the worker and retry the units.
            failed: Future = Future()
            failed.set_exception(error)
            return failed


def stop_executor(executor: ProcessPoolExecutor) -> None:
    """Stop a worker's process: at once if it is in the middle of a batch."""
    # The standard library offers no public handle on an executor's processes before Python 3.14
    # (`terminate_workers`), and `shutdown` waits for a running batch to end.
    processes = list(executor._processes.values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()


class WorkerPool:
    """Jobs in, segments out, over persistent workers of any kind: what the pipeline, the page and the
    API use. `ParallelTranscriber` runs the workers as local processes, `ray_workers.RayTranscriber`
    as actors on a cluster; each also counts its `model_loads` and gives its `worker_pids()`."""

    def __init__(self, spec: ModelSpec, workers: list[WorkerHandle], batch_sizes: list[int], multilingual: bool):
        self.spec = spec
        self.multilingual = multilingual
        self._handles = workers
        self._closed = False
        self._dispatcher = Dispatcher(workers, batch_sizes)

    @property
    def devices(self) -> list[str]:
        """Each worker's device, such as cuda:0 (or node-2 cuda:1 on a cluster)."""
        return [worker.device for worker in self._handles]

    @property
    def batch_sizes(self) -> list[int]:
        """The batch size of each worker: what its device's free memory fitted when its model loaded,
        smaller after a batch ran out of memory."""
        return self._dispatcher.batch_sizes

    def open_job(self, options: TranscribeOptions, all_workers: bool = True) -> Job:
        """Start a job whose units come later (`add_units`, then `close_job`), so that the first
        units are transcribed while the rest of the file is still being decoded.
        `all_workers=False` keeps the job on one device (single-device mode)."""
        if not self.multilingual:
            options = replace(options, language="en", multilingual=False)
        return self._dispatcher.open_job(options, all_workers)

    def add_units(self, job: Job, units: list[WorkUnit]) -> None:
        self._dispatcher.send(AddUnits(job, units))

    def close_job(self, job: Job) -> None:
        """No more units will come: the job ends when the ones it has are done."""
        self._dispatcher.send(CloseJob(job))

    def submit(self, units: list[WorkUnit], options: TranscribeOptions, all_workers: bool = True) -> Job:
        """A job with all its units known up front."""
        job = self.open_job(options, all_workers)
        self.add_units(job, units)
        self.close_job(job)
        return job

    def cancel(self, job: Job) -> None:
        self._dispatcher.send(CancelJob(job))

    def shutdown(self) -> None:
        """Stop dispatching: jobs still open fail. The kinds of pool then stop their workers."""
        self._closed = True
        self._dispatcher.stop()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


class ParallelTranscriber(WorkerPool):
    """The worker pool on this machine: `devices` such as ["cuda:0", "cuda:1"] or ["cpu", "cpu"]."""

    def __init__(self, spec: ModelSpec, devices: list[str]):
        self.spec = spec
        self._context = multiprocessing.get_context("spawn")
        # SimpleQueue writes each event before put() returns: a worker killed right after loading
        # its model has still reported the load.
        self._events = self._context.SimpleQueue()
        self._loads = 0
        self._loads_changed = threading.Condition()
        self._cpu_threads = spec.cpu_threads or cpu_threads_per_worker(devices.count("cpu"))
        self._listener = threading.Thread(target=self._log_events, name="worker-events", daemon=True)
        self._listener.start()
        # Workers on one GPU share its memory; each CPU worker has its own share of the machine.
        self._workers_on = {device: devices.count(device) if device.startswith("cuda") else 1 for device in devices}
        self._workers = [_ProcessWorker(device, self._new_executor) for device in devices]
        batch_sizes, multilingual = self._wait_until_loaded()
        super().__init__(spec, self._workers, batch_sizes, multilingual)

    @property
    def model_loads(self) -> int:
        """Models loaded since start: one per worker process ever started."""
        with self._loads_changed:
            return self._loads

    def worker_pids(self) -> list[int]:
        return [pid for worker in self._workers for pid in worker.executor._processes]

    def shutdown(self) -> None:
        """Stop every worker process; jobs still open fail."""
        if getattr(self, "_closed", False):
            return
        if hasattr(self, "_dispatcher"):  # not where a model failed to load, before the pool was made
            super().shutdown()
        self._closed = True
        for worker in self._workers:
            stop_executor(worker.executor)
        self._events.put(None)
        self._listener.join(timeout=5)
        self._events.close()

    # Worker processes

    def _new_executor(self, device: str) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._context,
            initializer=_load_model,
            initargs=(
                self.spec,
                device,
                self._cpu_threads if device == "cpu" else 1,
                self._workers_on[device],
                self._events,
            ),
        )

    def _wait_until_loaded(self) -> tuple[list[int], bool]:
        """Start every worker and wait for its model, so that the first job loads nothing; returns
        each worker's batch size, and whether the model is multilingual."""
        batch_sizes, multilingual = [], False
        for worker, info in [(worker, worker.info()) for worker in self._workers]:
            try:
                _pid, error, multilingual, batch_size = info.result()
            except BrokenProcessPool:
                error = "the worker process died while loading the model"
            if error:
                self.shutdown()
                raise ModelError(f"[{worker.device}] could not load the model {self.spec.name!r}: {error}")
            batch_sizes.append(batch_size)
        with self._loads_changed:
            self._loads_changed.wait_for(lambda: self._loads >= len(self._workers), timeout=30)
        return batch_sizes, multilingual

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
                log.debug("[%s] unit %d (%.1f s)", device, *details)
            elif kind == "done":
                log.debug("[%s] unit %d done: %d segments", device, *details)
