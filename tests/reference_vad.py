"""The silero-vad package's own speech spans, the reference our VAD must match, and ours in samples.

Shared by the tests and bench/bench.py; it imports torch, so nothing in the app imports it.
"""

from dataclasses import asdict

import numpy as np

from datatypes import SAMPLE_RATE, WorkUnit
from vad_splitter import VadOptions


def silero_spans(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """`silero_vad.get_speech_timestamps` on `audio` with our options, as (start, end) samples."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    spans = get_speech_timestamps(
        torch.from_numpy(audio),
        load_silero_vad(),
        **asdict(options),
    )
    return [(span["start"], span["end"]) for span in spans]


def unit_spans(units: list[WorkUnit]) -> list[tuple[int, int]]:
    """The speech spans inside our work units, as (start, end) samples of the file."""
    return [(round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)) for unit in units for start, end in unit.spans]
