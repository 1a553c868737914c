"""A person's edits to cues, checked and made a transcript again, without a page: the rules, the word times
kept, and the video with its subtitles as a track."""

import av
import pytest

import messages
from datatypes import Cue, Transcript, Word
from editing import EditedCue, apply_edits, check_edits, clock, parse_edits, rule_breaks, seconds
from muxing import language_tag, with_subtitles
from page_views import editor
from subtitles import BROADCAST
from writers import read_json, render


def words(*timed: tuple[str, float, float, float]) -> list[Word]:
    return [Word(start, end, text, probability) for text, start, end, probability in timed]


@pytest.fixture
def transcript() -> Transcript:
    first = words(
        (" And", 0.1, 0.3, 0.9),
        (" so", 0.4, 0.6, 0.9),
        (" my", 0.7, 0.9, 0.3),
        (" fellow", 1.0, 1.4, 0.95),
        (" Americans", 1.5, 2.2, 0.9),
    )
    second = words((" ask", 3.0, 3.2, 0.9), (" not.", 3.3, 3.6, 0.9))
    cues = [Cue(0.0, 2.4, ["And so my fellow Americans"], first), Cue(2.9, 3.9, ["ask not."], second)]
    return Transcript("jfk.flac", 11.0, 9.0, "en", [], cues, [], {}, 1)


def test_times_are_read_as_the_editor_writes_them():
    assert seconds("01:02.345") == pytest.approx(62.345) and seconds("1:00:00.5") == 3600.5 and seconds(2.5) == 2.5
    assert seconds("00:03,250") == 3.25 and clock(62.345) == "01:02.345" and clock(3661.0) == "1:01:01.000"
    with pytest.raises(messages.UserError, match="cue 2: give its start, end and text"):
        parse_edits([{"start": 0, "end": 1, "text": "a"}, {"start": "soon", "end": 1, "text": "b"}])


@pytest.mark.parametrize(
    "edits, said",
    [
        ([EditedCue(2.0, 1.0, "late")], "cue 1 ends (00:01.000) before it starts (00:02.000)"),
        (
            [EditedCue(0.0, 2.0, "a"), EditedCue(1.5, 3.0, "b")],
            "cue 2 starts (00:01.500) before cue 1 ends (00:02.000)",
        ),
        ([EditedCue(0.0, 1.0, "  ")], "cue 1 has no text"),
        ([EditedCue(0.0, 30.0, "long")], "cue 1 lies outside the recording"),
    ],
)
def test_bad_edits_are_refused_with_the_cue_and_the_reason(edits, said):
    with pytest.raises(messages.UserError, match=said.replace("(", r"\(").replace(")", r"\)")):
        check_edits(edits, duration=11.0)


def test_unchanged_words_keep_whisper_times_and_new_ones_share_the_rest(transcript):
    edited = apply_edits(
        transcript, [EditedCue(0.0, 2.5, "And so my dear fellow Americans"), EditedCue(2.9, 3.9, "Ask not!")]
    )
    first = edited.cues[0].words
    assert [word.text for word in first] == ["And", " so", " my", " dear", " fellow", " Americans"]
    assert [(word.start, word.end) for word in first if word.text != " dear"] == [
        (0.1, 0.3),
        (0.4, 0.6),
        (0.7, 0.9),
        (1.0, 1.4),
        (1.5, 2.2),
    ]
    dear = first[3]
    assert 0.9 <= dear.start < dear.end <= 1.0 and dear.probability == 1.0  # between "my" and "fellow"
    assert first[2].probability == 0.3  # how unsure Whisper was stays with the word
    assert [(word.start, word.end) for word in edited.cues[1].words] == [(3.0, 3.2), (3.3, 3.6)]  # case, marks
    assert edited.cues[0].end == 2.5 and edited.cues[0].lines == ["And so my dear fellow Americans"]
    # Karaoke still times every word; the edits survive the transcript's JSON, which the page keeps.
    assert render(edited, "vtt", word_highlight=True).count("<00:00:") == 6
    assert read_json(render(edited, "json")).cues == edited.cues


def test_a_persons_line_breaks_are_kept(transcript):
    edited = apply_edits(
        transcript, [EditedCue(0.0, 2.4, "And so\nmy fellow Americans"), EditedCue(2.9, 3.9, "ask not.")]
    )
    assert edited.cues[0].lines == ["And so", "my fellow Americans"]
    assert "And so\nmy fellow Americans" in render(edited, "srt")


def test_rule_breaks_are_named(transcript):
    cue = Cue(0.0, 0.5, ["This line is far too long for anyone to read in half a second"], [])
    breaks = rule_breaks(cue, BROADCAST)
    assert "a line of 61 characters (at most 42)" in breaks and any("characters a second" in b for b in breaks)
    assert "on screen 0.5 s (at least 0.8)" in breaks
    assert rule_breaks(transcript.cues[0], BROADCAST) == []


def test_the_editor_marks_unsure_words_and_flags_rule_breaks(transcript):
    shown = editor([*transcript.cues, Cue(4.0, 4.3, ["Too quick to read at all, surely"], [])], editable=True)
    assert shown.value.count('<mark class="unsure"') == 1 and ">my</mark>" in shown.value.replace(" my", "my")
    assert "1 words Whisper was unsure of" in shown.value and shown.value.count('class="cue flagged"') == 1
    assert 'contenteditable="true"' in shown.value and 'data-do="split"' in shown.value
    assert 'contenteditable="false"' in editor(transcript.cues).value  # while the job runs


def test_the_json_output_marks_unsure_words(transcript):
    import json

    document = json.loads(render(transcript, "json"))
    assert document["unsure_words"] == 1
    assert [word["unsure"] for word in document["cues"][0]["words"]] == [False, False, True, False, False]


@pytest.mark.parametrize("container, codec", [("mkv", "srt"), ("mp4", "mov_text")])
def test_the_video_gets_a_tagged_subtitle_track_without_reencoding(films, transcript, tmp_path, container, codec):
    made = with_subtitles(films["mp4"], transcript, tmp_path / f"speech.{container}")
    with av.open(str(films["mp4"])) as source, av.open(str(made)) as result:
        kinds = {stream.type: stream.codec_context.name for stream in result.streams}
        assert kinds == {"video": "h264", "audio": "aac", "subtitle": codec}
        track = result.streams.subtitles[0]
        assert track.metadata["language"] == "eng"
        # The picture is copied packet for packet, not encoded again.
        original = [bytes(packet) for packet in source.demux(source.streams.video[0]) if packet.size]
    with av.open(str(made)) as result:
        copied = [bytes(packet) for packet in result.demux(result.streams.video[0]) if packet.size]
        assert copied == original
    with av.open(str(made)) as result:
        track = result.streams.subtitles[0]
        offset = float(result.streams.video[0].start_time * result.streams.video[0].time_base)
        cues = [
            (float(packet.pts * packet.time_base) - offset, float(packet.duration * packet.time_base), bytes(packet))
            for packet in result.demux(track)
            if packet.size > 2
        ]
    assert [text.decode()[-len(cue.text) :] for (*_, text), cue in zip(cues, transcript.cues)] == [
        cue.text for cue in transcript.cues
    ]
    for (start, duration, _), cue in zip(cues, transcript.cues):
        assert start == pytest.approx(cue.start, abs=0.05) and duration == pytest.approx(cue.end - cue.start, abs=0.01)


def test_language_tags_are_iso_639_2():
    assert language_tag("en") == "eng" and language_tag("de") == "ger" and language_tag("zh") == "chi"
