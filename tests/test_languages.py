"""Every language offline: the multilingual base model that installs from PyPI, and what tiny.en cannot do."""

import json
from pathlib import Path

import numpy as np
import opencc
import pytest

import models
import speech
from cue_rules import assert_cues_obey_the_rules
from datatypes import TranscribeOptions
from helpers import get_json, run_cli, start_app, word_error_rate
from parallel_transcriber import ParallelTranscriber
from pipeline import transcribe_file
from subtitles import BROADCAST, CHINESE_JAPANESE, PAUSE_BREAK_S
from worker import ModelSpec

pytestmark = pytest.mark.slow  # the base model: several times tiny.en's work

GERMAN = [
    "Der Zug nach Berlin fährt um neun Uhr ab.",
    "Heute ist das Wetter sonnig und warm.",
    "Wir brauchen Milch, Brot und Eier.",
    "Mein Bruder spielt jeden Abend Gitarre.",
]


def test_base_is_bundled_joined_once_into_the_cache_and_the_default_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    folder = Path(models.resolve_model("base"))
    assert folder.parent.parent == tmp_path and sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    assert folder.joinpath("model.bin").stat().st_size == 2 * 72_608_766  # the two halves, whole
    assert models.model_dimensions(str(folder)).decoder_layers == 6  # a readable CTranslate2 base model
    joined = folder.joinpath("model.bin").stat().st_mtime_ns
    assert models.resolve_model("base") == str(folder) and folder.joinpath("model.bin").stat().st_mtime_ns == joined
    assert models.default_model() == "base" and models.default_models() == ["base", "tiny.en"]


@pytest.fixture(scope="module")
def german(tmp_path_factory) -> Path:
    pieces = [speech.silence(0.5)]
    for sentence in GERMAN:
        pieces += [speech.speak(sentence, voice="de"), speech.silence(0.8)]
    return speech.write_wav(tmp_path_factory.mktemp("german") / "german.wav", np.concatenate(pieces))


def test_german_speech_comes_out_in_german_with_base(german, tmp_path):
    result = run_cli(german, "--model", "base", "--language", "de", "-o", tmp_path / "german.json")
    assert result.returncode == 0, result.stderr
    transcript = json.loads((tmp_path / "german.json").read_text())
    text = " ".join(segment["text"] for segment in transcript["segments"])
    assert transcript["language"] == "de" and {"Berlin", "Milch"} <= set(text.replace(",", " ").split())
    assert word_error_rate(" ".join(GERMAN), text) <= 0.4, text  # espeak-ng's German is hard to hear
    # tiny.en knows only English: the same recording comes out as English words, or refused.
    english_only = run_cli(german, "--model", "tiny.en", "--language", "de")
    assert english_only.returncode == 2 and "English-only" in english_only.stderr


def test_real_english_speech_is_detected_as_english_by_base(jfk, tmp_path):
    result = run_cli(jfk[0], "--model", "base", "-o", tmp_path / "jfk.json")
    assert result.returncode == 0, result.stderr
    transcript = json.loads((tmp_path / "jfk.json").read_text())
    assert transcript["language"] == "en"
    assert word_error_rate(jfk[1], " ".join(segment["text"] for segment in transcript["segments"])) <= 0.10


@pytest.mark.server
def test_the_app_without_a_model_setting_offers_base_and_tiny_en(tmp_path):
    server = start_app(tmp_path, WHISPER_MODEL="", WHISPER_DEVICES="cpu")
    try:
        assert get_json(server.url + "/health")["models"] == {"base": 1, "tiny.en": 1}
        menus = {c["props"].get("elem_id"): c["props"] for c in get_json(server.url + "/config")["components"]}
        language = menus["language"]
        # Names, the most used first; open for base, the default model.
        assert [label for label, _ in language["choices"][:4]] == [
            "Detect it",
            "English – en",
            "Chinese – zh",
            "Spanish – es",
        ]
        assert ["Javanese – jw", "jw"] in language["choices"] and len(language["choices"]) == 101
        assert language["interactive"] is not False and language["value"] == "auto"
    finally:
        server.stop()


ENGLISH = [
    "The weather today is sunny and warm.",
    "We need to buy milk, bread and eggs.",
    "My brother plays the guitar every evening.",
]
GERMAN_VOICE = "de+f2"  # of espeak-ng's German voices, the one base hears as German rather than Yiddish


@pytest.fixture(scope="module")
def english_german_english(tmp_path_factory) -> Path:
    """English sentences, then German ones, then English again, the parts 3 s apart."""
    pieces = [speech.silence(0.5)]
    for sentences, voice in [(ENGLISH, "en-us"), (GERMAN, GERMAN_VOICE), (ENGLISH[::-1], "en-us")]:
        for sentence in sentences:
            pieces += [speech.speak(sentence, voice=voice), speech.silence(0.5)]
        pieces.append(speech.silence(2.5))
    return speech.write_wav(tmp_path_factory.mktemp("switching") / "switching.wav", np.concatenate(pieces))


