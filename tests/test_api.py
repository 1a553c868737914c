"""The OpenAI-compatible API of the running app, driven by the official `openai` client."""

import threading
import time

import openai
import pytest
import srt
import webvtt
from openai import OpenAI

from helpers import get_json, job_folders, start_app, word_error_rate

pytestmark = pytest.mark.server  # starts the app (or a Ray cluster) as its own processes

KEY = "test-key-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = start_app(
        tmp_path_factory.mktemp("api"),
        WHISPER_DEVICES="cpu*2",
        WHISPER_API_KEY=KEY,
        WHISPER_MAX_FILE_SIZE="2mb",
        WHISPER_QUEUE_SIZE="1",
    )
    yield app
    assert app.stop() == 143
    print(app.output())


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def transcribe(client: OpenAI, path, **options):
    with open(path, "rb") as file:
        return client.audio.transcriptions.create(model="whisper-1", file=file, **options)


def test_models_list_the_default_and_the_servers_models(client):
    assert [model.id for model in client.models.list()] == ["whisper-1", "tiny.en"]


def test_every_response_format(client, jfk, tmp_path):
    assert word_error_rate(jfk[1], transcribe(client, jfk[0]).text) <= 0.10  # json
    assert word_error_rate(jfk[1], transcribe(client, jfk[0], response_format="text")) <= 0.10
    cues = list(srt.parse(transcribe(client, jfk[0], response_format="srt")))
    assert (
        word_error_rate(jfk[1], " ".join(cue.content for cue in cues)) <= 0.10 and cues[-1].end.total_seconds() <= 11.1
    )
    vtt = tmp_path / "jfk.vtt"
    vtt.write_text(transcribe(client, jfk[0], response_format="vtt"))
    assert word_error_rate(jfk[1], " ".join(caption.text for caption in webvtt.read(vtt))) <= 0.10
    verbose = transcribe(client, jfk[0], response_format="verbose_json")
    assert verbose.language == "en" and verbose.duration == pytest.approx(11.0, abs=0.1)
    assert verbose.segments and verbose.words is None  # words only when asked for


def test_word_timestamps(client, jfk):
    verbose = transcribe(client, jfk[0], response_format="verbose_json", timestamp_granularities=["word", "segment"])
    words = verbose.words
    assert word_error_rate(jfk[1], " ".join(word.word for word in words)) <= 0.10
    assert all(0 <= word.start <= word.end <= 11.0 for word in words)
    assert [word.start for word in words] == sorted(word.start for word in words)
    country = [word for word in words if word.word.strip(".,").lower() == "country"]
    assert len(country) == 2 and 6.0 < country[0].start < 8.0 and 9.0 < country[1].start < 11.0


def test_a_wrong_key_is_refused(server, jfk):
    stranger = OpenAI(base_url=server.url + "/v1", api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        transcribe(stranger, jfk[0])
    assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"


# The client marks its translations call deprecated; the endpoint is still part of OpenAI's API.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_bad_requests_get_clear_errors_and_the_server_serves_on(server, client, jfk, tmp_path):
    bad = tmp_path / "song.mp3"
    bad.write_text("this is not audio\n")
    with pytest.raises(openai.BadRequestError, match="not a readable audio or video file"):
        transcribe(client, bad)
    with pytest.raises(openai.BadRequestError, match="cannot translate"), open(jfk[0], "rb") as file:
        client.audio.translations.create(model="whisper-1", file=file)
    with pytest.raises(openai.BadRequestError, match="at most 223 fit"):
        transcribe(client, jfk[0], prompt="word " * 400)
    with pytest.raises(openai.BadRequestError, match="does not exist here"), open(jfk[0], "rb") as file:
        client.audio.transcriptions.create(model="large-v9", file=file)
    too_big = tmp_path / "big.wav"
    too_big.write_bytes(b"\0" * 3_000_000)
    with pytest.raises(openai.APIStatusError) as refused:
        transcribe(client, too_big)
    assert refused.value.status_code == 413
    assert word_error_rate(jfk[1], transcribe(client, jfk[0]).text) <= 0.10
    assert get_json(server.url + "/health")["status"] == "ok"
    assert job_folders(server.results) == []  # each request's folder went with its answer


def test_concurrent_calls_share_the_workers_and_the_queue_is_bounded(client, jfk):
    answers: list = []

    def call():
        try:
            answers.append(transcribe(client, jfk[0]).text)
        except openai.RateLimitError as error:
            answers.append(error)

    # Two workers: 4 jobs run at once and 1 waits (WHISPER_QUEUE_SIZE=1); any more are refused.
    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    texts = [answer for answer in answers if isinstance(answer, str)]
    refused = [answer for answer in answers if isinstance(answer, openai.RateLimitError)]
    assert len(answers) == 8 and len(texts) >= 2 and len(refused) >= 1 and len(texts) + len(refused) == 8
    assert all(word_error_rate(jfk[1], text) <= 0.10 for text in texts)
    assert all(error.body["code"] == "queue_full" for error in refused)


def test_wrong_keys_are_slowed_like_wrong_passwords(server, client):
    # Last of this module's tests on the shared server: it locks this address out for a moment.
    stranger = OpenAI(base_url=server.url + "/v1", api_key="guess", max_retries=0)
    for _ in range(6):
        try:
            stranger.models.list()
        except openai.AuthenticationError:
            continue
        except openai.RateLimitError as locked:
            wait = int(locked.response.headers["Retry-After"])
            break
    else:
        pytest.fail("six wrong keys in a row were never slowed down")
    with pytest.raises(openai.RateLimitError):
        client.models.list()  # the address waits, whatever key it sends now
    time.sleep(wait + 0.1)
    assert [model.id for model in client.models.list()][0] == "whisper-1"


def test_with_a_login_and_no_key_the_api_is_closed(tmp_path, jfk):
    app = start_app(tmp_path, WHISPER_DEVICES="cpu", WHISPER_USERNAME="ada", WHISPER_PASSWORD="pw")
    try:
        with pytest.raises(openai.AuthenticationError, match="needs a key"):
            transcribe(OpenAI(base_url=app.url + "/v1", api_key="anything", max_retries=0), jfk[0])
    finally:
        assert app.stop() == 143
