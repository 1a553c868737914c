"""Cue rules, invented-text cleanup and Chinese script conversion, on hand-made word timings."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup import clean_segments, collapse_loops, convert_chinese_script
from cue_rules import assert_cues_obey_the_rules
from datatypes import Segment, Transcript, Word
from helpers import ROOT
from subtitles import BROADCAST, CHINESE_JAPANESE, CueOptions, build_cues, width
from writers import render


def timed(
    text: str, start: float = 0.0, word_s: float = 0.3, pause_s: float = 0.0, chinese: bool = False
) -> list[Word]:
    """Words of `text` spoken one after another, each `word_s` long, `pause_s` apart."""
    pieces = list(text) if chinese else [" " + piece for piece in text.split()]
    words, time = [], start
    for piece in pieces:
        words.append(Word(round(time, 3), round(time + word_s, 3), piece, 0.9))
        time += word_s + pause_s
    return words


def segment(words: list[Word], **scores) -> Segment:
    return Segment(words[0].start, words[-1].end, "".join(w.text for w in words).strip(), words, **scores)


def test_long_sentence_makes_balanced_lines_of_at_most_42_characters():
    words = timed("When the sun goes down over the harbour the fishermen bring boats home")
    cues = build_cues([segment(words)])
    assert len(cues) == 1 and len(cues[0].lines) == 2
    first, second = cues[0].lines
    assert max(len(first), len(second)) <= 42 and abs(len(first) - len(second)) <= 10
    assert " ".join(cues[0].lines) == "When the sun goes down over the harbour the fishermen bring boats home"


def test_a_new_cue_starts_at_each_sentence_end():
    cues = build_cues([segment(timed("It is late. We should go home now."))])
    assert [cue.text for cue in cues] == ["It is late.", "We should go home now."]


def test_a_full_cue_breaks_after_a_comma_rather_than_mid_clause():
    text = "After a long and difficult winter in the mountains, the villagers finally saw the first green leaves"
    cues = build_cues([segment(timed(text, word_s=0.25))])
    assert cues[0].text.replace("\n", " ").endswith("mountains,")
    assert all(len(line) <= 42 for cue in cues for line in cue.lines)


def clause_pauses(text: str, pause_s: float = 0.4) -> list[Word]:
    """`text` spoken at 0.3 s a word, with a pause after each comma."""
    words, time = [], 0.0
    for piece in text.split():
        words.append(Word(round(time, 3), round(time + 0.3, 3), " " + piece, 0.9))
        time += 0.3 + (pause_s if piece.endswith(",") else 0.0)
    return words


def test_a_list_is_not_cut_into_one_word_cues():
    text = "Permission is granted to use, copy, modify, merge, publish, distribute, sublicense, and sell copies."
    cues = build_cues([segment(clause_pauses(text))])
    assert all(len(cue.words) >= 3 for cue in cues), [cue.text for cue in cues]
    assert all(len(line) <= 42 for cue in cues for line in cue.lines)


def test_a_short_clause_joins_its_neighbour_and_long_ones_still_break_at_the_pause():
    text = "Permission is hereby granted, free of charge, to any person obtaining a copy of this software."
    cues = [cue.text.replace("\n", " ") for cue in build_cues([segment(clause_pauses(text))])]
    assert cues == ["Permission is hereby granted,", "free of charge, to any person obtaining a copy of this software."]


@pytest.mark.parametrize(
    "text, together",
    [
        ("The crew were Commander William McCool, Dr. Kalpana Chawla and Ilan Ramon.", "Dr. Kalpana"),
        ("She met Mrs. Robinson at the station.", "Mrs. Robinson"),
        ("Prices in the U.S. rose again this year.", "U.S. rose"),
        ("Bring something warm, e.g. a coat or a scarf.", "e.g. a coat"),
        ("The version is 3. 5 and it works.", "3. 5"),
        ("He said wait. then he left the room.", "wait. then"),  # no sentence starts in lower case
        ("Heute kommt Hr. Müller mit Fr. Schmidt zum Essen.", "Hr. Müller mit Fr. Schmidt"),
        ("Das dauert ca. drei Stunden, vgl. Kapitel zwei.", "ca. drei"),
        ("Nous avons vu Mme. Curie et Mlle. Dupont hier.", "Mme. Curie et Mlle. Dupont"),
        ("Ayer llegó la Sra. García con la Dra. López.", "Sra. García con la Dra. López"),
        ("Il Dott. Rossi parla con la Sig. Bianchi.", "Dott. Rossi"),
        ("Vandaag spreekt Dhr. Jansen met Mevr. de Vries.", "Dhr. Jansen met Mevr."),
        ("Он пришёл, т.е. вернулся домой вечером.", "т.е. вернулся"),
        ("Read chapter No. 5 before class.", "No. 5"),
    ],
)
def test_titles_short_forms_and_numbers_are_no_sentence_ends(text, together):
    cues = [cue.text.replace("\n", " ") for cue in build_cues([segment(timed(text))])]
    assert any(together in cue for cue in cues), cues


def test_a_sentence_that_ends_in_a_short_word_still_ends():
    cues = build_cues([segment(timed("I asked him and he said no. Then he left the room."))])
    assert [cue.text.replace("\n", " ") for cue in cues] == ["I asked him and he said no.", "Then he left the room."]


def test_a_pause_the_vad_heard_starts_a_new_cue_where_whisper_stretched_a_word_over_it():
    # Whisper's times run "travel" on to the next word; the VAD heard 1.2 s of silence there.
    words = timed("We watched a movie about space", start=1.0, word_s=0.2) + [
        Word(2.2, 3.8, " travel", 0.9),
        Word(3.8, 4.2, " Yes.", 0.9),
    ]
    assert len(build_cues([segment(words)])) == 1
    cues = build_cues([segment(words)], BROADCAST, silences=[(2.5, 3.7)])
    assert [cue.text for cue in cues] == ["We watched a movie about space travel", "Yes."]
    assert len(build_cues([segment(words)], BROADCAST, silences=[(2.9, 3.3)])) == 1  # a short breath


def test_a_long_pause_starts_a_new_cue():
    words = timed("hello there", word_s=0.4) + timed("general kenobi", start=3.0, word_s=0.4)
    assert [cue.text for cue in build_cues([segment(words)])] == ["hello there", "general kenobi"]


@pytest.mark.parametrize(
    "words, expected",
    [
        # 0.2 s of speech: it may linger 0.5 s (to 5.7), and takes the rest of its 0.8 s before it (from 4.9).
        (timed("Yes.", start=5.0, word_s=0.2) + timed("Then we agree.", start=9.0), (4.9, 5.7)),
        # The next cue starts at 1.5, so this one ends 80 ms before (1.42) and starts 0.8 s earlier (0.62).
        (timed("Yes.", start=1.0, word_s=0.3) + timed("Then we agree.", start=1.5), (0.62, 1.42)),
        # 42 characters need 2.1 s at 20 a second: from 0.5 s after the last word (11.7) back to 9.6.
        (timed("Extraordinarily unbelievable circumstances.", start=10.0, word_s=0.4), (9.6, 11.7)),
    ],
)
def test_a_short_or_fast_cue_takes_time_from_the_silence_around_it(words, expected):
    first = build_cues([segment(words)])[0]
    assert (first.start, first.end) == pytest.approx(expected)


def test_no_cue_is_longer_than_7_seconds():
    words = timed(" ".join(["word"] * 40), word_s=0.35)  # 14 s without punctuation or pauses
    cues = build_cues([segment(words)])
    assert len(cues) >= 2 and all(cue.end - cue.start <= 7.0 for cue in cues)


def test_cues_keep_80_ms_apart_even_when_speech_runs_on():
    words = timed("One. Two. Three. Four.", word_s=0.5)
    cues = build_cues([segment(words)])
    assert all(b.start - a.end >= 0.08 - 1e-9 for a, b in zip(cues, cues[1:]))


def test_a_cue_never_lingers_over_a_long_silence():
    cues = build_cues([segment(timed("Goodbye.", start=1.0, word_s=1.0))])
    assert cues[0].end == pytest.approx(2.0)


def test_fast_speech_is_given_time_from_the_silence_around_it():
    words = timed("Extraordinarily unbelievable circumstances.", start=10.0, word_s=0.4)
    cue = build_cues([segment(words)])[0]
    characters = sum(len(line) for line in cue.lines)
    assert characters / 1.2 > 20  # spoken too fast to read in its own time
    assert characters / (cue.end - cue.start) <= 20.0 + 1e-6
    assert cue.start >= 10.0 - 0.5 and cue.end <= 11.2 + 0.5


def test_chinese_is_joined_without_spaces_16_full_width_characters_a_line():
    text = "今天天气很好我们一起去公园散步然后再去图书馆看书好不好呢"
    cues = build_cues([segment(timed(text, word_s=0.2, chinese=True))], CHINESE_JAPANESE)
    assert "".join("".join(cue.lines) for cue in cues) == text
    assert all(" " not in line and width(line, CHINESE_JAPANESE) <= 16 for cue in cues for line in cue.lines)
    for cue in cues:  # 0.2 s a character is 5 a second: well under 17
        assert sum(width(line, CHINESE_JAPANESE) for line in cue.lines) / (cue.end - cue.start) <= 17.0


def test_chinese_sentence_end_starts_a_new_cue_and_half_width_counts_half():
    cues = build_cues([segment(timed("你好。我们走吧。", chinese=True))], CHINESE_JAPANESE)
    assert [cue.text for cue in cues] == ["你好。", "我们走吧。"]
    assert width("AI很好", CHINESE_JAPANESE) == 3.0


def test_chinese_script_conversion_to_taiwan_traditional_keeps_timings_and_punctuation():
    words = timed("我们用软件和鼠标上网，信息很多。", chinese=True)
    converted = convert_chinese_script([segment(words)], "Taiwan Traditional")[0]
    assert "".join(w.text for w in converted.words) == "我們用軟體和滑鼠上網，資訊很多。"
    assert [(w.start, w.end) for w in converted.words] == [(w.start, w.end) for w in words]
    hong_kong = convert_chinese_script([segment(words)], "Hong Kong Traditional")[0].text
    assert hong_kong == "我們用軟件和鼠標上網，信息很多。"
    simplified = convert_chinese_script([segment(timed("我們用軟體", chinese=True))], "Simplified")[0].text
    assert simplified == "我们用软体"
    assert convert_chinese_script([segment(words)], "unchanged")[0].text == "我们用软件和鼠标上网，信息很多。"


def test_segments_over_non_speech_are_dropped_with_the_reason():
    real = segment(timed("Real words here."))
    invented = segment(timed("Something made up.", start=5.0), no_speech_prob=0.9, avg_logprob=-1.5)
    kept, dropped = clean_segments([real, invented])
    assert kept == [real]
    assert dropped[0].text == "Something made up." and "no speech" in dropped[0].reason


def test_phantom_lines_are_dropped_only_when_the_model_doubts_them():
    doubtful = segment([Word(1, 2, " Thanks", 0.3), Word(2, 3, " for", 0.4), Word(3, 4, " watching!", 0.3)])
    sure = segment([Word(1, 2, " Thanks", 0.95), Word(2, 3, " for", 0.95), Word(3, 4, " watching!", 0.9)])
    chinese = segment(timed("字幕由志愿者提供", chinese=True), no_speech_prob=0.4)
    kept, dropped = clean_segments([doubtful, sure, chinese])
    assert kept == [sure]
    assert [d.text for d in dropped] == [doubtful.text, chinese.text]
    assert all("phantom" in d.reason for d in dropped)


def test_a_phrase_repeated_in_a_loop_is_collapsed():
    words = timed("I think so " * 5 + "and then we left")
    assert " ".join(w.text.strip() for w in collapse_loops(words)) == "I think so and then we left"
    speech = timed("no no no that is wrong")  # three times one word is still speech
    assert collapse_loops(speech) == speech
    kept, dropped = clean_segments([segment(words)])
    assert kept[0].text == "I think so and then we left" and "loop" in dropped[0].reason


texts = st.text(alphabet="abcdefghij,.?", min_size=1, max_size=12).filter(lambda t: t.strip(",.?"))


CHINESE_WORDS = st.sampled_from(["我們", "今天", "學習", "中文", "，", "。", "台灣", "AI", "3.5"])


@st.composite
def word_streams(draw, pieces=texts, before: str = " "):
    """Words of `pieces`, each after `before` (Whisper's space; none in Chinese), at random times."""
    words, time = [], draw(st.floats(0, 5))
    for text in draw(st.lists(pieces, min_size=1, max_size=60)):
        time += draw(st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.9, 2.5]))
        length = draw(st.floats(0.05, 1.5))
        words.append(Word(round(time, 3), round(time + length, 3), before + text, 0.9))
        time += length
    return words


