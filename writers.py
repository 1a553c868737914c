"""Write a transcript as SRT, WebVTT, ASS, plain text or JSON (UTF-8, no byte-order mark)."""

import json
from dataclasses import asdict
from pathlib import Path

import pysubs2

from datatypes import Transcript

FORMATS = ("srt", "vtt", "ass", "txt", "json")


def render(transcript: Transcript, fmt: str) -> str:
    """The transcript as the text of a file in format `fmt`."""
    if fmt in ("srt", "vtt", "ass"):
        return _subtitle_file(transcript).to_string("srt" if fmt == "srt" else fmt)
    if fmt == "txt":
        return "".join(segment.text + "\n" for segment in transcript.segments)
    if fmt == "json":
        document = {
            "source": transcript.source,
            "language": transcript.language,
            "duration": round(transcript.duration, 3),
            "segments": [asdict(segment) for segment in transcript.segments],
            "cues": [{"start": cue.start, "end": cue.end, "text": cue.text} for cue in transcript.cues],
            "dropped": [asdict(item) for item in transcript.dropped],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def write(transcript: Transcript, path: str | Path, fmt: str) -> Path:
    path = Path(path)
    path.write_text(render(transcript, fmt), encoding="utf-8")
    return path


def _subtitle_file(transcript: Transcript) -> pysubs2.SSAFile:
    subs = pysubs2.SSAFile()
    # A plain, readable default for ASS players: white text, dark outline, near the bottom.
    subs.styles["Default"] = pysubs2.SSAStyle(fontname="Arial", fontsize=20, outline=2, shadow=0, marginv=24)
    for cue in transcript.cues:
        subs.append(
            pysubs2.SSAEvent(start=round(cue.start * 1000), end=round(cue.end * 1000), text=r"\N".join(cue.lines))
        )
    return subs
