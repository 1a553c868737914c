"""Between Whisper and the cues: drop invented text, collapse loops, and convert Chinese script.

Whisper sometimes writes text where nobody speaks (most often the closing lines of the videos it was
trained on) and sometimes repeats a phrase in a loop. What is dropped, and why, is kept for the JSON
output and the log, so that nothing disappears silently.
"""

import functools
import re
from dataclasses import replace

import opencc

from datatypes import Dropped, Segment, Word

# Whisper's own rule for "no speech here": likely silence, and the text it wrote is not likely either.
NO_SPEECH_PROB = 0.6
LOW_AVG_LOGPROB = -1.0
# A phantom line is dropped only when the model itself doubts it: real speech saying "thanks for
# watching" stays.
DOUBTFUL_NO_SPEECH_PROB = 0.2
DOUBTFUL_WORD_PROBABILITY = 0.6
PHANTOM_LINES = re.compile(
    r"thanks? (you )?(so much )?for watching|please subscribe|like and subscribe|subtitles? by|"
    r"captions? by|transcribed by|translated by|amara\.org|"
    r"字幕由.*提供|字幕提供|请不吝点赞|請不吝點贊|订阅|訂閱|感谢观看|感謝觀看|ご視聴ありがとうございました",
    re.IGNORECASE,
)
# A phrase of up to this many words repeated this many times in a row is a decoding loop (a single
# word needs one repeat more).
LOOP_PHRASE_WORDS = 8
LOOP_REPEATS = 3

CHINESE_SCRIPTS = {
    "Taiwan Traditional": "s2twp",  # with Taiwan phrasing: 软件 -> 軟體
    "Hong Kong Traditional": "s2hk",
    "Simplified": "t2s",
    "unchanged": None,
}
DEFAULT_CHINESE_SCRIPT = "Taiwan Traditional"


def clean_segments(segments: list[Segment]) -> tuple[list[Segment], list[Dropped]]:
    """The segments worth showing, with loops collapsed; and what was dropped, with the reason."""
    kept: list[Segment] = []
    dropped: list[Dropped] = []
    for segment in segments:
        reason = _why_invented(segment)
        if reason:
            dropped.append(Dropped(segment.start, segment.end, segment.text, reason))
            continue
        words = collapse_loops(segment.words)
        if len(words) < len(segment.words):
            removed = len(segment.words) - len(words)
            dropped.append(
                Dropped(segment.start, segment.end, segment.text, f"a loop: {removed} repeated words removed")
            )
            segment = replace(segment, words=words, text="".join(w.text for w in words).strip(), end=words[-1].end)
        kept.append(segment)
    return kept, dropped


def _why_invented(segment: Segment) -> str | None:
    if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_AVG_LOGPROB:
        return (
            f"no speech (no-speech probability {segment.no_speech_prob:.2f}, "
            f"avg log-probability {segment.avg_logprob:.2f})"
        )
    if PHANTOM_LINES.search(segment.text):
        mean_probability = sum(w.probability for w in segment.words) / max(len(segment.words), 1)
        if segment.no_speech_prob > DOUBTFUL_NO_SPEECH_PROB or mean_probability < DOUBTFUL_WORD_PROBABILITY:
            return f"a well-known phantom line the model doubted (mean word probability {mean_probability:.2f})"
    return None


def collapse_loops(words: list[Word]) -> list[Word]:
    """Keep one copy of any phrase repeated LOOP_REPEATS or more times in a row."""
    keys = [_word_key(word) for word in words]
    kept: list[Word] = []
    position = 0
    while position < len(words):
        for size in range(1, LOOP_PHRASE_WORDS + 1):
            phrase = keys[position : position + size]
            repeats = 1
            while keys[position + repeats * size : position + (repeats + 1) * size] == phrase:
                repeats += 1
            # "no, no, no" is speech; the same single word four times is more likely a loop.
            if len(phrase) == size and repeats >= LOOP_REPEATS + (size == 1):
                kept.extend(words[position : position + size])
                position += repeats * size
                break
        else:
            kept.append(words[position])
            position += 1
    return kept


def _word_key(word: Word) -> str:
    return re.sub(r"[^\w]", "", word.text.lower())


@functools.cache
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


def convert_chinese_script(segments: list[Segment], script: str) -> list[Segment]:
    """Convert Chinese text to `script` (a key of CHINESE_SCRIPTS), keeping the word timings."""
    config = CHINESE_SCRIPTS[script]
    if config is None:
        return segments
    converter = _converter(config)
    converted = []
    for segment in segments:
        texts = [word.text for word in segment.words]
        joined = converter.convert("".join(texts))
        if len(joined) == sum(map(len, texts)):
            # Convert the whole line at once, so that phrases spanning words convert as phrases,
            # then cut it back into the same words.
            pieces, start = [], 0
            for text in texts:
                pieces.append(joined[start : start + len(text)])
                start += len(text)
        else:
            pieces = [converter.convert(text) for text in texts]
        words = [replace(word, text=piece) for word, piece in zip(segment.words, pieces)]
        converted.append(replace(segment, words=words, text=converter.convert(segment.text)))
    return converted