@settings(max_examples=300, deadline=None)
@given(word_streams())
def test_cues_obey_every_limit_that_can_be_obeyed(words):
    assert_cues_obey_the_rules(build_cues([segment(words)], BROADCAST), words, BROADCAST)


@settings(max_examples=200, deadline=None)
@given(word_streams(CHINESE_WORDS, before=""))
def test_chinese_cues_obey_every_limit_that_can_be_obeyed(words):
    assert_cues_obey_the_rules(build_cues([segment(words)], CHINESE_JAPANESE), words, CHINESE_JAPANESE)


def test_writers_give_known_text_and_ass_lines():
    words = timed("Hello there.", start=1.0, word_s=0.5) + timed("General Kenobi.", start=4.0, word_s=0.6)
    segments = [segment(words[:2]), segment(words[2:])]
    transcript = Transcript("talk.wav", 6.0, 2.2, "en", segments, build_cues(segments), [], {}, 1)
    assert render(transcript, "txt") == "Hello there.\nGeneral Kenobi.\n"
    dialogue = [line for line in render(transcript, "ass").splitlines() if line.startswith("Dialogue:")]
    # Each sentence its own cue, exactly as long as its words: long and slow enough to be read.
    assert dialogue == [
        "Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,Hello there.",
        "Dialogue: 0,0:00:04.00,0:00:05.20,Default,,0,0,0,,General Kenobi.",
    ]


