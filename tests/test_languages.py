"""Every language offline: the multilingual base model that installs from PyPI, and what tiny.en cannot do."""

import json
from pathlib import Path

import numpy as np
import pytest

import models
import speech
from helpers import get_json, run_cli, start_app, word_error_rate

pytestmark = pytest.mark.slow  # the base model: several times tiny.en's work

GERMAN = ["Der Zug nach Berlin fährt um neun Uhr ab.", "Heute ist das Wetter sonnig und warm.",
          "Wir brauchen Milch, Brot und Eier.", "Mein Bruder spielt jeden Abend Gitarre."]


def test_base_is_bundled_joined_once_into_the_cache_and_the_default_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    folder = Path(models.resolve_model("base"))
    assert folder.parent.parent == tmp_path and sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
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


def test_the_app_without_a_model_setting_offers_base_and_tiny_en(tmp_path):
    server = start_app(tmp_path, WHISPER_MODEL="", WHISPER_DEVICES="cpu")
    try:
        assert get_json(server.url + "/health")["models"] == {"base": 1, "tiny.en": 1}
    finally:
        server.stop()
