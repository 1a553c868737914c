"""The checks a unit's text must pass, and which of two decodings of a unit is the better.

Whisper in one batched pass at temperature 0 is fast and nearly always right; where it is not, its text
shows it. A unit whose text fails a check here is decoded again, on its own, with faster-whisper's
temperature fallback (`WhisperTranscriber.decode_again`), and the decoding that fails fewer checks is
kept. The first two checks and their limits are Whisper's own; the others catch what those miss.

Text without punctuation is only reported (`unpunctuated`): on the benchmark's talk, decoding such units
again punctuated two of three, was kept in some runs only, and slowed the job by over a third (bench/RESULTS.md).
"""

import re
import zlib

from cleanup import clean_segments
from datatypes import Segment, WorkUnit

COMPRESSION_RATIO_LIMIT = 2.4  # text this repetitive is a loop (Whisper's and faster-whisper's limit)
LOGPROB_LIMIT = -1.0  # mean log probability of the tokens below this: Whisper was guessing
LOOP_REPEATS = 4  # the same one to eight words this many times in a row
UNPUNCTUATED_WORDS = 30  # this many words in a row without a punctuation mark: Whisper lost the thread
SPAN_PAD_S = 0.3  # the VAD's padding on each side of a span, which holds no speech
MIN_WORDS_PER_SECOND = 0.8  # speakers say 2-3; fewer than this in a span of speech, words were lost
MIN_SPEECH_S = 1.0  # a span with less speech than this is not judged by its word count
PUNCTUATION = re.compile(r"[.,;:!?…。，、；：！？]")


def failed_checks(unit: WorkUnit, segments: list[Segment]) -> list[str]:
    """What is wrong with `segments` as the text of `unit`, in words; empty where nothing is."""
    text = " ".join(segment.text for segment in segments).strip()
    failed = []
    if text and compression_ratio(text) > COMPRESSION_RATIO_LIMIT:
        failed.append(f"compression ratio {compression_ratio(text):.1f} over {COMPRESSION_RATIO_LIMIT}")
    logprobs = [segment.avg_logprob for segment in segments]
    if logprobs and min(logprobs) < LOGPROB_LIMIT:
        failed.append(f"mean log probability {min(logprobs):.2f} under {LOGPROB_LIMIT}")
    words = [word.text.strip() for segment in segments for word in segment.words]
    if _has_loop([word.lower().strip(".,!?") for word in words]):
        failed.append(f"the same words {LOOP_REPEATS} times in a row")
    failed += _speech_without_words(unit, segments)
    return failed


def unpunctuated(segments: list[Segment]) -> str:
    """What is wrong where Whisper wrote many words in a row without a punctuation mark, or ""."""
    longest = _longest_unpunctuated([word.text.strip() for segment in segments for word in segment.words])
    return f"{longest} words without punctuation" if longest >= UNPUNCTUATED_WORDS else ""


def compression_ratio(text: str) -> float:
    """How much zlib shrinks the text: repeated text shrinks much (as Whisper computes it)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def _has_loop(words: list[str]) -> bool:
    for length in range(1, 9):
        for start in range(len(words) - length * LOOP_REPEATS + 1):
            phrase = words[start : start + length]
            if all(words[start + length * k : start + length * (k + 1)] == phrase for k in range(1, LOOP_REPEATS)):
                return True
    return False


def _longest_unpunctuated(words: list[str]) -> int:
    longest = run = 0
    for word in words:
        run = 0 if PUNCTUATION.search(word) else run + 1
        longest = max(longest, run)
    return longest


def _speech_without_words(unit: WorkUnit, segments: list[Segment]) -> list[str]:
    """Spans where the VAD heard speech and Whisper wrote no word, or far too few."""
    failed = []
    for start, end in unit.spans:
        speech_s = end - start - 2 * SPAN_PAD_S
        if speech_s < MIN_SPEECH_S:
            continue
        words = sum(start <= (word.start + word.end) / 2 < end for segment in segments for word in segment.words)
        if words < MIN_WORDS_PER_SECOND * speech_s:
            failed.append(f"{words} words in {speech_s:.1f} s of speech at {start:.1f} s")
    return failed


def is_better(candidate: list[Segment], first: list[Segment], unit: WorkUnit) -> bool:
    """Whether `candidate` is a better text for `unit` than `first`: what of it will be shown (what
    `cleanup.py` keeps: a phantom "Thank you." in the padding after the speech decides nothing) fails
    fewer checks, or as many with a higher mean log probability."""
    candidate, first = clean_segments(candidate)[0], clean_segments(first)[0]
    candidate_failures, first_failures = len(failed_checks(unit, candidate)), len(failed_checks(unit, first))
    if candidate_failures != first_failures:
        return candidate_failures < first_failures
    return _mean_logprob(candidate) > _mean_logprob(first)


def _mean_logprob(segments: list[Segment]) -> float:
    return sum(segment.avg_logprob for segment in segments) / len(segments) if segments else float("-inf")