def test_several_languages_each_part_in_its_own_language(english_german_english, tmp_path):
    result = run_cli(english_german_english, "--model", "base", "--multilingual", "-o", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    transcript = json.loads((tmp_path / "out.json").read_text())
    parts = [(segment["language"], segment["text"]) for segment in transcript["segments"]]
    assert [language for language, _ in parts] == ["en", "de", "en"], parts
    assert word_error_rate(" ".join(ENGLISH), parts[0][1]) <= 0.2
    german_words = set(parts[1][1].replace(",", " ").replace(".", " ").split())
    assert {"Zug", "Berlin", "Milch", "Abend"} <= german_words, parts[1]  # German, not turned into English
    assert word_error_rate(" ".join(GERMAN), parts[1][1]) <= 0.6  # espeak-ng's female German voice is harder
    assert word_error_rate(" ".join(ENGLISH[::-1]), parts[2][1]) <= 0.2
    assert transcript["language"] == "en"  # the language of most of the speech (two parts of three)
    # No cue mixes the languages: the German part's cues hold German words only.
    german_cues = [cue["text"] for cue in transcript["cues"] if "Berlin" in cue["text"] or "Milch" in cue["text"]]
    assert german_cues and not any(word in " ".join(german_cues) for word in ("weather", "guitar", "milk"))

    # Without --multilingual the language is detected once, and the German part comes out in English.
    once = run_cli(english_german_english, "--model", "base", "-o", tmp_path / "once.json")
    assert once.returncode == 0, once.stderr
    assert {segment["language"] for segment in json.loads((tmp_path / "once.json").read_text())["segments"]} == {"en"}


def test_several_languages_need_a_multilingual_model_and_no_fixed_language(english_german_english):
    english_only = run_cli(english_german_english, "--multilingual")  # tiny.en
    assert english_only.returncode == 2 and "English-only: for several languages" in english_only.stderr
    fixed = run_cli(english_german_english, "--model", "base", "--multilingual", "--language", "de")
    assert fixed.returncode == 2 and "leave the language at auto" in fixed.stderr


@pytest.fixture(scope="module")
def base_worker():
    with ParallelTranscriber(ModelSpec(models.resolve_model("base"), name="base"), ["cpu"]) as pool:
        yield pool


def all_words(transcript) -> list:
    return [word for segment in transcript.segments for word in segment.words]


def test_base_words_on_the_test_sentences_make_cues_that_obey_the_rules(base_worker, composition):
    transcript = transcribe_file(composition[0], base_worker)
    assert (
        word_error_rate(" ".join(placed.text for placed in composition[1]), " ".join(c.text for c in transcript.cues))
        <= 0.15
    )
    assert_cues_obey_the_rules(transcript.cues, all_words(transcript), BROADCAST)


# Pinyin with tone numbers, which espeak-ng's Mandarin voice reads as Mandarin (it reads Chinese
# characters far worse); base hears it as Mandarin when told the language. Each phrase without
# punctuation, 1.5 s apart: cues must break at the pauses, where Whisper writes no punctuation.
MANDARIN = ["wo3 men5 qu4 tai2 bei3", "jin1 tian1 tian1 qi4 hen3 hao3", "wo3 xiang3 he1 cha2"]  # 我们去台北 ...


@pytest.fixture(scope="module")
def mandarin(tmp_path_factory):
    pieces = [speech.silence(0.5)]
    for phrase in MANDARIN:
        pieces += [phrase, speech.silence(1.5)]
    samples, placed = speech.compose(pieces, voice="cmn-latn-pinyin")
    return speech.write_wav(tmp_path_factory.mktemp("mandarin") / "mandarin.wav", samples), placed


def test_mandarin_in_taiwan_script_by_default_in_simplified_when_asked(base_worker, mandarin):
    taiwan = transcribe_file(mandarin[0], base_worker, TranscribeOptions(language="zh"))
    simplified = transcribe_file(
        mandarin[0], base_worker, TranscribeOptions(language="zh"), chinese_script="Simplified"
    )
    taiwan_text, simplified_text = ("".join(cue.text for cue in t.cues) for t in (taiwan, simplified))
    # Heard as Mandarin: "we go to Taipei", "I'd like some tea" (the weather in between is heard worse).
    assert "我們去臺北" in taiwan_text and "我想喝茶" in taiwan_text, taiwan_text
    assert "我们去台北" in simplified_text, simplified_text
    assert opencc.OpenCC("s2twp").convert(taiwan_text) == taiwan_text, taiwan_text
    assert opencc.OpenCC("t2s").convert(simplified_text) == simplified_text, simplified_text
    assert taiwan_text != simplified_text  # the same speech, in the two scripts
    assert opencc.OpenCC("t2s").convert(taiwan_text) == simplified_text
    for transcript in (taiwan, simplified):
        assert transcript.language == "zh"
        assert_cues_obey_the_rules(transcript.cues, all_words(transcript), CHINESE_JAPANESE)  # 16 a line
        for cue in transcript.cues:  # no cue runs over a pause between phrases
            assert all(later.start - earlier.end < PAUSE_BREAK_S for earlier, later in zip(cue.words, cue.words[1:])), (
                cue
            )
            assert not any(cue.words[0].start < placed.start - 0.5 < cue.words[-1].end for placed in mandarin[1]), cue
