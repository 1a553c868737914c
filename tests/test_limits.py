"""Clients that misbehave, against the running app: bodies that never end or stall, guesses behind a forged
header, clients that leave mid-job, many users with the same file, and what a crash leaves behind."""

import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import srt
from gradio_client import Client, handle_file
from openai import OpenAI

from conftest import make_media
from helpers import get_json, job_folders, running_app, wait_until, word_error_rate

pytestmark = pytest.mark.server  # starts the app (or a Ray cluster) as its own processes

LIMIT = "2mb"
LIMIT_BYTES = 2 * 1024**2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(
        tmp_path_factory.mktemp("limits"),
        WHISPER_DEVICES="cpu*2",
        WHISPER_MAX_FILE_SIZE=LIMIT,
        WHISPER_UPLOAD_IDLE_SECONDS="2",
        WHISPER_QUEUE_SIZE="2",
    ) as app:
        yield app


@pytest.fixture(scope="module")
def small_long_talk(long_talk, ffmpeg, tmp_path_factory) -> Path:
    """The 9-minute talk in well under the upload limit (Opus at 16 kbit/s)."""
    path = tmp_path_factory.mktemp("opus") / "long-talk.ogg"
    make_media(ffmpeg, "-i", str(long_talk), "-c:a", "libopus", "-b:a", "16k", str(path))
    assert path.stat().st_size < LIMIT_BYTES
    return path


def sizes_under(folder: Path) -> list[int]:
    return [path.stat().st_size for path in folder.rglob("*") if path.is_file()]


