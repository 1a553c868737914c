"""A video with its subtitles as a track of its own, language tagged, without re-encoding (PyAV): Matroska
with SubRip text, or MP4 with `mov_text`, which VLC and browsers play with the subtitles to switch on.

The picture and the sound are copied packet for packet. Burned-in subtitles would need FFmpeg's `subtitles`
filter (libass), which the FFmpeg inside PyAV's wheel does not have: they are not offered.
"""

import struct
from fractions import Fraction
from pathlib import Path

import av
import pycountry

from audio import open_media
from datatypes import Transcript

CONTAINERS = {"mkv": ("matroska", "subrip"), "mp4": ("mp4", "mov_text")}
MILLISECOND = Fraction(1, 1000)
# The text subtitle encoders need an ASS header to open, though they write none of it here.
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    b"Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
    b"MarginR, MarginV, Encoding\nStyle: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,"
    b"10,10,10,0\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


class MuxError(ValueError):
    """The video cannot be written in that container; the message says why."""


def language_tag(code: str) -> str:
    """The ISO 639-2 code containers tag a track with ("eng", "ger" for German), from Whisper's code."""
    found = pycountry.languages.get(alpha_2=code) if len(code) == 2 else pycountry.languages.get(alpha_3=code)
    return getattr(found, "bibliographic", None) or getattr(found, "alpha_3", None) or "und"


def with_subtitles(video: Path, transcript: Transcript, target: Path) -> Path:
    """`video` with the transcript's cues as a subtitle track, in the container `target`'s suffix names
    (.mkv or .mp4). Raises MuxError where the video's streams do not fit that container."""
    container, codec = CONTAINERS[target.suffix.lstrip(".")]
    partial = target.with_name(f".{target.name}.part")
    try:
        with open_media(video) as source, av.open(str(partial), "w", format=container) as out:
            copies = {
                stream.index: out.add_stream_from_template(stream)
                for stream in source.streams
                if stream.type in ("video", "audio")
            }
            track = out.add_stream(codec)
            track.time_base = MILLISECOND
            track.codec_context.subtitle_header = ASS_HEADER
            track.metadata["language"] = language_tag(transcript.language)
            track.metadata["title"] = "whisper-for-subs"
            for packet in source.demux(*(stream for stream in source.streams if stream.index in copies)):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = copies[packet.stream.index]
                out.mux(packet)
            for cue in transcript.cues:
                out.mux(_text_packet(track, cue.text, cue.start, cue.end, codec))
    except (av.FFmpegError, ValueError) as error:
        partial.unlink(missing_ok=True)
        raise MuxError(
            f"this video cannot be written as {target.suffix[1:].upper()} with its subtitles "
            f"({getattr(error, 'strerror', None) or error})"
        ) from None
    partial.replace(target)
    return target


def _text_packet(track: av.stream.Stream, text: str, start: float, end: float, codec: str) -> av.Packet:
    """One cue as a packet of the track: UTF-8 text (SubRip), or 3GPP timed text, its length first (mov_text)."""
    data = text.encode()
    if codec == "mov_text":
        data = struct.pack(">H", len(data)) + data
    packet = av.Packet(data)
    packet.stream = track
    packet.time_base = MILLISECOND
    packet.pts = packet.dts = round(start * 1000)
    packet.duration = round((end - start) * 1000)
    return packet
