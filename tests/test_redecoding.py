"""Windows Whisper gets wrong are decoded again; words at the edges of speech are timed from the audio."""

import json
from dataclasses import replace

import numpy as np
import pytest

import speech
from datatypes import SAMPLE_RATE, Segment, Word, WorkUnit
from engines import ForgetfulTranscriber
from helpers import word_error_rate
from parallel_transcriber import ParallelTranscriber
from pipeline import transcribe_file
from redecoding import failed_checks, is_better, unpunctuated
from word_edges import refine_word_edges
from writers import render

UNIT = WorkUnit(0, [(0.0, 10.0)], np.zeros(10 * SAMPLE_RATE, dtype=np.float32))


def spoken(text: str, start: float = 0.5, end: float = 9.5, **scores) -> Segment:
    """`text` as one segment whose words share `start` to `end` evenly."""
    pieces = text.split()
    step = (end - start) / len(pieces)
    words = [Word(start + i * step, start + (i + 1) * step, " " + piece, 0.9) for i, piece in enumerate(pieces)]
    return Segment(start, end, text, words, **scores)


SENTENCES = "The quick brown fox jumps over the lazy dog. Please call me when you arrive at the station."


@pytest.mark.parametrize(
    ("segments", "said"),
    [
        ([spoken(SENTENCES)], []),
        ([spoken("Thank you. " * 12)], ["compression ratio", "the same words 4 times in a row"]),
        ([spoken(SENTENCES, avg_logprob=-1.4)], ["mean log probability -1.40 under -1.0"]),
        ([], ["0 words in 9.4 s of speech at 0.0 s"]),
        ([spoken("Yes.", 0.5, 1.0)], ["1 words in 9.4 s of speech"]),
    ],
)
def test_the_checks_name_what_is_wrong_with_a_units_text(segments, said):
    failed = failed_checks(UNIT, segments)
    assert len(failed) == len(said) and all(part in reason for part, reason in zip(said, failed)), failed


def test_text_without_punctuation_is_reported():
    assert unpunctuated([spoken((SENTENCES + " " + SENTENCES).replace(".", ""))]) == "36 words without punctuation"
    assert unpunctuated([spoken(SENTENCES + " " + SENTENCES)]) == ""


def test_the_decoding_that_fails_fewer_checks_is_better_then_the_surer_one():
    good, looping = [spoken(SENTENCES, avg_logprob=-0.4)], [spoken("Thank you. " * 12, avg_logprob=-0.1)]
    assert is_better(good, looping, UNIT) and not is_better(looping, good, UNIT)
    assert is_better(good, [], UNIT)
    assert is_better(good, [spoken(SENTENCES, avg_logprob=-0.6)], UNIT)


def test_a_window_whisper_left_empty_is_decoded_again_marked_and_the_same_every_time(model_spec, jfk, capfd):
    """The engine leaves the first unit empty in its batched pass: the check of speech without words
    catches it, the unit alone at rising temperatures gives the text, and the JSON says so."""
    with ParallelTranscriber(replace(model_spec, engine=ForgetfulTranscriber), ["cpu"]) as pool:
        first, second = transcribe_file(jfk[0], pool), transcribe_file(jfk[0], pool)
    assert word_error_rate(jfk[1], " ".join(cue.text for cue in first.cues)) <= 0.15
    assert first.segments[0].checks.startswith("0 words in")
    assert first.segments[0].checks.endswith("decoded again, the second decoding kept")
    assert [(cue.start, cue.end, cue.text) for cue in first.cues] == [(c.start, c.end, c.text) for c in second.cues]
    document = json.loads(render(first, "json"))
    assert document["segments"][0]["checks"] == first.segments[0].checks
    assert "unit 0: 0 words in" in capfd.readouterr().err


def burst_unit(level: float, noise: float) -> WorkUnit:
    """One span of 4 s: `noise` throughout, and a sound of `level` from 1.20 s to 2.70 s."""
    random = np.random.default_rng(5)
    audio = (random.standard_normal(4 * SAMPLE_RATE) * noise).astype(np.float32)
    audio[int(1.2 * SAMPLE_RATE) : int(2.7 * SAMPLE_RATE)] += speech.tone(1.5, 300.0) * level
    return WorkUnit(0, [(10.0, 14.0)], audio)


def test_words_at_the_edges_of_speech_take_their_edges_from_the_sound():
    unit = burst_unit(level=1.0, noise=0.001)  # in file time the sound lies from 11.2 s to 12.7 s
    words = [Word(10.95, 11.6, " Early", 0.9), Word(11.6, 12.0, " middle", 0.9), Word(12.0, 12.55, " end.", 0.9)]
    segment = Segment(10.95, 12.55, "Early middle end.", words)
    refine_word_edges(unit, [segment])
    assert words[0].start == pytest.approx(11.2, abs=0.011) and words[2].end == pytest.approx(12.7, abs=0.011)
    assert (words[0].end, words[1].start, words[1].end, words[2].start) == (11.6, 11.6, 12.0, 12.0)  # inside speech
    assert (segment.start, segment.end) == (words[0].start, words[2].end)


def test_where_the_noise_is_nearly_as_loud_as_the_speech_whispers_times_stay():
    unit = burst_unit(level=0.02, noise=0.05)
    words = [Word(10.95, 12.55, " Lost", 0.9)]
    refine_word_edges(unit, [Segment(10.95, 12.55, "Lost", words)])
    assert (words[0].start, words[0].end) == (10.95, 12.55)
