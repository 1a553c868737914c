"""What the web app and the command line both do before they transcribe: logging, the SIGTERM handler,
worker pools built from the settings, and each job's options checked against its model. The shells
keep only their interface (the page's widgets, the command's flags)."""

import logging
import signal
import sys

from datatypes import TranscribeOptions
from models import LANGUAGE_CODES, can_translate, check_prompt, gpu_count, knows_only_english, model_label, resolve_model
from parallel_transcriber import ModelSpec, ParallelTranscriber, WorkerPool, parse_devices


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Log lines on stderr: model loads, jobs and warnings; each work unit too when `verbose`."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
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
    if ray_address:
        from ray_workers import RayTranscriber  # Ray is imported only for a cluster

        return RayTranscriber(spec, devices, ray_address)
    chosen = parse_devices(devices)
    gpus = gpu_count()
    for device in chosen:
        if device.startswith("cuda:") and int(device[5:]) >= gpus:
            if gpus == 0:
                raise ValueError(f"no NVIDIA GPU found for {device}; use --devices cpu (or WHISPER_DEVICES=cpu)")
            raise ValueError(f"there is no {device}: this machine has {gpus} GPU(s), cuda:0 to cuda:{gpus - 1}")
    return ParallelTranscriber(spec, chosen)


def job_options(
    spec: ModelSpec, language: str = "auto", task: str = "transcribe", initial_prompt: str | None = None,
    hotwords: str | None = None, batch_size: int | None = None, multilingual: bool = False,
) -> TranscribeOptions:
    """A job's options as a user gives them ("auto" language, empty texts for none), checked against
    the model's languages and prompt room. `multilingual`: each part's language detected, for
    recordings that change language. Raises ValueError with a message for the user."""
    if language != "auto" and language not in LANGUAGE_CODES:
        raise ValueError(f"unknown language {language!r}: give a code such as en, de, fr, zh or ja, or auto")
    if language not in ("auto", "en") and knows_only_english(spec.model_path):
        raise ValueError(f"the model {spec.name} is English-only: for {language}, choose a multilingual model such as base")
    if multilingual and knows_only_english(spec.model_path):
        raise ValueError(f"the model {spec.name} is English-only: for several languages, choose a multilingual model such as base")
    if multilingual and language != "auto":
        raise ValueError(f"several languages are detected part by part: leave the language at auto, not {language}")
    options = TranscribeOptions(
        language=None if language == "auto" else language, task=task,
        initial_prompt=initial_prompt or None, hotwords=hotwords or None, batch_size=batch_size,
        multilingual=multilingual,
    )
    check_prompt(spec.model_path, options)
    return options


def as_sentence(message: str) -> str:
    """A ValueError's message (written to follow "error: ") as a sentence for the page or the API."""
    return message[:1].upper() + message[1:] + "."


def check_task(pool: WorkerPool, task: str) -> None:
    """Raise ValueError where `task` is translate and the pool's model cannot translate."""
    if task == "translate" and not can_translate(pool.spec.name, pool.multilingual):
        raise ValueError(f"the model {pool.spec.name} cannot translate; choose a multilingual model such as large-v3")
