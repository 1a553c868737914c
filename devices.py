"""Which devices the local workers run on: `--devices` parsed, and checked against this machine."""

import os

from models import gpu_count

MAX_AUTO_CPU_WORKERS = 4
# Two workers share each GPU under `auto`: while one computes its next batch's features on the CPU
# and takes in its audio, the other keeps the GPU busy (on an H100, 60 minutes end to end in 5.3 s
# against 6.9 s with one worker; bench/RESULTS.md).
WORKERS_PER_GPU = 2


def parse_devices(text: str) -> list[str]:
    """One device per worker, from `auto` (two workers on every GPU, else a CPU worker per core, at most
    4), `cuda:0,cuda:1`, `cuda:0*2` (two workers on one GPU), `cpu`, or `cpu*2`. Raises ValueError."""
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


def local_devices(text: str) -> list[str]:
    """`parse_devices`, each GPU checked to exist on this machine. Raises ValueError."""
    chosen = parse_devices(text)
    gpus = gpu_count()
    for device in chosen:
        if device.startswith("cuda:") and int(device[5:]) >= gpus:
            if gpus == 0:
                raise ValueError(f"no NVIDIA GPU found for {device}; use --devices cpu (or WHISPER_DEVICES=cpu)")
            raise ValueError(f"there is no {device}: this machine has {gpus} GPU(s), cuda:0 to cuda:{gpus - 1}")
    return chosen
