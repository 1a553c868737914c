"""Turn timed words into subtitle cues that people can read.

The rules follow common broadcast practice: short balanced lines, cues that stay long enough to be read
but never linger over silence, a gap between cues, and a new cue at each sentence end.
"""

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from datatypes import Cue, Segment, Word

SENTENCE_ENDS = (".", "?", "!", "。", "？", "！", "…")
CLAUSE_ENDS = (",", ";", ":", "，", "；", "：", "、")
# A pause this long between two words is a natural place for a new cue; after a comma, a shorter one.
PAUSE_BREAK_S = 1.0
CLAUSE_PAUSE_BREAK_S = 0.3
# Words whose period is no sentence end: titles before names, and short forms read inside a sentence,
# compared without case and without the last period. English, German, French, Spanish, Italian,
# Portuguese and Dutch; short forms of two letters with periods ("z.B.", "т.е.") are INITIALS.
ABBREVIATIONS = {
    "dr",
    "mr",
    "mrs",
    "ms",
    "prof",
    "st",
    "jr",
    "sr",
    "vs",
    "e.g",
    "i.e",
    "approx",  # English
    "hr",
    "fr",
    "bzw",
    "ca",
    "vgl",
    "evtl",
    "ggf",
    "inkl",
    "sog",  # German (Herr, Frau, ...)
    "mme",
    "mlle",
    "env",  # French (Madame, Mademoiselle, environ)
    "sra",
    "srta",
    "dra",
    "ud",
    "uds",  # Spanish (Sra., Dra. in Portuguese too)
    "sig",
    "sigra",
    "dott",
    "ing",
    "avv",  # Italian
    "dhr",
    "mevr",
    "ir",  # Dutch
}
# Short forms that are no sentence end only before a number ("No. 5", "Nr. 3", "p. 12"): "I said no."
# ends one.
BEFORE_NUMBERS = {"no", "nr", "nº", "p", "pp", "pág", "s", "art", "fig", "vol"}
INITIALS = re.compile(r"(?:[^\W\d_]\.){2,}")  # U.S., U.K., J.R.R.


@dataclass(frozen=True)
class CueOptions:
    """The cue rules: line width, lines, times on screen, gaps and reading speed."""

    max_line_chars: int = 42
    max_lines: int = 2
    min_duration: float = 0.8  # seconds on screen at least, borrowed from silence after the cue
    max_duration: float = 7.0
    min_gap: float = 0.08  # between one cue's end and the next one's start
    max_linger: float = 0.5  # how long a cue may stay after its last word is spoken
    max_lead_in: float = 0.5  # how early a short cue may appear before its first word
    max_chars_per_second: float = 20.0
    join_without_spaces: bool = False  # Chinese and Japanese: no spaces, widths in full-width characters


BROADCAST = CueOptions()
CHINESE_JAPANESE = CueOptions(max_line_chars=16, max_chars_per_second=17.0, join_without_spaces=True)


def pauses_after(words: list[Word], silences: Sequence[tuple[float, float]] = ()) -> list[float]:
    """How long people paused after each word (after the last: forever). What the words' times say,
    or, where Whisper has stretched a word over the silence next to it (it often does, and then its
    times show no pause), the silence the VAD found there: each silence (start, end, in seconds of the
    file) counts at the junction of two words nearest its middle."""
    pauses = [later.start - earlier.end for earlier, later in zip(words, words[1:])] + [float("inf")]
    junctions = [(earlier.end + later.start) / 2 for earlier, later in zip(words, words[1:])]
    for start, end in silences:
        index = bisect_left(junctions, (start + end) / 2)
        nearest = min(
            (i for i in (index - 1, index) if 0 <= i < len(junctions)),
            key=lambda i: abs(junctions[i] - (start + end) / 2),
            default=None,
        )
        if nearest is not None:
            # Only the part of the silence between the two words' starts and ends.
            heard = min(end, words[nearest + 1].end) - max(start, words[nearest].start)
            pauses[nearest] = max(pauses[nearest], heard)
    return pauses


def build_cues(
    segments: list[Segment], options: CueOptions = BROADCAST, silences: Sequence[tuple[float, float]] = ()
) -> list[Cue]:
    """Group every word, once and in order, into cues that obey `options`; a cue holds one language.
    `silences` are where the VAD found no speech: pauses that the words' times may hide."""
    spoken = [(word, segment.language) for segment in segments for word in segment.words if word.text.strip()]
    words = [word for word, _ in spoken]
    pauses = pauses_after(words, silences)
    groups: list[list[Word]] = []
    for index, (word, language) in enumerate(spoken):
        current = groups[-1] if groups else None
        if (
            current is None
            or language != spoken[index - 1][1]
            or _starts_new_cue(current, words, pauses, index, options)
        ):
            groups.append([word])
        elif _fits(current + [word], options):
            current.append(word)
        else:
            groups.append(_take_tail_after_best_break(current) + [word])
    cues = [Cue(group[0].start, group[-1].end, wrap_lines(group, options), group) for group in groups if group]
    _fix_timing(cues, options)
    return cues


