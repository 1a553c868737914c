"""Write a transcript as SRT, WebVTT, ASS, plain text or JSON (UTF-8, no byte-order mark).

With `word_highlight`, ASS and WebVTT also carry each word's time, so that players light up the word
being spoken (karaoke style): ASS with `\\k` tags, WebVTT with inline timestamps (`<00:00:01.500>`).
SRT has no way to say it.
"""

import html
import json
from dataclasses import asdict
from pathlib import Path

import pysubs2

from datatypes import LANGUAGES_WITHOUT_SPACES, UNSURE_PROBABILITY, Cue, Dropped, Segment, Transcript, Word

FORMATS = ("srt", "vtt", "ass", "txt", "json")
# ASS karaoke shows a word in the secondary colour until it is spoken, then in the primary one.
SPOKEN = pysubs2.Color(255, 255, 255)
NOT_YET_SPOKEN = pysubs2.Color(170, 170, 170)


def render(transcript: Transcript, fmt: str, word_highlight: bool = False) -> str:
    """The transcript as the text of a file in format `fmt`."""
    if fmt in ("srt", "vtt", "ass"):
        return _subtitle_file(transcript, fmt, word_highlight).to_string(fmt)
    if fmt == "txt":
        return plain_text(transcript.cues, transcript.language) + "\n"
    if fmt == "json":
        document = {
            "source": transcript.source,
            "language": transcript.language,
            "duration": round(transcript.duration, 3),
            "speech": round(transcript.speech, 3),
            "segments": [asdict(segment) for segment in transcript.segments],
            # Each cue's words, those Whisper was unsure of marked, for a reviewer to read first.
            "cues": [
                {
                    "start": cue.start,
                    "end": cue.end,
                    "text": cue.text,
                    "words": [{**asdict(word), "unsure": word.probability < UNSURE_PROBABILITY} for word in cue.words],
                }
                for cue in transcript.cues
            ],
            "unsure_words": sum(word.probability < UNSURE_PROBABILITY for cue in transcript.cues for word in cue.words),
            "dropped": [asdict(item) for item in transcript.dropped],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def read_json(text: str) -> Transcript:
    """A transcript from its JSON file (`render(..., "json")`): what the page keeps of a job, to show it
    again and to edit it. Raises ValueError where the text is not such a file."""
    try:
        document = json.loads(text)
        segments = [
            Segment(**{**item, "words": [_word(word) for word in item["words"]]}) for item in document["segments"]
        ]
        cues = [
            Cue(item["start"], item["end"], item["text"].split("\n"), [_word(word) for word in item["words"]])
            for item in document["cues"]
        ]
        return Transcript(
            source=document["source"],
            duration=document["duration"],
            speech=document.get("speech", 0.0),
            language=document["language"],
            segments=segments,
            cues=cues,
            dropped=[Dropped(**item) for item in document["dropped"]],
            stage_seconds={},
            workers=0,
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a transcript: {error}") from None


def _word(item: dict) -> Word:
    return Word(item["start"], item["end"], item["text"], item["probability"])


def plain_text(cues: list[Cue], language: str = "en", one_line: bool = False) -> str:
    """The subtitles' words for reading: a cue a line, or all on one line (without spaces between cues in
    the languages written without spaces)."""
    lines = [cue.text.replace("\n", "" if language in LANGUAGES_WITHOUT_SPACES else " ") for cue in cues]
    if not one_line:
        return "\n".join(lines)
    return ("" if language in LANGUAGES_WITHOUT_SPACES else " ").join(lines)


def write(transcript: Transcript, path: str | Path, fmt: str, word_highlight: bool = False) -> Path:
    """The transcript as a file in format `fmt` at `path` (UTF-8)."""
    path = Path(path)
    path.write_text(render(transcript, fmt, word_highlight), encoding="utf-8")
    return path


def _subtitle_file(transcript: Transcript, fmt: str, word_highlight: bool) -> pysubs2.SSAFile:
    subs = pysubs2.SSAFile()
    # A plain, readable default for ASS players: white text, dark outline, near the bottom.
    subs.styles["Default"] = pysubs2.SSAStyle(
        fontname="Arial",
        fontsize=20,
        outline=2,
        shadow=0,
        marginv=24,
        primarycolor=SPOKEN,
        secondarycolor=NOT_YET_SPOKEN,
    )
    for cue in transcript.cues:
        lines = words_by_line(cue) if word_highlight and fmt != "srt" else None
        if lines is None:  # no word timing asked for, or the words do not spell the lines
            text = r"\N".join(_escaped(line, fmt) for line in cue.lines)
        elif fmt == "ass":
            text = _ass_karaoke(cue, lines)
        else:
            text = _vtt_karaoke(cue, lines)
        subs.append(pysubs2.SSAEvent(start=_ms(cue.start), end=_ms(cue.end), text=text))
    return subs


def _escaped(text: str, fmt: str) -> str:
    # WebVTT is read like HTML: a bare "&" or "<" ("AT&T", "a < b") would break the cue.
    return html.escape(text, quote=False) if fmt == "vtt" else text


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _letters(text: str) -> int:
    return len("".join(text.split()))


def words_by_line(cue: Cue) -> list[list[tuple[str, Word]]] | None:
    """Each line of `cue` as (the word as the line shows it, the word) pairs; None where the words do
    not add up to the lines letter for letter (the page's editor marks words by it too)."""
    lines: list[list[tuple[str, Word]]] = []
    words = iter(cue.words)
    for line in cue.lines:
        shown: list[tuple[str, Word]] = []
        while _letters("".join(text for text, _ in shown)) < _letters(line):
            word = next(words, None)
            if word is None:
                return None
            shown.append((word.text, word))
        if not shown or _letters("".join(text for text, _ in shown)) != _letters(line):
            return None
        if " " in line:  # words as Whisper spaced them; Chinese and Japanese lines have no spaces
            shown[0] = (shown[0][0].lstrip(), shown[0][1])
            shown[-1] = (shown[-1][0].rstrip(), shown[-1][1])
        else:
            shown = [(text.strip(), word) for text, word in shown]
        lines.append(shown)
    return lines if next(words, None) is None else None


def _ass_karaoke(cue: Cue, lines: list[list[tuple[str, Word]]]) -> str:
    r"""Each word after `{\kN}`: N centiseconds from when it is spoken until the next word is (the last
    word: until it ends), so that one word is lit at a time; a silent `{\kN}` first for the time
    between the cue's start and its first word."""
    words = [word for line in lines for _, word in line]
    starts = [max(round((word.start - cue.start) * 100), 0) for word in words]
    ends = starts[1:] + [max(round((words[-1].end - cue.start) * 100), starts[-1])]
    durations = iter(max(end - start, 0) for start, end in zip(starts, ends))
    lead_in = f"{{\\k{starts[0]}}}" if starts[0] else ""
    return lead_in + r"\N".join("".join(f"{{\\k{next(durations)}}}{text}" for text, _ in line) for line in lines)


def _vtt_karaoke(cue: Cue, lines: list[list[tuple[str, Word]]]) -> str:
    """Each word but the first after its start time, `<00:00:01.500>`, kept inside the cue and in order."""
    pieces, latest, first = [], _ms(cue.start), True
    for line in lines:
        shown = []
        for text, word in line:
            if not first:
                latest = min(max(_ms(word.start), latest), _ms(cue.end))
                shown.append(f"<{_vtt_time(latest)}>")
            first = False
            shown.append(_escaped(text, "vtt"))
        pieces.append("".join(shown))
    return r"\N".join(pieces)


def _vtt_time(ms: int) -> str:
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}.{ms:03d}"
