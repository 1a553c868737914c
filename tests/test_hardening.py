"""The running app under attack and at shutdown, driven through raw HTTP as any client could."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import blue_video, make_media
from helpers import ROOT, get_json, job_folders, run_cli, start_app, word_error_rate, worker_pids
from results import remove_old

pytestmark = pytest.mark.server  # starts the app (or a Ray cluster) as its own processes

MODEL = "tiny.en"
SECRET_WORDS = ("americans", "country")  # what the server's own media file (jfk.flac) says


def inputs(url: str, **values) -> list:
    """The scripting API's inputs (gradio_client's /transcribe) as positional data, in the order the server
    lists its parameters, each at its default but `values`."""
    parameters = get_json(url + "/gradio_api/info")["named_endpoints"]["/transcribe"]["parameters"]
    defaults = {parameter["parameter_name"]: parameter["parameter_default"] for parameter in parameters}
    assert set(values) <= set(defaults), set(values) - set(defaults)
    return [values.get(name, default) for name, default in defaults.items()]


def file_data(path: str | Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def sse_messages(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()


def call(url: str, data: list) -> tuple[str, str]:
    """One job through /gradio_api/call/transcribe: ("complete", its outputs) or ("error", the message)."""
    with httpx.Client(timeout=120) as http:
        body = json.dumps({"data": data}, allow_nan=True)
        event = http.post(
            f"{url}/gradio_api/call/transcribe", content=body, headers={"Content-Type": "application/json"}
        ).json()["event_id"]
        with http.stream("GET", f"{url}/gradio_api/call/transcribe/{event}") as response:
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = json.loads(line[5:])
                    return kind, payload if kind == "complete" else (payload or {}).get("error") or ""
    raise AssertionError("the job's stream ended without a result")


def join(url: str, data: list) -> tuple[str, str]:
    """One job through /gradio_api/queue/join, as the page sends it."""
    config = get_json(url + "/config")
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "transcribe")
    session = uuid.uuid4().hex
    with httpx.Client(timeout=120) as http:
        joined = http.post(
            f"{url}/gradio_api/queue/join",
            json={"data": data, "fn_index": fn_index, "session_hash": session, "event_id": None},
        )
        assert joined.status_code == 200, joined.text
        with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as response:
            for message in map(json.loads, sse_messages(response)):
                if message.get("msg") == "process_completed":
                    output = message["output"]
                    return (
                        ("complete", output["data"]) if message.get("success") else ("error", output.get("error") or "")
                    )
    raise AssertionError("the job's stream ended without a result")


def upload(url: str, path: Path) -> str:
    """Upload through the server's own upload route, as the page does; the path it gives back."""
    with open(path, "rb") as file:
        response = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, file)}, timeout=60)
    response.raise_for_status()
    return response.json()[0]


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardened")
    # Where Gradio would put its temporary files but for the app: nothing of a job may land there.
    app = start_app(folder, WHISPER_DEVICES="cpu", GRADIO_TEMP_DIR=str(folder / "gradio-default"))
    yield app
    assert app.stop() == 143
    print(app.output())


def test_only_files_uploaded_here_are_taken_whatever_the_route_or_input(server, jfk, tmp_path):
    secret = tmp_path / "secret.flac"
    shutil.copy(jfk[0], secret)
    planted = server.results / "planted" / "secret.flac"  # inside the upload folder, never uploaded
    planted.parent.mkdir(parents=True)
    shutil.copy(jfk[0], planted)
    pairs = [
        (secret, tmp_path / "missing.flac"),
        (planted, planted.parent / "missing.flac"),
        (Path("/etc/passwd"), Path("/etc/no-such-file")),
    ]
    for send in (call, join):
        for position in ("upload", "recording", "files"):
            for existing, missing in pairs:
                answers = []
                for path in (existing, missing):
                    value = [file_data(path)] if position == "files" else file_data(path)  # a batch
                    kind, message = send(server.url, inputs(server.url, **{position: value}))
                    assert kind == "error" and not any(word in str(message).lower() for word in SECRET_WORDS)
                    assert str(server.results) not in message and str(tmp_path) not in message, message
                    answers.append(message.replace(str(path), "PATH"))
                # One answer whether or not something lies at the path: nothing can be probed. A path in
                # the results folder is ours to refuse, in words; any other, Gradio's, which says no more
                # than "Error" (its words would name the server's folders).
                assert answers[0] == answers[1], (send.__name__, position, answers)
                if existing == planted:
                    assert "was not uploaded to this page" in answers[0], answers[0]
                else:
                    assert answers[0] == "", answers[0]
    # Nothing was copied or moved: the secret's bytes lie nowhere the server serves from.
    copies = [path for path in files_under(server.results) if path.read_bytes() == secret.read_bytes()]
    assert copies == [planted]
    assert files_under(server.results.parent / "gradio-default") == []


