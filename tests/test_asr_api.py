"""whisper-asr-webservice's API, sent the exact requests of Bazarr's Whisper provider and of subgen's clients."""

import json
import subprocess

import pytest
import requests
import srt
import webvtt

from helpers import running_app, word_error_rate

pytestmark = pytest.mark.server
KEY = "bazarr-key"


class Bazarr:
    """What Bazarr's Whisper provider sends (custom_libs/subliminal_patch/providers/whisperai.py): the
    audio as ffmpeg makes it (raw 16-bit mono PCM at 16 kHz), with `encode=false`, and no header of ours."""

    def __init__(self, endpoint: str, ffmpeg: str):
        self.endpoint = endpoint.rstrip("/")
        self.ffmpeg = ffmpeg
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "Subliminal/2.1.0"

    def encode_audio_stream(self, path) -> bytes:
        return subprocess.run(
            [
                self.ffmpeg,
                "-nostdin",
                "-threads",
                "0",
                "-i",
                str(path),
                "-f",
                "s16le",
                "-acodec",
                "pcm_s16le",
                "-ac",
                "1",
                "-ar",
                "16000",
                "-af",
                "aresample=async=1",
                "-",
            ],
            capture_output=True,
            check=True,
        ).stdout

    def detect_language(self, path, pass_video_name: bool = True) -> requests.Response:
        out = self.encode_audio_stream(path)
        video_name = str(path) if pass_video_name else None
        return self.session.post(
            f"{self.endpoint}/detect-language",
            params={"encode": "false", "video_file": video_name},
            files={"audio_file": out},
            timeout=(10, 300),
        )

    def asr(self, path, task: str, language: str) -> requests.Response:
        out = self.encode_audio_stream(path)
        return self.session.post(
            f"{self.endpoint}/asr",
            params={"task": task, "language": language, "output": "srt", "encode": "false", "video_file": str(path)},
            files={"audio_file": out},
            timeout=(10, 300),
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("asr"), WHISPER_DEVICES="cpu*2") as app:
        yield app


def subtitles_text(text: str) -> str:
    return " ".join(cue.content for cue in srt.parse(text))


def test_bazarr_detects_the_language_then_gets_an_srt(server, ffmpeg, jfk):
    bazarr = Bazarr(server.url, ffmpeg)
    detected = bazarr.detect_language(jfk[0])
    assert detected.status_code == 200
    results = detected.json()
    assert results["language_code"] == "en" and results["detected_language"] == "english"
    assert 0 < results["confidence"] <= 1
    answer = bazarr.asr(jfk[0], "transcribe", "en")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["content-disposition"] == 'attachment; filename="audio_file.srt"'  # Bazarr names none
    cues = list(srt.parse(answer.content.decode()))
    assert word_error_rate(jfk[1], " ".join(cue.content for cue in cues)) <= 0.10
    assert cues[-1].end.total_seconds() <= 11.1


def test_bazarr_asking_a_translation_of_an_english_only_model_is_told_why(server, ffmpeg, jfk):
    answer = Bazarr(server.url, ffmpeg).asr(jfk[0], "translate", "en")
    assert answer.status_code == 400 and "cannot translate" in answer.json()["detail"]


def test_subgens_requests_with_the_file_as_it_is(server, jfk):
    with open(jfk[0], "rb") as file:
        audio = file.read()
    # What subgen's ASR clients send: the file itself (encode true), its path, word timestamps, JSON.
    answer = requests.post(
        f"{server.url}/asr",
        params={
            "task": "transcribe",
            "language": "en",
            "video_file": "/tv/Show/S01E01.mkv",
            "encode": "true",
            "output": "json",
            "word_timestamps": "true",
            "initial_prompt": "Inaugural address.",
        },
        files={"audio_file": ("S01E01.flac", audio)},
        timeout=300,
    )
    document = json.loads(answer.content)
    assert set(document) == {"language", "segments", "text"} and document["language"] == "en"
    assert word_error_rate(jfk[1], document["text"]) <= 0.10
    words = [word for segment in document["segments"] for word in segment["words"]]
    assert words and set(words[0]) == {"start", "end", "word", "probability"}
    assert [word["start"] for word in words] == sorted(word["start"] for word in words)
    # subgen's language detection: a stretch of the file, by offset and length.
    detected = requests.post(
        f"{server.url}/detect-language",
        params={"encode": "true", "detect_lang_offset": "2", "detect_lang_length": "8"},
        files={"audio_file": ("S01E01.flac", audio)},
        timeout=300,
    ).json()
    assert detected["language_code"] == "en"


