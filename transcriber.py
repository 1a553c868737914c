"""The engine: one faster-whisper model on one device, transcribing batches of work units."""

import ctranslate2
import faster_whisper.transcribe
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel

from datatypes import Segment, TranscribeOptions, Word, WorkUnit
from models import fitting_batch_size
from redecoding import COMPRESSION_RATIO_LIMIT, LOGPROB_LIMIT

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's fallback


class WhisperTranscriber:
    """Owns one Whisper model on one device (`cpu`, `cuda` or `cuda:N`), which it may share with
    other workers (`workers_on_device`): its batches then fit a share of the device's free memory."""

    decodes_again = True  # units whose text fails a check of redecoding.py are decoded again

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        compute_type: str | None = None,
        cpu_threads: int = 0,
        workers_on_device: int = 1,
    ):
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
        self.batch_size = fitting_batch_size(
            model_path, kind, compute_type, TranscribeOptions.beam_size, workers_on_device
        )

    @property
    def multilingual(self) -> bool:
        """Whether the model knows more than English."""
        return self.model.model.is_multilingual

    def detect_language(self, unit: WorkUnit) -> tuple[str, float]:
        """The language spoken in `unit`, which is speech only (no leading silence or music), and how sure
        the model is of it (0 to 1)."""
        if not self.multilingual:
            return "en", 1.0
        language, probability, _all = self.model.detect_language(unit.audio)
        return language, float(probability)

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> list[list[Segment]]:
        """Transcribe `units`; one list of segments per unit, in file time. In one batched call, or,
        where each unit's language is detected (`options.multilingual`), in one per language."""
        if not (options.multilingual and self.multilingual):
            return self._transcribe_in(units, options, options.language)
        languages = [self.detect_language(unit)[0] for unit in units]
        results: list[list[Segment]] = [[] for _ in units]
        for language in dict.fromkeys(languages):  # in order of first appearance: the same every time
            positions = [index for index, found in enumerate(languages) if found == language]
            for position, segments in zip(
                positions, self._transcribe_in([units[i] for i in positions], options, language)
            ):
                results[position] = segments
        return results

    def _transcribe_in(
        self, units: list[WorkUnit], options: TranscribeOptions, language: str | None
    ) -> list[list[Segment]]:
        """Transcribe `units` in one batched call, in `language`."""
        # Each unit becomes one clip of one buffer: faster-whisper transcribes every clip as its own
        # 30-s window, in batches, and reports times in the buffer, which map back to the unit.
        clip_starts = [float(start) for start in np.cumsum([0.0] + [unit.duration for unit in units[:-1]])]
        clips = [{"start": start, "end": start + unit.duration} for start, unit in zip(clip_starts, units)]
        segments, _info = self.pipeline.transcribe(
            np.concatenate([unit.audio for unit in units]),
            language=language,
            task=options.task,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            beam_size=options.beam_size,
            batch_size=options.batch_size or self.batch_size,
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
            results[position].append(_in_file_times(segment, units[position], clip_starts[position], language))
        return results

    def decode_again(
        self, unit: WorkUnit, options: TranscribeOptions, language: str | None, prompt: str | None
    ) -> list[Segment]:
        """`unit` decoded on its own, as Whisper does when it takes care: beam search, then sampling at
        rising temperatures while the text fails Whisper's checks, with `prompt` (the text before it) as
        context. Sampling starts from the same seed each time: the same unit gives the same text."""
        ctranslate2.set_random_seed(unit.index + 1)
        segments, _info = self.model.transcribe(
            unit.audio,
            language=language,
            task=options.task,
            initial_prompt=prompt,
            hotwords=options.hotwords,
            beam_size=options.beam_size,
            temperature=TEMPERATURES,
            compression_ratio_threshold=COMPRESSION_RATIO_LIMIT,
            log_prob_threshold=LOGPROB_LIMIT,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,  # as the batched pass decodes: one segment for the unit's window
            word_timestamps=True,
        )
        return [_in_file_times(segment, unit, 0.0, language) for segment in segments if segment.words]


def _in_file_times(
    segment: faster_whisper.transcribe.Segment, unit: WorkUnit, clip_start: float, language: str | None
) -> Segment:
    """faster-whisper's `segment` of `unit`, whose audio began `clip_start` seconds into what it decoded,
    with its words in file times."""
    words = [
        Word(*unit.to_file_times(word.start - clip_start, word.end - clip_start), word.word, float(word.probability))
        for word in segment.words
    ]
    return Segment(
        start=words[0].start,
        end=words[-1].end,
        text=segment.text.strip(),
        words=words,
        avg_logprob=float(segment.avg_logprob),
        no_speech_prob=float(segment.no_speech_prob),
        language=language,
    )
