"""The subtitle rules as one check, for hand-made word streams (property tests) and real ones (base, tiny.en)."""

from datatypes import Cue, Word
from subtitles import CueOptions, width

SLACK = 2e-3  # cue times are rounded to milliseconds


def assert_cues_obey_the_rules(cues: list[Cue], words: list[Word], options: CueOptions) -> None:
    """Every word once and in order; at most two lines of `max_line_chars` (a single word too long for
    a line excepted); on screen no longer than `max_duration`, no earlier than `max_lead_in` before the
    first word and no later than `max_linger` after the last; `min_gap` between cues; and long enough
    to be read (`min_duration`, `max_chars_per_second`) unless boxed in at both ends."""
    assert [word for cue in cues for word in cue.words] == words
    for index, cue in enumerate(cues):
        assert 1 <= len(cue.lines) <= options.max_lines, cue
        if len(cue.words) > 1:
            assert all(width(line, options) <= options.max_line_chars for line in cue.lines), cue
        assert cue.start < cue.end
        assert cue.end <= cue.words[-1].end + options.max_linger + 1e-6, cue
        assert cue.start >= cue.words[0].start - options.max_lead_in - 1e-6, cue
        assert cue.end - cue.start <= options.max_duration + 1e-6, cue
        if index + 1 < len(cues):
            assert cues[index + 1].start - cue.end >= options.min_gap - 1e-6, cue
        # Shorter than it takes to read only where it could not grow: boxed in at both ends (by its
        # neighbours' gaps, the linger and lead-in limits, or the start of the file).
        characters = sum(width(line, options) for line in cue.lines)
        wanted = min(max(options.min_duration, characters / options.max_chars_per_second), options.max_duration)
        if cue.end - cue.start < wanted - SLACK:
            previous_end = cues[index - 1].end if index else 0.0  # the file's start counts as a cue's end
            next_start = cues[index + 1].start if index + 1 < len(cues) else None
            stuck_after = cue.end >= cue.words[-1].end + options.max_linger - SLACK or (
                next_start is not None and next_start - cue.end <= options.min_gap + SLACK
            )
            stuck_before = cue.start <= cue.words[0].start - options.max_lead_in + SLACK or (
                cue.start - previous_end <= options.min_gap + SLACK
            )
            assert stuck_after and stuck_before, cue
