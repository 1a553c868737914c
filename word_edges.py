"""Where speech starts and stops, from the audio itself, for the words at the edges of speech.

Whisper times words from its attention over 20-ms frames, and at the edges of speech it is often wrong
by 0.1-0.3 s: a sentence's first word starts early, stretched back over the silence before it, and its
last word ends before the last sound, so that a cue would leave the screen while the words are still
spoken. The energy of the signal in 10-ms frames says better where sound begins and ends, so the words
next to a pause get their outer edge from it, moved at most `REACH_S` from Whisper's time. Where the
speech stands too little above the noise under it for energy to tell, Whisper's times stay.
"""

import numpy as np

from datatypes import JOINT_SILENCE_S, SAMPLE_RATE, Segment, Word, WorkUnit

FRAME = SAMPLE_RATE // 100  # 10 ms
REACH_S = 0.5  # the most an edge moves from Whisper's time (its starts are up to 0.3 s early)
PAUSE_S = 0.1  # a gap between two words this long is a pause: both of its edges are refined
MIN_RUN = 3  # frames of sound in a row that count as speech: no click or breath starts a word
MIN_CONTRAST_DB = 15.0  # speech this little louder than the quiet in its unit: energy cannot tell


def refine_word_edges(unit: WorkUnit, segments: list[Segment]) -> None:
    """Move the start of each word after a pause, and the end of each word before one, to where the
    sound of `unit` starts and stops; the segments' own times follow their words."""
    words = [word for segment in segments for word in segment.words]
    if not words:
        return
    loudness = _frame_loudness(unit.audio)
    threshold = _sound_threshold(loudness[_span_frames(unit)])
    if threshold is None:
        return
    sound = loudness > threshold
    for index, word in enumerate(words):
        before = words[index - 1] if index else None
        after = words[index + 1] if index + 1 < len(words) else None
        start, end = word.start, word.end
        if before is None or word.start - before.end >= PAUSE_S:
            start = _onset(unit, sound, word, earliest=before.end if before else None)
        if after is None or after.start - word.end >= PAUSE_S:
            end = _offset(unit, sound, word, latest=after.start if after else None)
        if start < end:
            word.start, word.end = start, end
    for segment in segments:
        if segment.words:
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end


def _frame_loudness(audio: np.ndarray) -> np.ndarray:
    """Each 10-ms frame's energy in dB, digital silence counted as -80 dB."""
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return np.maximum(10 * np.log10(np.mean(frames**2, axis=1) + 1e-12), -80.0)


def _span_frames(unit: WorkUnit) -> np.ndarray:
    """The frames of the unit's spans: not the silence that joins them."""
    inside = np.zeros(len(unit.audio) // FRAME, dtype=bool)
    offset = 0.0
    for start, end in unit.spans:
        inside[int(offset * 100) : int((offset + end - start) * 100)] = True
        offset += end - start + JOINT_SILENCE_S
    return inside


def _sound_threshold(loudness: np.ndarray) -> float | None:
    """The loudness above which a frame is sound, not the quiet between words: a third of the way from
    the quiet (the 10th percentile of frames) to the speech (the 95th), and no more than 45 dB under the
    speech. None where the two are too close for energy to tell."""
    if len(loudness) < 10:
        return None
    quiet, speech = np.percentile(loudness, [10, 95])
    if speech - quiet < MIN_CONTRAST_DB:
        return None
    return max(quiet + (speech - quiet) / 3, speech - 45.0)


def _onset(unit: WorkUnit, sound: np.ndarray, word: Word, earliest: float | None) -> float:
    """Where sound starts near the start of `word`, or its start where none does."""
    low = max(word.start - REACH_S, earliest or 0.0)
    high = min(word.start + REACH_S, word.end)
    frames = _frames_between(unit, low, high)
    if frames is None:
        return word.start
    first, last, to_file = frames
    runs = _run_starts(sound[first:last])
    if not runs or runs[0] == 0 and sound[first - 1 : first].any():
        return word.start  # sound already before the window: Whisper's start is inside speech
    return round(to_file(first + runs[0]), 3)


def _offset(unit: WorkUnit, sound: np.ndarray, word: Word, latest: float | None) -> float:
    """Where sound stops near the end of `word`, or its end where it does not."""
    low = max(word.end - REACH_S, word.start)
    high = word.end + REACH_S if latest is None else min(word.end + REACH_S, latest)
    frames = _frames_between(unit, low, high)
    if frames is None:
        return word.end
    first, last, to_file = frames
    reversed_runs = _run_starts(sound[first:last][::-1])
    if not reversed_runs or reversed_runs[0] == 0 and sound[last : last + 1].any():
        return word.end  # sound goes on after the window: not the end of speech
    return round(to_file(last - reversed_runs[0]), 3)


def _run_starts(sound: np.ndarray) -> list[int]:
    """Where runs of at least MIN_RUN sound frames start."""
    starts = []
    length = 0
    for index, loud in enumerate(sound):
        length = length + 1 if loud else 0
        if length == MIN_RUN:
            starts.append(index - MIN_RUN + 1)
    return starts


def _frames_between(unit: WorkUnit, low: float, high: float):
    """The unit's frames from file time `low` to `high`, inside the one span that holds their middle:
    (first frame, frame after the last, frame -> file time), or None where no frame lies there."""
    offset = 0.0  # where the span starts in the unit's audio, in seconds
    middle = (low + high) / 2
    for span_start, span_end in unit.spans:
        if middle < span_end or (span_start, span_end) == unit.spans[-1]:
            break
        offset += span_end - span_start + JOINT_SILENCE_S
    low, high = max(low, span_start), min(high, span_end)
    first = int(np.ceil((offset + low - span_start) * 100))
    last = int((offset + high - span_start) * 100)
    if last - first < MIN_RUN:
        return None
    return first, last, lambda frame: span_start + frame / 100 - offset