def test_an_uploaded_file_is_transcribed_and_nothing_of_the_job_stays_outside_its_folder(server, jfk, tmp_path, ffmpeg):
    before = set(files_under(server.results))
    kind, outputs = call(
        server.url, inputs(server.url, upload=file_data(upload(server.url, jfk[0])), formats=["srt", "vtt"])
    )
    assert kind == "complete" and word_error_rate(jfk[1], outputs[1]) <= 0.10
    new = set(files_under(server.results)) - before
    job_folder = {path.parent for path in new}
    assert len(job_folder) == 1, new  # the upload, its subtitles and what the page shows again, in one folder
    assert sorted(path.name for path in new) == [
        "jfk.flac",
        "jfk.machine.json",
        "jfk.player.vtt",
        "jfk.srt",
        "jfk.vtt",
        "job.json",
    ]
    # A video with SRT only: the player still gets a WebVTT file of ours, beside the rest.
    video = tmp_path / "speech.mp4"
    blue_video(ffmpeg, jfk[0], video)
    kind, outputs = call(server.url, inputs(server.url, upload=file_data(upload(server.url, video))))
    assert kind == "complete"
    video_files = set(files_under(server.results)) - before - new
    assert sorted(path.name for path in video_files) == [
        "job.json",
        "speech.machine.json",
        "speech.mp4",
        "speech.player.vtt",
        "speech.srt",
    ]
    new |= video_files
    # A file that cannot be transcribed: a script's job folder goes with it.
    bad = tmp_path / "song.mp3"
    bad.write_text("this is not audio\n")
    kind, message = call(server.url, inputs(server.url, upload=file_data(upload(server.url, bad))))
    assert kind == "error" and "not a readable audio or video file" in message
    assert set(files_under(server.results)) - {server.results / ".browser-secret"} == (before | new) - {
        server.results / ".browser-secret"
    }
    assert not [path for path in job_folders(server.results) if not any(path.iterdir())]
    assert files_under(server.results.parent / "gradio-default") == []


def test_a_playlist_is_refused_without_reading_what_it_names(server, jfk, tmp_path, ffmpeg):
    secret = tmp_path / "secret.ts"
    make_media(ffmpeg, "-i", str(jfk[0]), str(secret))
    playlists = {
        "list.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:12\n#EXTINF:11.0,\nfile://{secret}\n#EXT-X-ENDLIST\n",
        "list.ffconcat": f"ffconcat version 1.0\nfile '{secret}'\n",
    }
    client = Client(server.url + "/", verbose=False)
    for name, text in playlists.items():
        playlist = tmp_path / name
        playlist.write_text(text)
        # By its own name it is no audio or video file; named as one, FFmpeg may read it only as media.
        refusals = {playlist: "is not an audio or video file"}
        for disguise in (".mp3", ".ts"):
            disguised = playlist.with_suffix(disguise)
            disguised.write_text(text)
            refusals[disguised] = "not a media format read here|not a readable audio or video file"
        for path, message in refusals.items():
            with pytest.raises(AppError, match=message) as refused:
                client.predict(upload=handle_file(str(path)), recording=None, api_name="/transcribe")
            assert not any(word in str(refused.value).lower() for word in SECRET_WORDS)
        cli = run_cli(playlist, "-o", tmp_path / "out.srt", "--devices", "cpu", "--quiet")
        assert cli.returncode == 2 and "not a media format read here" in cli.stderr, cli.stderr
        assert not (tmp_path / "out.srt").exists()
    assert get_json(server.url + "/health")["status"] == "ok"