def test_cue_rules_cleanup_and_writers_load_no_engine():
    # In a fresh interpreter: this one has loaded the engine for other tests.
    check = (
        "import sys, datatypes, subtitles, cleanup, writers; "
        "print(sorted(m for m in ('ctranslate2', 'faster_whisper', 'av', 'torch') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_word_highlight_times_each_word_in_ass_and_webvtt():
    words = timed("Hello there, AT&T and", start=1.0, word_s=0.4, pause_s=0.1) + timed(
        "friends.", start=3.5, word_s=0.5
    )
    segments = [segment(words)]
    transcript = Transcript("talk.wav", 5.0, 3.0, "en", segments, build_cues(segments), [], {}, 1)
    ass = [line for line in render(transcript, "ass", word_highlight=True).splitlines() if line.startswith("Dialogue:")]
    # A word lit from its start until the next one starts (the last: until it ends), in centiseconds.
    assert ass == [
        "Dialogue: 0,0:00:01.00,0:00:04.00,Default,,0,0,0,,"
        r"{\k50}Hello{\k50} there,{\k50} AT&T{\k100} and{\k50} friends."
    ]
    vtt = render(transcript, "vtt", word_highlight=True)
    assert (
        "00:00:01.000 --> 00:00:04.000\nHello<00:00:01.500> there,<00:00:02.000> AT&amp;T"
        "<00:00:02.500> and<00:00:03.500> friends.\n"
    ) in vtt
    # Without it: the plain lines (WebVTT escaped, as HTML), and SRT never carries word times.
    assert "\nHello there, AT&amp;T and friends.\n" in render(transcript, "vtt")
    assert render(transcript, "srt", word_highlight=True) == render(transcript, "srt")


def test_word_highlight_on_two_lines_a_lead_in_and_chinese():
    words = timed("one two three four five six seven eight", start=2.0, word_s=0.25)
    transcript = Transcript(
        "talk.wav",
        6.0,
        3.0,
        "en",
        [segment(words)],
        build_cues([segment(words)], CueOptions(max_line_chars=30)),
        [],
        {},
        1,
    )
    cue = transcript.cues[0]
    assert len(cue.lines) == 2
    cue.start = 1.8  # shown before its first word, as a short cue may be
    ass = render(transcript, "ass", word_highlight=True).splitlines()[-1].split(",,", 2)[-1]
    assert ass.startswith(r"{\k20}{\k25}one{\k25} two")
    assert r"\N{\k25}" in ass and ass.replace(r"\N", "\n").replace("{", "<").count("<") == len(words) + 1
    chinese = timed("你好世界。", start=0.5, word_s=0.3, chinese=True)
    zh = Transcript(
        "talk.wav", 3.0, 1.5, "zh", [segment(chinese)], build_cues([segment(chinese)], CHINESE_JAPANESE), [], {}, 1
    )
    assert "\n你<00:00:00.800>好<00:00:01.100>世<00:00:01.400>界<00:00:01.700>。\n" in render(
        zh, "vtt", word_highlight=True
    )
