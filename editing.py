"""Subtitles a person finished: their edits to a transcript's cues checked, and made a transcript again.

An edit is a cue's start, end and text (its lines as the person broke them). The words of an edited cue
keep Whisper's times where they are the same words as before (found by aligning the edited text with
Whisper's words), so that karaoke still lights them as they are spoken; new or changed words share the
time that is left in their cue.
"""

import difflib
import re
from dataclasses import dataclass, replace

import messages
from datatypes import LANGUAGES_WITHOUT_SPACES, UNSURE_PROBABILITY, Cue, Transcript, Word
from subtitles import CueOptions, width


@dataclass(frozen=True)
class EditedCue:
    """One cue as a person left it."""

    start: float  # seconds
    end: float
    text: str  # its lines, separated by newlines


def parse_edits(items: object) -> list[EditedCue]:
    """Edited cues from what a page or a script sent: a list of {"start", "end", "text"} (times in seconds, or
    as the editor writes them: 01:02.345); UserError for anything else."""
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise messages.UserError("the cues are a list of {start, end, text}", param="cues")
    edits = []
    for number, item in enumerate(items, 1):
        try:
            edits.append(EditedCue(seconds(item["start"]), seconds(item["end"]), str(item["text"])))
        except (KeyError, ValueError, TypeError):
            raise messages.UserError(
                f"cue {number}: give its start, end and text (times such as 01:02.345)", param="cues"
            ) from None
    return edits


def seconds(value: object) -> float:
    """A time in seconds, from a number or from "[h:]mm:ss.mmm"; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    found = re.fullmatch(r"\s*(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)\s*", str(value))
    if not found:
        raise ValueError(f"not a time: {value!r}")
    hours, minutes, secs = found.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(secs.replace(",", "."))


def check_edits(edits: list[EditedCue], duration: float) -> None:
    """Raise UserError, naming the cue and what is wrong, for cues that cannot be saved: an end before its
    start, cues out of order or overlapping, empty text, times outside the recording."""
    previous_end = 0.0
    for number, cue in enumerate(edits, 1):
        if not cue.text.strip():
            raise messages.UserError(f"cue {number} has no text: write it, or delete the cue", param="cues")
        if cue.end <= cue.start:
            raise messages.UserError(
                f"cue {number} ends ({clock(cue.end)}) before it starts ({clock(cue.start)})", param="cues"
            )
        if cue.start < previous_end:
            raise messages.UserError(
                f"cue {number} starts ({clock(cue.start)}) before cue {number - 1} ends "
                f"({clock(previous_end)}): cues are in time order and do not overlap",
                param="cues",
            )
        if cue.start < 0 or cue.end > duration + 1.0:
            raise messages.UserError(f"cue {number} lies outside the recording (0 to {clock(duration)})", param="cues")
        previous_end = cue.end


def apply_edits(transcript: Transcript, edits: list[EditedCue]) -> Transcript:
    """The transcript with `edits` as its cues (checked by `check_edits`), each cue's words timed."""
    without_spaces = transcript.language in LANGUAGES_WITHOUT_SPACES
    machine = [word for cue in transcript.cues for word in cue.words]
    tokens = [(index, token) for index, cue in enumerate(edits) for token in _tokens(cue.text, without_spaces)]
    matcher = difflib.SequenceMatcher(
        None, [_key(word.text) for word in machine], [_key(token) for _, token in tokens], autojunk=False
    )
    kept: dict[int, Word] = {}  # position in tokens -> Whisper's word for it
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            kept[block.b + offset] = machine[block.a + offset]
    cues, position = [], 0
    for index, edit in enumerate(edits):
        count = sum(1 for cue_index, _ in tokens if cue_index == index)
        texts = [token for _, token in tokens[position : position + count]]
        found = [kept.get(at) for at in range(position, position + count)]
        words = _timed(texts, found, edit, without_spaces)
        cues.append(
            Cue(
                round(edit.start, 3),
                round(edit.end, 3),
                [line.strip() for line in edit.text.strip().split("\n") if line.strip()],
                words,
            )
        )
        position += count
    return replace(transcript, cues=cues)


def rule_breaks(cue: Cue, options: CueOptions) -> list[str]:
    """What a reader would stumble on in `cue`: lines over the width, too fast to read, too short a time."""
    breaks = []
    if len(cue.lines) > options.max_lines:
        breaks.append(f"{len(cue.lines)} lines (at most {options.max_lines})")
    widest = max((width(line, options) for line in cue.lines), default=0)
    if widest > options.max_line_chars:
        breaks.append(f"a line of {widest:g} characters (at most {options.max_line_chars})")
    duration = cue.end - cue.start
    speed = sum(width(line, options) for line in cue.lines) / max(duration, 1e-3)
    if speed > options.max_chars_per_second:
        breaks.append(f"{speed:.0f} characters a second (at most {options.max_chars_per_second:g})")
    if duration < options.min_duration:
        breaks.append(f"on screen {duration:.1f} s (at least {options.min_duration:g})")
    return breaks


def unsure_words(transcript: Transcript) -> list[Word]:
    """The cues' words Whisper was unsure of, in time order."""
    return [word for cue in transcript.cues for word in cue.words if word.probability < UNSURE_PROBABILITY]


def clock(value: float) -> str:
    """A time as the editor writes it: 01:02.345, or 1:01:02.345 from an hour on."""
    millis = round(value * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return (f"{hours}:" if hours else "") + f"{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _tokens(text: str, without_spaces: bool) -> list[str]:
    """An edited cue's words: what stands between spaces, or each character where a language has no spaces."""
    if without_spaces:
        return [char for char in text if not char.isspace()]
    return text.split()


def _key(text: str) -> str:
    """A word as the alignment compares it: without case, punctuation or spaces."""
    return re.sub(r"[^\w]", "", text.lower())


def _timed(texts: list[str], found: list[Word | None], edit: EditedCue, without_spaces: bool) -> list[Word]:
    """The cue's words: Whisper's times for those found (kept inside the cue), the rest spread over the
    time between their neighbours."""
    words: list[Word] = []
    for position, (text, word) in enumerate(zip(texts, found)):
        shown = text if without_spaces or position == 0 else " " + text
        if word is not None:
            start = min(max(word.start, edit.start), edit.end)
            words.append(Word(start, min(max(word.end, start), edit.end), shown, word.probability))
            continue
        before = words[-1].end if words else edit.start
        after = next((min(max(later.start, before), edit.end) for later in found[position + 1 :] if later), edit.end)
        gap = [i for i in range(position, len(texts)) if found[i] is None]
        run = next((i for i in range(len(gap)) if gap[i] != position + i), len(gap))  # this run of new words
        share = (after - before) / max(run, 1)
        words.append(Word(round(before, 3), round(before + share, 3), shown, 1.0))
    return words