def test_a_file_not_named_as_audio_or_video_is_refused(server, tmp_path):
    notes = tmp_path / "README.md"
    notes.write_text("# not a recording\n")  # the page's file picker refuses it; a raw client is told so too
    kind, message = call(server.url, inputs(server.url, upload=file_data(upload(server.url, notes))))
    assert kind == "error" and message == "README.md is not an audio or video file: choose a recording or a film."


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:")))


def test_prompt_and_hotwords_are_limited_in_tokens(server, jfk, tmp_path):
    workers = worker_pids(server.process.pid)
    memory_before = sum(map(rss_kib, workers))
    for prompt, hotwords in (("word " * 400, ""), ("", "word " * 400), ("x" * 10_000_000, "y" * 10_000_000)):
        path = upload(server.url, jfk[0])
        started = time.monotonic()
        kind, message = call(
            server.url, inputs(server.url, upload=file_data(path), initial_prompt=prompt, hotwords=hotwords)
        )
        assert kind == "error" and re.search(r"\d+ tokens long together; at most 223 fit", message), message
        assert time.monotonic() - started < 30
    assert sum(map(rss_kib, workers)) - memory_before < 50_000  # no worker was handed the texts
    # Just under the limit, together, the job still has room to write every word.
    within = ("President Kennedy's inaugural address, January 1961. " * 9, "Americans country")
    kind, outputs = call(
        server.url,
        inputs(server.url, upload=file_data(upload(server.url, jfk[0])), initial_prompt=within[0], hotwords=within[1]),
    )
    assert kind == "complete" and word_error_rate(jfk[1], outputs[1]) <= 0.10, outputs
    cli = run_cli(jfk[0], "-o", tmp_path / "out.srt", "--initial-prompt", "word " * 400, "--devices", "cpu")
    assert cli.returncode == 2 and "at most 223 fit" in cli.stderr and "model loaded" not in cli.stderr, cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("vad_threshold", math.nan),
        ("vad_threshold", math.inf),
        ("vad_threshold", -1),
        ("vad_threshold", "high"),
        ("line_chars", math.nan),
        ("line_chars", -math.inf),
        ("line_chars", 10**9),
        ("line_chars", 20.5),
    ],
)
def test_every_number_is_checked(server, jfk, field, value):
    kind, message = call(server.url, inputs(server.url, upload=file_data(upload(server.url, jfk[0])), **{field: value}))
    label = {"vad_threshold": "VAD sensitivity", "line_chars": "Characters per line"}[field]
    # Gradio's slider refuses what is outside its range, and no number at all (saying only "Error": its
    # own words would show the server's code); the app refuses NaN, which compares as neither, and
    # fractions of a character.
    said = rf"^{label} must be|^Value .+ is (greater|less) than (maximum|minimum) value"
    assert kind == "error" and (re.search(said, message) if isinstance(value, (int, float)) else message == ""), message
    assert get_json(server.url + "/health")["status"] == "ok"


def test_old_results_are_removed(tmp_path):
    old, new = tmp_path / "old-job", tmp_path / "new-job"
    for folder in (old, new):
        folder.mkdir()
        (folder / "talk.srt").write_text("1\n")
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    remove_old(tmp_path, keep_hours=24)
    assert [path.name for path in tmp_path.iterdir()] == ["new-job"]


