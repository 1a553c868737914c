"""The silero-vad package's own speech spans, the reference our VAD must match, and ours in samples.

Shared by the tests and bench/bench.py; it imports torch, so nothing in the app imports it.
"""

import numpy as np

from audio import SAMPLE_RATE
from vad_splitter import VadOptions, WorkUnit


def silero_spans(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """`silero_vad.get_speech_timestamps` on `audio` with our options, as (start, end) samples."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    spans = get_speech_timestamps(
        torch.from_numpy(audio),
        load_silero_vad(),
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_ms,
        max_speech_duration_s=options.max_unit_s,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    return [(span["start"], span["end"]) for span in spans]


def unit_spans(units: list[WorkUnit]) -> list[tuple[int, int]]:
    """The speech spans inside our work units, as (start, end) samples of the file."""
    return [(round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)) for unit in units for start, end in unit.spans]
