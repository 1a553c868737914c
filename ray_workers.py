"""Workers on many machines: the same persistent model workers as Ray actors across a cluster.

Each actor loads its model once, in its constructor, and keeps it for the server's life: the contract of
the local `ProcessPoolExecutor(max_workers=1)` per GPU. The dispatcher sees actors and local processes
alike (`worker_protocol.WorkerHandle`); Ray restarts an actor that dies (at most MAX_RESTARTS times), and
the dispatcher sends its units again. Units travel to the actors as samples, through Ray's object
store, never as paths. Ray is imported only when a cluster address is given.
"""

import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

import ray
from ray.exceptions import ActorUnavailableError, NodeDiedError, RayActorError, WorkerCrashedError

from datatypes import TranscribeOptions, WorkUnit
from models import resolve_model
from worker import ModelSpec, ModelWorker
from worker_pool import WorkerPool
from worker_protocol import Detected, Transcribed

log = logging.getLogger("whisper_for_subs")

MAX_RESTARTS = 3  # Ray's restarts of one actor: its process dying, or its node
RESCAN_S = 10.0  # how often `auto` looks for GPUs (or CPUs) that joined the cluster
UNAVAILABLE_RETRY_S = 1.0  # how soon to ask again an actor that Ray is restarting
# What an actor's death looks like to a call that was running on it.
_DIED = (RayActorError, WorkerCrashedError, NodeDiedError)


class _Actor:
    """One worker of the cluster (a Ray actor): a model loaded once on its GPU, or on one CPU core."""

    def __init__(self, spec: ModelSpec, kind: str):
        # Ray shows the actor only its own GPU (CUDA_VISIBLE_DEVICES), which it then calls cuda:0.
        self.device = f"cuda:{ray.get_gpu_ids()[0]}" if kind == "cuda" else "cpu"
        started = time.perf_counter()
        if not Path(spec.model_path).exists():  # downloaded on the head's machine: fetch it here too
            spec = replace(spec, model_path=resolve_model(spec.name))
        self.worker = ModelWorker(spec, "cuda:0" if kind == "cuda" else "cpu", cpu_threads=1, label=self.device)
        self.load_s = time.perf_counter() - started

    def info(self) -> dict:
        context = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "node": context.get_node_id(),
            "device": self.device,
            "load_s": self.load_s,
            "multilingual": self.worker.multilingual,
            "batch_size": self.worker.batch_size,
        }

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> Transcribed:
        return self.worker.transcribe(units, options)

    def detect_language(self, unit: WorkUnit) -> Detected:
        return self.worker.detect_language(unit)


class _RayWorker:
    """One actor, as the dispatcher uses it (a `worker_protocol.WorkerHandle`)."""

    def __init__(self, actor, pool: "RayTranscriber"):
        self.actor = actor
        self.device = "?"  # "node-2 cuda:1" once the actor has said where it runs
        self.pid = 0  # of the actor's process, once it has said
        self.loads = 0  # models its processes have loaded: one each
        self._pool = pool

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> Future:
        for unit in units:
            log.debug("[%s] unit %d (%.1f s)", self.device, unit.index, unit.duration)
        return _future(self.actor.transcribe.remote(units, options))

    def detect_language(self, unit: WorkUnit) -> Future:
        return _future(self.actor.detect_language.remote(unit))

    def info(self) -> Future:
        """The actor's `info()`, once it is up (after a restart, once Ray has placed it again)."""
        answer = _future(self.actor.info.remote())
        answer.add_done_callback(lambda done: done.exception() is None and self._pool.took_info(self, done.result()))
        return answer

    def restart(self) -> Future:
        # Ray restarts the actor by itself; the future waits until it is back, however long it takes
        # to find room for it (its node may be gone), and the dispatcher keeps work from it meanwhile.
        loaded: Future = Future()
        self._when_back(loaded)
        return loaded

    def _when_back(self, loaded: Future) -> None:
        """Give `loaded` the actor's batch size once it answers again. While Ray is restarting it, a call
        fails with ActorUnavailableError ("may be available later"): then ask again; it fails for good
        only when Ray has given up on the actor."""

        def take(answer: Future) -> None:
            error = answer.exception()
            if isinstance(error, ActorUnavailableError):
                threading.Timer(UNAVAILABLE_RETRY_S, self._when_back, [loaded]).start()
            elif error is not None:
                loaded.set_exception(BrokenProcessPool(f"the Ray actor did not come back: {type(error).__name__}"))
            else:
                self._pool.took_info(self, answer.result())
                loaded.set_result(answer.result()["batch_size"])

        self.actor.info.remote().future().add_done_callback(take)


def _future(ref: "ray.ObjectRef") -> Future:
    """A call's answer as a standard future; an actor that died on it fails it with BrokenProcessPool,
    as a dead worker process does, so that the dispatcher has one way to retry."""
    answer: Future = Future()

    def take(done: Future) -> None:
        error = done.exception()
        if error is None:
            answer.set_result(done.result())
        elif isinstance(error, _DIED):
            answer.set_exception(BrokenProcessPool(f"the Ray actor died: {type(error).__name__}"))
        else:
            answer.set_exception(error)

    ref.future().add_done_callback(take)
    return answer


def _kill(workers: list[_RayWorker]) -> None:
    for worker in workers:
        ray.kill(worker.actor, no_restart=True)


_pools_connected = 0  # pools (one per model) sharing this process's connection to the cluster
_connection_lock = threading.Lock()