def chunked(url: str, path: str, chunks: int, headers: dict) -> tuple[int, int]:
    """POST a multipart body of `chunks` MiB with Transfer-Encoding: chunked (no Content-Length); the status
    answered and how many MiB were sent before it."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "limits"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n{extra}"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        connection.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        piece = b"\0" * 2**20
        try:
            while sent < chunks:
                connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += 1
            connection.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped the body: good
        answer = connection.recv(4096).decode(errors="replace")
    return int(answer.split()[1]), sent


@pytest.mark.parametrize("path, headers", [("/v1/audio/transcriptions", {}), ("/gradio_api/upload", {})])
def test_a_chunked_body_is_stopped_at_the_cap_and_nothing_larger_is_stored(server, path, headers):
    peak = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak.append(max(sizes_under(server.results), default=0))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status, sent = chunked(server.url, path, 100, headers)
    finally:
        watching.set()
        watcher.join()
    assert status == 413 and sent < 100, (status, sent)  # stopped while arriving, not after 100 MiB
    assert max(peak) <= LIMIT_BYTES, max(peak)
    assert max(sizes_under(server.results), default=0) < LIMIT_BYTES  # and nothing of it stays
    assert get_json(server.url + "/health")["status"] == "ok"


def test_stalled_bodies_hold_no_place_and_are_dropped(server, jfk):
    host, port = server.url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(34):  # each sends part of a body, then nothing
        connection = socket.create_connection((host, int(port)), timeout=30)
        connection.sendall(
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n".encode()
        )
        stalled.append(connection)
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)
        with open(jfk[0], "rb") as file:  # normal requests go on meanwhile
            assert word_error_rate(jfk[1], client.audio.transcriptions.create(model="whisper-1", file=file).text) <= 0.1
        answers = [connection.recv(4096).decode(errors="replace") for connection in stalled]
        assert all(answer.startswith("HTTP/1.1 408") for answer in answers), answers[:2]  # dropped after 2 s
    finally:
        for connection in stalled:
            connection.close()


def test_guesses_behind_a_forged_forwarded_for_still_count_against_the_peer(tmp_path):
    with (
        running_app(
            tmp_path, WHISPER_DEVICES="cpu", WHISPER_USERNAME="ada", WHISPER_PASSWORD="right", WHISPER_API_KEY="key"
        ) as app,
        httpx.Client(base_url=app.url, timeout=10) as http,
    ):
        logins = [
            http.post(
                "/login",
                data={"username": "ada", "password": f"guess {n}"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(20)
        ]
        assert logins[:5] == [400] * 5 and set(logins[5:]) == {429}, logins
    (tmp_path / "keys").mkdir()
    with (
        running_app(tmp_path / "keys", WHISPER_DEVICES="cpu", WHISPER_API_KEY="key") as app,
        httpx.Client(base_url=app.url, timeout=10) as http,
    ):
        keys = [
            http.get(
                "/v1/models", headers={"Authorization": f"Bearer guess {n}", "X-Forwarded-For": f"203.0.113.{n}"}
            ).status_code
            for n in range(20)
        ]
        assert keys[:5] == [401] * 5 and set(keys[5:]) == {429}, keys


def test_behind_a_trusted_proxy_each_forwarded_client_counts_on_its_own(tmp_path):
    with (
        running_app(tmp_path, WHISPER_DEVICES="cpu", WHISPER_API_KEY="key", WHISPER_TRUSTED_PROXIES="127.0.0.1") as app,
        httpx.Client(base_url=app.url, timeout=10) as http,
    ):

        def guess(client: str) -> int:
            return http.get("/v1/models", headers={"Authorization": "Bearer no", "X-Forwarded-For": client}).status_code

        assert [guess("203.0.113.1") for _ in range(6)][-1] == 429  # the guesser is slowed
        assert guess("203.0.113.2") == 401  # another client behind the same proxy is not
        assert (
            http.get(
                "/v1/models", headers={"Authorization": "Bearer key", "X-Forwarded-For": "203.0.113.3"}
            ).status_code
            == 200
        )


def test_an_api_client_that_leaves_mid_job_stops_its_job(server, small_long_talk):
    host, port = server.url.removeprefix("http://").split(":")
    body = small_long_talk.read_bytes()
    head = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="long-talk.ogg"\r\n'
        b"Content-Type: audio/ogg\r\n\r\n"
    )
    tail = b'\r\n--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--x--\r\n'
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nContent-Length: "
            f"{len(head) + len(body) + len(tail)}\r\nContent-Type: multipart/form-data; boundary=x"
            "\r\n\r\n".encode()
            + head
            + body
            + tail
        )
        wait_until(lambda: "] unit " in server.output(), "the job reached a worker")
    # Gone: its job is cancelled, its folder goes, and the workers are free at once.
    wait_until(lambda: "long-talk.ogg: cancelled" in server.output(), "the job was cancelled")
    wait_until(lambda: not job_folders(server.results), "the job's folder went")


def test_a_script_that_stops_listening_stops_its_job(server, small_long_talk):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with open(small_long_talk, "rb") as file:
            uploaded = http.post("/gradio_api/upload", files={"files": ("long-talk.ogg", file)}).json()[0]
        parameters = get_json(server.url + "/gradio_api/info")["named_endpoints"]["/transcribe"]["parameters"]
        data = [
            {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
            if p["parameter_name"] == "upload"
            else p["parameter_default"]
            for p in parameters
        ]
        event = http.post("/gradio_api/call/transcribe", json={"data": data}).json()["event_id"]
        with http.stream("GET", f"/gradio_api/call/transcribe/{event}") as stream:
            next(stream.iter_lines())  # it runs; then the script goes away
            wait_until(lambda: "] unit " in server.output(), "the job reached a worker")
    wait_until(lambda: server.output().count("long-talk.ogg: cancelled") == 2, "the job was cancelled")
    wait_until(lambda: not job_folders(server.results), "the job's folder went")


def test_ten_users_with_the_same_file_at_once_all_get_the_same_subtitles(tmp_path, jfk):
    results: list = []
    with running_app(tmp_path, WHISPER_DEVICES="cpu*2") as server:
        users = [
            threading.Thread(target=one_user, args=(server.url, tmp_path / str(number), jfk[0], results))
            for number in range(10)
        ]
        for user in users:
            user.start()
        for user in users:
            user.join()
    assert len(results) == 10 and all(isinstance(result, str) for result in results), results
    assert len(set(results)) == 1  # every upload its own, every job the same subtitles
    assert word_error_rate(jfk[1], " ".join(cue.content for cue in srt.parse(results[0]))) <= 0.1


def one_user(url: str, folder: Path, recording: Path, results: list) -> None:
    """A script that uploads `recording` and keeps its SRT (or what went wrong) in `results`."""
    client = Client(url + "/", verbose=False, download_files=str(folder))
    try:
        _summary, _text, files, *_ = client.predict(upload=handle_file(str(recording)), api_name="/transcribe")
        results.append(Path(files[0]).read_text())
    except Exception as error:  # the test looks at what each user got
        results.append(error)


def test_what_a_crash_or_a_broken_upload_leaves_is_cleaned(tmp_path, jfk):
    results = tmp_path / "results"
    (results / "uploads" / "0123abcd").mkdir(parents=True)
    (results / "uploads" / "0123abcd" / "talk.wav").write_bytes(b"\0" * 1000)  # waiting when the server died
    (results / "tmp4f2a9c1e0b").write_bytes(b"\0" * 1000)  # a body cut off
    with running_app(tmp_path, WHISPER_DEVICES="cpu") as app, httpx.Client(base_url=app.url, timeout=30) as http:
        assert not (results / "tmp4f2a9c1e0b").exists() and not (results / "uploads" / "0123abcd").exists()
        for name in ("..", "../..", "a" * 300 + ".flac"):  # refused or renamed, never a file left outside
            with open(jfk[0], "rb") as file:
                http.post("/gradio_api/upload", files={"files": (name, file)})
        assert [path for path in results.iterdir() if path.is_file() and not path.name.startswith(".")] == []
        # An upload cut off mid-body leaves nothing either (the long name above was shortened and taken).
        before = sorted(results.rglob("*"))
        host, port = app.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(
                f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 900000\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\nContent-Disposition: "
                'form-data; name="files"; filename="cut.wav"\r\n\r\n'.encode()
                + b"\0" * 300000
            )
        wait_until(lambda: sorted(results.rglob("*")) == before, lambda: set(results.rglob("*")) - set(before))


def test_api_errors_come_short_and_in_openais_shape(server, jfk):
    client = OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)
    for name in ("..", "../..", "x" * 300 + ".flac"):  # a safe name of its own, then transcribed
        with open(jfk[0], "rb") as file:
            text = client.audio.transcriptions.create(model="whisper-1", file=(name, file.read())).text
        assert word_error_rate(jfk[1], text) <= 0.1, name
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for fields in ({"language": "x" * 10**6}, {"prompt": "word " * 250_000}, {f"f{n}": "1" for n in range(40)}):
            with open(jfk[0], "rb") as file:
                answer = http.post(
                    "/v1/audio/transcriptions",
                    data={"model": "whisper-1", **fields},
                    files={"file": ("jfk.flac", file)},
                )
            assert answer.status_code == 400 and len(answer.content) < 1000, answer.text[:300]
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        missing = http.get("/v1/no/such/route")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("talk.flac", b"not audio"))