def _starts_new_cue(
    current: list[Word], words: list[Word], pauses: list[float], index: int, options: CueOptions
) -> bool:
    """Whether `words[index]` opens a new cue after `current`, which ends with the word before it."""
    previous, word, pause = current[-1], words[index], pauses[index - 1]
    return (
        ends_sentence(previous, word)
        or (
            previous.text.strip().endswith(CLAUSE_ENDS)
            and pause >= CLAUSE_PAUSE_BREAK_S
            and _readable(current, options)
            and _readable(_rest_of_sentence(words, pauses, index), options)
        )
        or pause >= PAUSE_BREAK_S
    )


def ends_sentence(word: Word, following: Word | None = None) -> bool:
    """Whether `word` ends a sentence: it ends in a sentence mark, and is not a title ("Dr."), a short
    form ("e.g.", "U.S."), nor the first half of a number ("3." "5"), nor followed by a word in lower
    case, with which no sentence starts."""
    text = word.text.strip()
    if not text.endswith(SENTENCE_ENDS):
        return False
    if text.endswith(".") and not text.endswith(".."):
        stem = text[:-1].lower()
        if stem in ABBREVIATIONS or INITIALS.fullmatch(text):
            return False
        if following is not None:
            after = following.text.strip()
            if ((stem.isdigit() or stem in BEFORE_NUMBERS) and after[:1].isdigit()) or after[:1].islower():
                return False
    return True


def _readable(words: list[Word], options: CueOptions) -> bool:
    """Whether `words` can stand as a cue of their own: at least half a line. A clause pause ends a cue
    only where what comes before and after it can each stand alone, so that a list ("copy, modify,
    merge, ...") is not cut into one-word cues."""
    return width(join_words(words, options), options) >= options.max_line_chars / 2


def _rest_of_sentence(words: list[Word], pauses: list[float], start: int) -> list[Word]:
    """The words from `words[start]` up to the next sentence end or long pause."""
    for index in range(start, len(words)):
        following = words[index + 1] if index + 1 < len(words) else None
        if following is None or ends_sentence(words[index], following) or pauses[index] >= PAUSE_BREAK_S:
            return words[start : index + 1]
    return words[start:]


def width(text: str, options: CueOptions) -> float:
    """A line's width in characters; for Chinese and Japanese, a half-width character counts half."""
    if not options.join_without_spaces:
        return len(text)
    return sum(1.0 if unicodedata.east_asian_width(char) in "WF" else 0.5 for char in text)


def _fits(words: list[Word], options: CueOptions) -> bool:
    lines = wrap_lines(words, options)
    return (
        len(lines) <= options.max_lines
        and all(width(line, options) <= options.max_line_chars for line in lines)
        and words[-1].end - words[0].start <= options.max_duration
    )


def _take_tail_after_best_break(current: list[Word]) -> list[Word]:
    """Split a full (or too long) cue where a reader would pause: after a comma, else at the longest pause.

    The words after the break are removed from `current` and returned, to open the next cue.
    Only the second half of the cue is searched, so that neither cue is left with a scrap.
    """
    candidates = range(max(1, len(current) // 2), len(current))
    clause_breaks = [i for i in candidates if current[i - 1].text.strip().endswith(CLAUSE_ENDS)]
    if clause_breaks:
        split = clause_breaks[-1]
    elif candidates:
        split = max(candidates, key=lambda i: current[i].start - current[i - 1].end)
    else:
        split = len(current)
    tail = current[split:]
    del current[split:]
    return tail


def join_words(words: list[Word], options: CueOptions) -> str:
    """The words as one line of text (without spaces in Chinese and Japanese)."""
    if options.join_without_spaces:
        return "".join(word.text.strip() for word in words)
    return "".join(word.text for word in words).strip()


def wrap_lines(words: list[Word], options: CueOptions) -> list[str]:
    """One line if the words fit on it, else two lines as balanced as possible, broken between words.

    The result may still be too long; `_fits` is what rejects it.
    """
    text = join_words(words, options)
    if width(text, options) <= options.max_line_chars or len(words) == 1:
        return [text]
    splits = [(join_words(words[:i], options), join_words(words[i:], options)) for i in range(1, len(words))]
    head, tail = min(splits, key=lambda lines: max(width(lines[0], options), width(lines[1], options)))
    return [head, tail]


def _fix_timing(cues: list[Cue], options: CueOptions) -> None:
    """Give short or fast cues more time from the silence around them, and keep gaps between cues."""
    for index, cue in enumerate(cues):
        previous_end = cues[index - 1].end if index else 0.0
        next_start = cues[index + 1].start if index + 1 < len(cues) else float("inf")
        characters = sum(width(line, options) for line in cue.lines)
        wanted = max(options.min_duration, characters / options.max_chars_per_second)
        # First borrow silence after the cue, then, if that is not enough, before it; the gap to
        # the next cue wins over the last word's final milliseconds.
        latest_end = min(next_start - options.min_gap, cue.words[-1].end + options.max_linger)
        cue.end = min(max(cue.end, cue.start + wanted), latest_end)
        earliest_start = max(previous_end + options.min_gap, cue.words[0].start - options.max_lead_in, 0.0)
        cue.start = min(cue.start, max(cue.end - wanted, earliest_start))
        cue.end = min(cue.end, cue.start + options.max_duration)
        if cue.end < cue.start + 0.01:
            # The next cue's words overlap this one's (Whisper's timings can): push it later.
            cue.end = cue.start + 0.01
            following = cues[index + 1]
            following.start = cue.end + options.min_gap
            following.end = max(following.end, following.start + 0.01)
        cue.start, cue.end = round(cue.start, 3), round(cue.end, 3)