def _connect(address: str) -> None:
    """Connect this process to the cluster, once for all its pools. Raises ValueError where no cluster
    answers (Ray itself would keep trying for minutes)."""
    global _pools_connected
    with _connection_lock:
        if not _pools_connected:
            _check_reachable(address)
            # The actors import this project's modules: every node runs the same code at the same
            # path (the same Docker image, or the same checkout).
            try:
                ray.init(
                    address=address,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}},
                )
            except ConnectionError as error:  # `auto` on a machine that belongs to no cluster
                raise ValueError(f"no Ray cluster found at {address}: {error}") from None
        _pools_connected += 1


def _check_reachable(address: str) -> None:
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        raise ValueError(f"no Ray cluster answers at {address} ({error}); give its head's host:port") from None


def _disconnect() -> None:
    global _pools_connected
    with _connection_lock:
        _pools_connected -= 1
        if not _pools_connected:
            ray.shutdown()


def parse_cluster_devices(text: str) -> tuple[str, int | None]:
    """`auto` (an actor per GPU of the cluster, else per CPU, kept up to date as nodes join), `cpu*N`
    (N single-thread actors anywhere) or `cuda*N` (N actors of one GPU each): (kind, count or None)."""
    name, _, copies = text.strip().partition("*")
    if name == "auto" and not copies:
        return "auto", None
    if name in ("cpu", "cuda") and (copies.isdigit() or not copies) and int(copies or 1) > 0:
        return name, int(copies or 1)
    raise ValueError(f"with a Ray cluster, devices are auto, cpu*N or cuda*N, not {text!r}")


class RayTranscriber(WorkerPool):
    """The worker pool on a Ray cluster (`address`: host:port, or `auto` for the cluster this machine
    belongs to)."""

    def __init__(self, spec: ModelSpec, devices: str, address: str):
        self.spec = spec
        self._kind, count = parse_cluster_devices(devices)
        _connect(address)
        self._nodes = {ray.get_runtime_context().get_node_id(): "node-1"}  # this machine first
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._starting: list[_RayWorker] = []  # actors for room that joined the cluster, not yet up
        self._remote = ray.remote(_Actor)
        if self._kind == "auto":
            self._kind = "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"
            count = self._wanted()
        workers = [self._new_worker() for _ in range(count)]
        infos = [worker.info() for worker in workers]
        try:
            answers = [info.result(timeout=600) for info in infos]
        except Exception as error:
            _kill(workers)
            _disconnect()
            raise RuntimeError(f"the Ray actors did not start: {error}") from None
        super().__init__(
            spec, workers, [answer["batch_size"] for answer in answers], multilingual=answers[0]["multilingual"]
        )
        if devices.strip() == "auto":
            threading.Thread(target=self._watch_for_new_nodes, name="ray-nodes", daemon=True).start()

    # Public interface, beyond the pool's

    @property
    def model_loads(self) -> int:
        """Models loaded since start: one per actor process ever started."""
        with self._lock:
            return sum(worker.loads for worker in self._handles)

    def worker_pids(self) -> list[int]:
        """Each actor's process, in the order of `devices` (0 for one that has not said yet)."""
        with self._lock:
            return [worker.pid for worker in self._handles]

    def shutdown(self) -> None:
        """Stop dispatching, and every actor; jobs still open fail."""
        if self._closed:
            return
        self._stopped.set()
        super().shutdown()
        _kill(self._handles + self._starting)
        _disconnect()

    # Actors

    def _new_worker(self) -> _RayWorker:
        resources = {"num_gpus": 1} if self._kind == "cuda" else {"num_cpus": 1}
        actor = self._remote.options(
            **resources, max_restarts=MAX_RESTARTS, max_task_retries=0, scheduling_strategy="SPREAD"
        ).remote(self.spec, self._kind)
        return _RayWorker(actor, self)

    def took_info(self, worker: _RayWorker, info: dict) -> None:
        """An actor said it is up: name it after its node and device, and count its model load."""
        with self._lock:
            node = self._nodes.setdefault(info["node"], f"node-{len(self._nodes) + 1}")
            worker.device = f"{node} {info['device']}"
            if worker.pid != info["pid"]:  # a new process: its constructor loaded the model
                worker.pid, worker.loads = info["pid"], worker.loads + 1
                log.info(
                    "[%s] model loaded: %s (%.1f s), batch size %d",
                    worker.device,
                    self.spec.name,
                    info["load_s"],
                    info["batch_size"],
                )

    def _wanted(self) -> int:
        """Actors `auto` wants: one per GPU of the cluster (per CPU where it has no GPU)."""
        return int(ray.cluster_resources().get("GPU" if self._kind == "cuda" else "CPU", 0))

    def _watch_for_new_nodes(self) -> None:
        """Give GPUs (or CPUs) that joined the cluster actors of their own, without a restart."""
        while not self._stopped.wait(RESCAN_S):
            for _ in range(self._wanted() - len(self._handles) - len(self._starting)):
                worker = self._new_worker()
                self._starting.append(worker)
                worker.info().add_done_callback(lambda done, worker=worker: self._joined(worker, done))

    def _joined(self, worker: _RayWorker, info: Future) -> None:
        """A new actor is up (its model loaded): from now on it serves, and is listed."""
        self._starting.remove(worker)
        if info.exception() is None and not self._stopped.is_set():
            self._handles.append(worker)
            self._dispatcher.add_worker(worker, info.result()["batch_size"])