@pytest.mark.parametrize("output", ["txt", "vtt", "srt", "tsv", "json"])
def test_every_output_of_that_project(server, jfk, tmp_path, output):
    with open(jfk[0], "rb") as file:
        answer = requests.post(
            f"{server.url}/asr",
            params={"output": output, "diarize": "true", "vad_filter": "true"},
            files={"audio_file": ("jfk.flac", file)},
            timeout=300,
        )
    assert answer.status_code == 200, answer.text
    text = answer.content.decode()
    if output == "vtt":
        (tmp_path / "jfk.vtt").write_text(text)
        said = " ".join(caption.text for caption in webvtt.read(tmp_path / "jfk.vtt"))
    elif output == "srt":
        said = subtitles_text(text)
    elif output == "tsv":
        rows = [line.split("\t") for line in text.splitlines()]
        assert rows[0] == ["start", "end", "text"] and all(
            start.isdigit() and end.isdigit() for start, end, _ in rows[1:]
        )
        said = " ".join(row[2] for row in rows[1:])
    elif output == "json":
        said = json.loads(text)["text"]
        assert all(segment["words"] is None for segment in json.loads(text)["segments"])  # words only when asked
    else:
        said = text
    assert word_error_rate(jfk[1], said) <= 0.10, text


def test_bad_requests_are_told_why_and_the_server_serves_on(server, jfk):
    refusals = {
        ("output", "docx"): "Output is one of txt, vtt, srt, tsv, json",
        ("language", "klingon"): "Unknown language",
        ("detect", "x"): None,
    }
    with open(jfk[0], "rb") as file:
        audio = file.read()
    for (name, value), said in refusals.items():
        if name == "detect":
            answer = requests.post(
                f"{server.url}/detect-language",
                params={"detect_lang_length": value},
                files={"audio_file": ("jfk.flac", audio)},
                timeout=60,
            )
            assert answer.status_code == 400 and "whole number of seconds" in answer.json()["detail"]
            continue
        answer = requests.post(
            f"{server.url}/asr", params={name: value}, files={"audio_file": ("jfk.flac", audio)}, timeout=60
        )
        assert answer.status_code == 400 and said in answer.json()["detail"], answer.text
    broken = requests.post(f"{server.url}/asr", files={"audio_file": ("song.mp3", b"not audio")}, timeout=60)
    assert broken.status_code == 400 and "cannot be transcribed" in broken.json()["detail"]
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


def test_with_a_key_or_a_login_bazarr_uses_the_keys_address(tmp_path, ffmpeg, jfk):
    with running_app(
        tmp_path, WHISPER_DEVICES="cpu", WHISPER_API_KEY=KEY, WHISPER_USERNAME="ada", WHISPER_PASSWORD="pw"
    ) as app:
        refused = Bazarr(app.url, ffmpeg).asr(jfk[0], "transcribe", "en")  # Bazarr sends no header
        assert refused.status_code == 401
        answer = Bazarr(f"{app.url}/key/{KEY}", ffmpeg).asr(jfk[0], "transcribe", "en")
        assert answer.status_code == 200 and word_error_rate(jfk[1], subtitles_text(answer.content.decode())) <= 0.1
        assert Bazarr(f"{app.url}/key/{KEY}", ffmpeg).detect_language(jfk[0]).json()["language_code"] == "en"
        with open(jfk[0], "rb") as file:  # other clients may send the key as a header
            headed = requests.post(
                f"{app.url}/asr", headers={"X-API-Key": KEY}, files={"audio_file": file}, timeout=300
            )
        assert headed.status_code == 200
        wrong = [Bazarr(f"{app.url}/key/guess{n}", ffmpeg).detect_language(jfk[0]).status_code for n in range(6)]
        assert wrong[:5] == [401] * 5 and wrong[5] == 429  # wrong keys are slowed like wrong passwords
