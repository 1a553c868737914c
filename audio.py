"""Decode any audio or video file that FFmpeg can read into 16 kHz mono float32 samples."""

from __future__ import annotations  # PyAV's types in signatures are not looked up at import

import errno
import mimetypes
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from datatypes import BLOCK_SAMPLES, SAMPLE_RATE

# Whisper hears nothing useful in less than this; a shorter file is almost always a mistake.
MIN_DURATION_S = 0.25
# Media that not every system's MIME table knows as audio or video.
MEDIA_SUFFIXES = (".ts", ".mts", ".m2ts", ".mkv", ".mka", ".webm", ".opus", ".flac", ".m4a", ".weba")

# The container formats (FFmpeg demuxers) read here: each reads nothing but the file's own bytes.
# Playlists (hls, concat), image sequences and protocols could make the server open other files or
# URLs named inside an upload, so FFmpeg is told to refuse every other demuxer, and any protocol but
# the plain file, before it reads a header.
SAFE_DEMUXERS = (
    "wav",
    "w64",
    "flac",
    "mp3",
    "ogg",
    "matroska,webm",
    "mov,mp4,m4a,3gp,3g2,mj2",
    "aac",
    "asf",
    "avi",
    "mpegts",
    "mpeg",
    "aiff",
    "caf",
    "amr",
    "ac3",
    "eac3",
    "dts",
    "truehd",
    "wv",
    "ape",
    "tta",
    "flv",
    "au",
)
_OPEN_OPTIONS = {"format_whitelist": ",".join(SAFE_DEMUXERS), "protocol_whitelist": "file"}
_REFUSED_BY_WHITELIST = errno.EINVAL


class AudioError(ValueError):
    """The file cannot be used as audio; the message names the file and the reason."""


def is_media_name(name: str | Path) -> bool:
    """Whether a file's name says audio or video (its content is judged when it is read)."""
    kind = mimetypes.guess_type(str(name))[0] or ""
    return kind.startswith(("audio/", "video/")) or str(name).lower().endswith(MEDIA_SUFFIXES)


def load_audio(path: str | Path) -> np.ndarray:
    """Decode the first audio stream of `path` to 16 kHz mono float32 samples in [-1, 1]."""
    return np.concatenate(list(stream_audio(path)))


def stream_audio(path: str | Path, block_samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
    """Decode `path` block by block (each `block_samples` long but the last), so that later stages
    can start on the beginning of a long file while the rest is still being decoded.

    Problems with the whole file (cut short, too short) can only be known at its end: the generator
    then raises AudioError after its last block.
    """
    path = Path(path)
    check_media(path)
    decoded = 0
    try:
        with open_media(path) as container:
            stream = container.streams.audio[0]
            declared_s = _declared_duration(container, stream)
            for block in _decode_blocks(container, stream, block_samples):
                decoded += len(block)
                yield block
    except av.FFmpegError as error:
        raise _unreadable(path, error) from None

    duration_s = decoded / SAMPLE_RATE
    if duration_s == 0:
        raise AudioError(f"{path}: the audio stream holds no sound that can be decoded")
    # Containers state their length in the header; far less sound than that means the file was cut
    # short or is damaged, and subtitles for part of it would silently miss the rest.
    if declared_s is not None and duration_s < 0.9 * declared_s - 0.5:
        raise AudioError(
            f"{path}: the file is truncated or damaged "
            f"(its header says {declared_s:.1f} s, only {duration_s:.1f} s could be decoded)"
        )
    if duration_s < MIN_DURATION_S:
        raise AudioError(f"{path}: the audio is only {duration_s:.2f} s long; at least {MIN_DURATION_S} s is needed")


def check_media(path: str | Path) -> None:
    """Raise AudioError for a file that cannot be audio at all: missing, empty, not a media file that
    is read here, or without an audio stream. What only decoding shows (cut short, too short to hear)
    is found by `stream_audio`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    try:
        with open_media(path) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: the file has no audio stream")
    except av.FFmpegError as error:
        raise _unreadable(path, error) from None


def declared_duration(path: str | Path) -> float | None:
    """The file's length in seconds as its header states it (before decoding), or None."""
    try:
        with open_media(path) as container:
            return _declared_duration(container, container.streams.audio[0]) if container.streams.audio else None
    except av.FFmpegError:
        return None


def has_picture(path: str | Path) -> bool:
    """Whether the file has a moving picture to show subtitles on (cover art does not count)."""
    try:
        with open_media(path) as container:
            return any(
                not stream.disposition & av.stream.Disposition.attached_pic for stream in container.streams.video
            )
    except av.FFmpegError:
        return False


def _unreadable(path: Path, error: av.FFmpegError) -> AudioError:
    if error.errno == _REFUSED_BY_WHITELIST:
        return AudioError(
            f"{path}: not a media format read here (playlists, and files that refer to other files "
            "or URLs, are refused); use a plain audio or video file"
        )
    reason = getattr(error, "strerror", None) or str(error)
    return AudioError(f"{path}: not a readable audio or video file ({reason})")


def open_media(path: str | Path) -> av.container.InputContainer:
    """Open `path` for reading with only the SAFE_DEMUXERS and the file protocol allowed."""
    return av.open(str(path), metadata_errors="ignore", container_options=_OPEN_OPTIONS)


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decode_blocks(
    container: av.container.InputContainer, stream: av.AudioStream, block_samples: int
) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    pending = 0
    for frame in _decoded_frames(container, stream):
        for out in resampler.resample(frame):
            pieces.append(out.to_ndarray().reshape(-1))
            pending += pieces[-1].size
        while pending >= block_samples:
            joined = np.concatenate(pieces)
            yield joined[:block_samples]
            pieces, pending = [joined[block_samples:]], joined.size - block_samples
    if pending:
        yield np.concatenate(pieces)


def _decoded_frames(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator:
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            # A damaged packet costs a few milliseconds of sound; the truncation check catches worse.
            continue
    yield None  # flushes the resampler
