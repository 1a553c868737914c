"""The data that flows through the pipeline, as plain dataclasses:

    file -> audio -> WorkUnit (speech) -> Segment and Word (transcribed) -> Cue -> Transcript -> subtitle file

This module is the ground floor: it imports only the standard library and numpy, so that the cue rules,
the cleanup and the writers can be used (and tested) without loading Whisper or CTranslate2.
"""

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000  # what Whisper and Silero hear: mono, 16 kHz
# The audio is decoded, and handed on to the VAD, in blocks of one minute.
BLOCK_SAMPLES = 60 * SAMPLE_RATE
# Silence put between the speech spans of a work unit, so that Whisper hears a pause where the file had
# one and its word timings do not run from one span into the next.
JOINT_SILENCE_S = 0.3
# A word Whisper gave less than this probability to is marked for a reviewer to read first.
UNSURE_PROBABILITY = 0.5
# Languages written without spaces between words: their cues are narrower, and their words join as they are.
LANGUAGES_WITHOUT_SPACES = ("zh", "ja", "yue")


@dataclass(frozen=True)
class TranscribeOptions:
    """How Whisper is asked to transcribe a job's units (checked by `jobs.check_request`)."""

    language: str | None = None  # None: detect once per file from its speech
    multilingual: bool = False  # detect the language of each work unit: recordings that change language
    task: str = "transcribe"  # or "translate" (to English)
    initial_prompt: str | None = None
    hotwords: str | None = None
    batch_size: int | None = None  # work units per batched call; None: as many as fit each device
    beam_size: int = 5


@dataclass
class WorkUnit:
    """Speech spans of a file joined together: what one Whisper window transcribes."""

    index: int  # position in the file, counting from 0
    spans: list[tuple[float, float]]  # (start, end) in seconds of the file, in order
    audio: np.ndarray  # the spans' samples, with JOINT_SILENCE_S of silence between them

    @property
    def duration(self) -> float:
        """Seconds of audio in the unit, the joining silences included."""
        return len(self.audio) / SAMPLE_RATE

    def to_file_times(self, start: float, end: float) -> tuple[float, float]:
        """Map a stretch of the unit's audio (a word, say) to its times in the file.

        A word belongs to the span that holds its middle; one whose middle falls in the silence
        between two spans belongs to the later span (Whisper stretches a word's start back over the
        pause before it). The word is then kept inside its span.
        """
        start, end = float(start), float(end)
        middle = (start + end) / 2
        offset = 0.0
        for index, (span_start, span_end) in enumerate(self.spans):
            length = span_end - span_start
            is_last = index + 1 == len(self.spans)
            if is_last or middle < offset + length + JOINT_SILENCE_S:
                if not is_last and middle >= offset + length:  # in the silence after this span
                    offset += length + JOINT_SILENCE_S
                    span_start, span_end = self.spans[index + 1]
                    length = span_end - span_start
                break
            offset += length + JOINT_SILENCE_S
        inside_start = min(max(start - offset, 0.0), length)
        inside_end = min(max(end - offset, inside_start), length)
        return round(span_start + inside_start, 3), round(span_start + inside_end, 3)


@dataclass
class Word:
    """One word as Whisper heard it, with its time in the file and how sure Whisper was."""

    start: float  # seconds in the file
    end: float
    text: str  # as Whisper wrote it, with its leading space
    probability: float


@dataclass
class Segment:
    """A stretch of text Whisper wrote in one go, with its words."""

    start: float  # seconds in the file
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    language: str | None = None  # the language it was transcribed in
    # Where the unit's text failed a check of redecoding.py: what failed, and what was done about it.
    checks: str = ""


@dataclass
class Dropped:
    """Text Whisper wrote that is not shown, and why."""

    start: float
    end: float
    text: str
    reason: str


@dataclass
class Cue:
    """One subtitle: when it shows, its lines, and the words it holds."""

    start: float
    end: float
    lines: list[str]
    words: list[Word]

    @property
    def text(self) -> str:
        """The cue's lines, one under the other."""
        return "\n".join(self.lines)


@dataclass
class Transcript:
    """Everything one file's job gave: its segments, its cues, what was dropped, and how it ran."""

    source: str  # the input's file name
    duration: float  # seconds of audio in the file
    speech: float  # seconds of it that are speech
    language: str
    segments: list[Segment]
    cues: list[Cue]
    dropped: list[Dropped]  # text Whisper wrote that is not shown, with the reason
    stage_seconds: dict[str, float]  # decode+vad (overlapping transcription), transcribe (the rest), cues
    workers: int
    first_batch_s: float = 0.0  # from the job's start until a worker began its first batch
    workers_idle_s: float = 0.0  # the job's workers without a batch of it, added over workers
    # Each batch: device, units, when it began and ended, in seconds from the job's start.
    batch_times: list[tuple[str, int, float, float]] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        """Seconds the job took, end to end."""
        return sum(self.stage_seconds.values())

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of work."""
        return self.duration / max(self.wall_seconds, 1e-9)
