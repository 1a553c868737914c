"""The workers on this machine: one persistent worker process per device, each with its model loaded once,
serving every job.

Each device gets a `ProcessPoolExecutor(max_workers=1)` started with `spawn`, whose initializer loads
the Whisper model into a worker global. The pools live from server start to shutdown: a job never
loads a model. Which batch goes to which worker is the dispatcher's business (`dispatcher.py`).
"""

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from datatypes import TranscribeOptions, WorkUnit
from models import ModelError, cpu_threads_per_worker
from worker import ModelSpec, ModelWorker
from worker_pool import WorkerPool
from worker_protocol import Detected, Transcribed

log = logging.getLogger("whisper_for_subs")

SHARED_MEMORY = "/dev/shm"  # where Linux keeps `SharedMemory` blocks


# --- The process side: a worker process holds its ModelWorker in these globals. ---

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


def _transcribe_shared(
    block_name: str, lengths: list[int], units: list[WorkUnit], options: TranscribeOptions
) -> Transcribed:
    """Transcribe `units`, whose samples (`lengths` of them each) wait in shared memory, in order."""
    block = SharedMemory(name=block_name)
    try:
        starts = np.cumsum([0, *lengths])
        units = [
            replace(unit, audio=np.frombuffer(block.buf, np.float32, length, 4 * int(start)).copy())
            for unit, length, start in zip(units, lengths, starts)
        ]
    finally:
        block.close()
    return _transcribe_units(units, options)


def _transcribe_units(units: list[WorkUnit], options: TranscribeOptions) -> Transcribed:
    for unit in units:
        _events.put(("started", _device, unit.index, unit.duration))
    answer = _worker.transcribe(units, options)
    for unit, segments in zip(units, answer.segments):
        _events.put(("done", _device, unit.index, len(segments)))
    return answer


# --- The server side. ---


class _ProcessWorker:
    """One device's worker process, as the dispatcher uses it (a `worker_protocol.WorkerHandle`)."""

    def __init__(self, device: str, start: Callable[[str], ProcessPoolExecutor]):
        self.device = device
        self._start = start  # makes a new executor for this device
        self.executor: ProcessPoolExecutor = start(device)

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> Future:
        # The samples go through shared memory: a GPU's batch of 32 units is 60 MB, which through the
        # executor's pipe would only start to reach the worker once it had finished the batch before
        # (its second batch in flight waits in the pipe), and would leave the GPU idle meanwhile.
        if not _shared_memory_has_room(sum(4 * len(unit.audio) for unit in units)):
            return self._submit(_transcribe_units, units, options)  # through the pipe: slower, but sure
        block, lengths = _share_samples(units)
        without_samples = [replace(unit, audio=np.empty(0, np.float32)) for unit in units]
        future = self._submit(_transcribe_shared, block.name, lengths, without_samples, options)
        future.add_done_callback(lambda _done: _release(block))
        return future

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


def _shared_memory_has_room(size: int) -> bool:
    """Whether shared memory can take `size` bytes, twice over. A container's is 64 MB unless it is given
    more (`shm_size`), and writing past its end would kill the server (SIGBUS), not raise an error."""
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize >= 2 * size


def _share_samples(units: list[WorkUnit]) -> tuple[SharedMemory, list[int]]:
    """A shared memory block holding the samples of `units` one after another, and their lengths."""
    lengths = [len(unit.audio) for unit in units]
    block = SharedMemory(create=True, size=4 * max(sum(lengths), 1))
    try:
        offset = 0
        for unit in units:
            np.ndarray(len(unit.audio), np.float32, block.buf, offset)[:] = unit.audio
            offset += 4 * len(unit.audio)
    except BaseException:
        _release(block)
        raise
    return block, lengths


def _release(block: SharedMemory) -> None:
    """Free a batch's shared samples once its worker has answered (or died)."""
    block.close()
    block.unlink()


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
        """Each worker's process id."""
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
