"""What the web app and the command line both do before they transcribe: logging, the SIGTERM handler, and
worker pools built from the settings. The doors keep only their interface."""

import logging
import signal
import sys
import threading

from devices import local_devices
from models import default_models, model_label, resolve_model
from parallel_transcriber import ParallelTranscriber
from settings import Config
from vad_splitter import load_vad
from worker import ModelSpec
from worker_pool import WorkerPool


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Log lines on stderr: model loads, jobs and warnings; each work unit too when `verbose`."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    if verbose and not quiet:
        logging.getLogger("whisper_for_subs").setLevel(logging.DEBUG)


def unwind_on_sigterm() -> None:
    """Make SIGTERM (docker stop, kill) unwind like Ctrl-C, through every `finally`, so that the
    worker processes are stopped; the process then exits with 143, as one killed by SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def model_spec(name: str | None, compute_type: str | None = None) -> ModelSpec:
    """What every worker will load for the model `name` (None: the default), resolved (joined or
    downloaded if need be) before any worker starts. Raises ModelError."""
    return ModelSpec(resolve_model(name), name=model_label(name), compute_type=compute_type)


def start_pool(spec: ModelSpec, devices: str, ray_address: str | None = None) -> WorkerPool:
    """One worker per device of `devices` (auto, cpu*2, cuda:0,cuda:1 ...), each with the model loaded;
    with `ray_address`, Ray actors across that cluster instead (auto, cpu*N, cuda*N). Raises
    ValueError for a device this machine does not have."""
    vad = threading.Thread(target=load_vad, name="vad-load", daemon=True)  # while the workers load theirs
    vad.start()
    try:
        if ray_address:
            from ray_workers import RayTranscriber  # Ray is imported only for a cluster

            return RayTranscriber(spec, devices, ray_address)
        return ParallelTranscriber(spec, local_devices(devices))
    finally:
        vad.join()


def start_pools(config: Config) -> dict[str, WorkerPool]:
    """One worker pool per configured model (the default ones where none is), each loaded on every device
    before anything is served; the first is the default. Raises ModelError or ValueError."""
    pools: dict[str, WorkerPool] = {}
    try:
        for name in config.model or default_models():
            pools[name] = start_pool(model_spec(name, config.compute_type), config.devices, config.ray_address)
    except BaseException:
        for pool in pools.values():
            pool.shutdown()
        raise
    return pools