def test_user_results_and_virtual_environments_are_not_tracked():
    tracked = subprocess.run(["git", "ls-files", "results", ".venv"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.returncode == 0 and tracked.stdout == ""
    ignored = subprocess.run(
        ["git", "check-ignore", "results/job/talk.srt", ".venv/bin/python"], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == ["results/job/talk.srt", ".venv/bin/python"]


# --- Logins ---


def test_password_guessing_is_slowed_and_the_right_password_still_gets_in(tmp_path):
    app = start_app(tmp_path, WHISPER_DEVICES="cpu", WHISPER_USERNAME="ada", WHISPER_PASSWORD="right horse battery")
    try:
        with httpx.Client(base_url=app.url, timeout=10) as http:

            def login(password: str) -> httpx.Response:
                return http.post("/login", data={"username": "ada", "password": password})

            answers = [login(f"guess {n}") for n in range(50)]
            assert [a.status_code for a in answers[:5]] == [400] * 5
            assert {a.status_code for a in answers[5:]} == {429}
            assert answers[5].headers["Retry-After"] == "1"
            time.sleep(1.1)
            assert login("guess again").status_code == 400
            waits = int(login("and again").headers["Retry-After"])
            assert waits == 2  # each further failure doubles the wait, up to a minute
            time.sleep(waits + 0.1)
            assert login("right horse battery").status_code == 200
            assert login("a typo").status_code == 400  # the right login cleared the count

            for route in ("/docs", "/redoc", "/openapi.json"):
                assert http.get(route).status_code == 404
            health = http.get("/health")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
    finally:
        assert app.stop() == 143


# --- Shutdown ---


@pytest.fixture(scope="module")
def minute_of_speech(composition) -> Path:
    return composition[0]  # about 112 s with 22 sentences: a few seconds of work for one worker


def transcribe_in_background(url: str, path: Path) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = Client(url + "/", verbose=False).predict(
                upload=handle_file(str(path)), recording=None, api_name="/transcribe"
            )
        except Exception as error:  # the test looks at what the caller got
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_for_log(app, text: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while text not in app.output():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{app.output()}"
        time.sleep(0.1)


def test_sigterm_lets_the_running_job_finish_and_deliver_then_exits(tmp_path, minute_of_speech, composition, jfk):
    app = start_app(tmp_path, WHISPER_DEVICES="cpu")
    workers = worker_pids(app.process.pid)
    unused = upload(app.url, jfk[0])  # uploaded, never transcribed: removed at shutdown
    thread, outcome = transcribe_in_background(app.url, minute_of_speech)
    wait_for_log(app, "] unit ")
    app.process.send_signal(signal.SIGTERM)
    wait_for_log(app, "shutting down: no new jobs")
    with pytest.raises(urllib.error.HTTPError) as draining:
        urllib.request.urlopen(app.url + "/health", timeout=5)
    assert draining.value.code == 503 and json.load(draining.value) == {"status": "draining"}
    with pytest.raises(AppError, match="restarting and takes no new jobs"):
        Client(app.url + "/", verbose=False).predict(
            upload=handle_file(str(jfk[0])), recording=None, api_name="/transcribe"
        )
    thread.join(timeout=120)
    assert "result" in outcome, outcome
    summary, text, *_ = outcome["result"]
    reference = " ".join(sentence.text for sentence in composition[1])
    assert "realtime" in summary and word_error_rate(reference, text) <= 0.2, text
    assert app.process.wait(timeout=60) == 143
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not Path(unused).exists()
    folders = job_folders(app.results)
    assert len(folders) == 1 and {path.suffix for path in folders[0].iterdir()} == {".wav", ".srt", ".vtt", ".json"}
    assert not (app.results / "uploads").exists() or not any((app.results / "uploads").iterdir())


@pytest.mark.parametrize("how", ["second SIGTERM", "drain time over"])
def test_a_second_sigterm_or_the_end_of_the_drain_time_stops_at_once(tmp_path, long_talk, how):
    app = start_app(tmp_path, WHISPER_DEVICES="cpu", WHISPER_DRAIN_SECONDS="600" if how == "second SIGTERM" else "1")
    workers = worker_pids(app.process.pid)
    thread, outcome = transcribe_in_background(app.url, long_talk)
    wait_for_log(app, "] unit ")
    app.process.send_signal(signal.SIGTERM)
    wait_for_log(app, "shutting down: no new jobs")
    if how == "second SIGTERM":
        app.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert app.process.wait(timeout=30) in (143, -signal.SIGTERM)
    assert time.monotonic() - started < 15
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    thread.join(timeout=60)
    assert "error" in outcome  # the job was stopped, and its caller told so
