"""The real web app, served by `python app.py`, driven by headless Chromium through Playwright."""

import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import soundfile
import srt
from gradio_client import Client, handle_file
from playwright.sync_api import expect, sync_playwright

from conftest import make_media
from helpers import ROOT, get_json, start_app, word_error_rate, worker_pids

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("app"), WHISPER_DEVICES="cpu*2", WHISPER_BATCH_SIZE="2")
    try:
        assert get_json(app.url + "/health") == {"status": "ok", "models": {"tiny.en": 2},
                                                 "workers": {"tiny.en": ["cpu", "cpu"]}}
        pids = worker_pids(app.process.pid)
        assert len(pids) == 2
    except BaseException:
        app.stop()  # a server left running would outlive the tests
        raise
    yield app
    assert app.stop() == 143
    print(app.output())  # shown by pytest when a test of this module failed
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids), "worker processes outlived the server"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def open_page(browser, server, width: int, height: int):
    context = browser.new_context(accept_downloads=True, viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#run")
    return context, page


@pytest.fixture
def page(browser, server):
    context, page = open_page(browser, server, 1280, 1000)
    yield page
    context.close()


@pytest.fixture
def phone(browser, server):
    """The page on a phone's screen: 390 px wide."""
    context, page = open_page(browser, server, 390, 844)
    yield page
    context.close()


@pytest.fixture(scope="module")
def films(ffmpeg, jfk, tmp_path_factory) -> dict[str, Path]:
    """jfk's speech under a test picture, as H.264 in MP4 and as VP9 in WebM."""
    folder = tmp_path_factory.mktemp("films")
    picture = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-i", str(jfk[0]), "-shortest"]
    make_media(ffmpeg, *picture, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(folder / "speech.mp4"))
    make_media(ffmpeg, *picture, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus",
               str(folder / "speech.webm"))
    return {"mp4": folder / "speech.mp4", "webm": folder / "speech.webm"}


def played_video(page) -> dict:
    """The player's video: its length, and its caption track's address and cues."""
    page.wait_for_function("() => { const v = document.querySelector('#video video'); return v && v.readyState >= 1 "
                           "&& v.textTracks.length; }", timeout=30_000)
    return page.evaluate("""async () => {
        const video = document.querySelector('#video video');
        const track = video.querySelector('track');
        video.textTracks[0].mode = 'hidden';  // loads the cues without showing them
        for (let i = 0; i < 50 && !(video.textTracks[0].cues || []).length; i++) await new Promise(r => setTimeout(r, 100));
        return {duration: video.duration, track: track.src, kind: track.kind,
                cues: [...video.textTracks[0].cues].map(cue => cue.text)};
    }""")


def upload_and_run(page, path: Path) -> None:
    if page.locator("#summary").inner_text().strip():  # a finished run: start again as a person would
        page.reload()
        page.wait_for_selector("#run")
    page.set_input_files("#upload input[type=file]", str(path))
    # Gradio shows the name's stem and extension in separate elements, at times with space between.
    expect(page.locator("#upload")).to_contain_text(re.compile(re.escape(path.stem) + r"\s*" + re.escape(path.suffix)))
    page.click("#run")


def wait_for_summary(page, timeout_s: float = 120):
    expect(page.locator("#summary")).to_contain_text("realtime", timeout=timeout_s * 1000)


def test_upload_multi_gpu_transcribe_and_download(page, server, jfk):
    checkbox = page.locator("#multi-gpu input[type=checkbox]")
    expect(page.locator("#multi-gpu")).to_contain_text("Use both CPU workers: cpu #1, cpu #2.")
    if not checkbox.is_checked():
        checkbox.check()
    expect(page.locator("#cancel")).to_be_hidden()  # nothing to cancel yet
    upload_and_run(page, jfk[0])
    wait_for_summary(page)
    expect(page.locator("#cancel")).to_be_hidden()  # nor once the job is done
    expect(page.locator("#text button[aria-label=Copy]")).to_be_visible()
    expect(page.locator("#summary")).to_contain_text("on 2 worker(s)")
    shown = page.input_value("#text textarea")
    assert word_error_rate(jfk[1], shown) <= 0.10, shown
    with page.expect_download() as download:
        page.click("#download-srt")
    assert download.value.suggested_filename == "jfk.srt"
    cues = list(srt.parse(Path(download.value.path()).read_text(encoding="utf-8")))
    assert word_error_rate(jfk[1], " ".join(cue.content for cue in cues)) <= 0.10
    assert cues[-1].end.total_seconds() <= 11.1
    # The cue table: each subtitle with its times, to a tenth of a second, and a copy button.
    table = page.locator("#cues")
    expect(table).to_contain_text("00:00.")
    expect(table).to_contain_text(re.compile(r"And,? so,? my fellow Americans"))
    expect(table.locator("button[aria-label*=Copy i]").first).to_be_attached()


def test_bad_file_shows_an_error_and_the_next_file_works(page, jfk, tmp_path):
    notes = tmp_path / "README.md"
    notes.write_text("# not a recording\n")
    page.set_input_files("#upload input[type=file]", str(notes))  # the page refuses it at once
    expect(page.get_by_text("Invalid file type: README.md").first).to_be_visible(timeout=10_000)
    page.reload()
    page.wait_for_selector("#run")
    fake = tmp_path / "song.mp3"
    fake.write_text("this is not audio\n")
    upload_and_run(page, fake)
    expect(page.get_by_text("not a readable audio or video file").first).to_be_visible(timeout=30_000)
    upload_and_run(page, jfk[0])
    wait_for_summary(page)


def test_cancel_stops_the_job_and_the_next_runs_at_once(page, server, long_talk, jfk):
    upload_and_run(page, long_talk)
    expect(page.get_by_text("Transcribing: ").first).to_be_visible(timeout=60_000)
    expect(page.locator("#cancel")).to_be_visible()
    page.click("#cancel")
    expect(page.locator("#summary")).to_contain_text("Cancelled", timeout=10_000)
    started = time.monotonic()
    upload_and_run(page, jfk[0])
    wait_for_summary(page, timeout_s=60)
    # The long file's remaining ~8 minutes of speech were dropped, not worked through first.
    assert time.monotonic() - started < 30
    assert "11.0 s" in page.inner_text("#summary")
    # The cancelled job left nothing behind: not its upload, not a folder.
    assert not list(server.results.rglob(long_talk.name))
    assert all(any(folder.iterdir()) for folder in server.results.iterdir())


def test_three_uploads_load_no_more_models(page, server, jfk):
    for _ in range(3):
        upload_and_run(page, jfk[0])
        wait_for_summary(page)
    assert get_json(server.url + "/health")["models"] == {"tiny.en": 2}


def test_gradio_client_round_trip_and_no_direct_post(server, jfk, tmp_path):
    client = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    result = client.predict(upload=handle_file(str(jfk[0])), recording=None, formats=["srt", "vtt"],
                            api_name="/transcribe")
    summary, text, *_players, srt_button, vtt_button, _ass, _txt, _json, _zip, _files, cue_table = result
    assert cue_table["value"]["headers"] == ["Start", "End", "Subtitle"]
    assert [row[2].replace("\n", " ") for row in cue_table["value"]["data"]] == text.splitlines()
    assert "realtime" in summary and word_error_rate(jfk[1], text) <= 0.10
    assert Path(srt_button["value"]).name == "jfk.srt" and Path(vtt_button["value"]).name == "jfk.vtt"
    request = urllib.request.Request(server.url + "/gradio_api/run/transcribe", data=b'{"data": []}',
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (403, 404, 405)


def test_transcribe_again_with_the_same_upload(page, server, jfk):
    upload_and_run(page, jfk[0])
    wait_for_summary(page)
    expect(page.locator("#download-vtt")).to_be_hidden()
    page.get_by_label("vtt").check()  # another format, then Transcribe again without uploading again
    page.click("#run")
    expect(page.locator("#download-vtt")).to_be_visible(timeout=60_000)
    expect(page.locator("#summary")).to_contain_text("realtime")
    with page.expect_download() as download:
        page.click("#download-vtt")
    assert download.value.suggested_filename == "jfk.vtt"


def test_the_multi_gpu_label_counts_gpus_not_the_workers_that_share_them():
    from app import devices_info

    assert devices_info(["cuda:0", "cuda:0"])[1] == "This server has one GPU (cuda:0, 2 workers sharing it)."
    assert devices_info(["cuda:0"])[1] == "This server has one GPU (cuda:0)."
    assert devices_info(["cuda:0", "cuda:0", "cuda:1", "cuda:1"])[1] == "Use all 2 GPUs: cuda:0, cuda:1."
    assert devices_info(["cpu", "cpu"]) == ("Multi-GPU (CPU workers here)",
                                            "Use both CPU workers: cpu #1, cpu #2. Without it a job uses one.")


def test_several_files_run_as_one_batch_with_each_files_progress_and_one_zip(page, server, jfk, tmp_path):
    talk = tmp_path / "talk.flac"
    shutil.copy(jfk[0], talk)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + b"\0" * 60)  # a WAV header with nothing behind it
    same_name = tmp_path / "again" / "jfk.flac"  # another folder's recording of the same name
    same_name.parent.mkdir()
    samples, rate = soundfile.read(jfk[0])
    soundfile.write(same_name, samples[: 8 * rate], rate)
    if page.locator("#summary").inner_text().strip():
        page.reload()
        page.wait_for_selector("#run")
    page.set_input_files("#files input[type=file]", [str(jfk[0]), str(broken), str(talk), str(same_name)])
    expect(page.locator("#files")).to_contain_text("talk")
    page.click("#run")
    expect(page.locator("body")).to_contain_text(re.compile(r"File [1-4] of 4 \("), timeout=60_000)
    expect(page.locator("#summary")).to_contain_text("3 of 4 files", timeout=120_000)
    expect(page.locator("#summary")).to_contain_text("broken.wav: This file cannot be transcribed")
    expect(page.locator("#text textarea")).to_have_value(re.compile("== jfk.flac ==.*== talk.flac ==", re.S))
    with page.expect_download() as download:
        page.click("#download-zip")
    assert download.value.suggested_filename == "jfk and 3 more.zip"
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert sorted(bundle.namelist()) == ["jfk (2).srt", "jfk.srt", "talk.srt"]
        for name in bundle.namelist():
            text = " ".join(cue.content for cue in srt.parse(bundle.read(name).decode()))
            said = "And so my fellow Americans, ask not what your country can do for you" if "(2)" in name else jfk[1]
            assert word_error_rate(said, text) <= 0.10, name  # the second jfk.flac holds the first 8 s
    expect(page.locator("#batch-files")).to_contain_text("talk")


def test_a_folder_runs_its_audio_and_video_files_as_one_batch(page, server, jfk, tmp_path):
    folder = tmp_path / "lectures"
    (folder / "week 2").mkdir(parents=True)
    shutil.copy(jfk[0], folder / "monday.flac")
    shutil.copy(jfk[0], folder / "week 2" / "tuesday.flac")
    (folder / "notes.txt").write_text("not a recording")
    if page.locator("#summary").inner_text().strip():
        page.reload()
        page.wait_for_selector("#run")
    page.set_input_files("#folder input[type=file]", str(folder))
    expect(page.locator("#folder")).to_contain_text("tuesday")
    page.click("#run")
    expect(page.locator("#summary")).to_contain_text("2 of 2 files", timeout=120_000)
    with page.expect_download() as download:
        page.click("#download-zip")
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert sorted(bundle.namelist()) == ["monday.srt", "tuesday.srt"]  # the notes were left out


def test_several_languages_asks_for_a_multilingual_model(server, jfk, tmp_path):
    client = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception, match="English-only: for several languages, choose a multilingual model such as base"):
        client.predict(upload=handle_file(str(jfk[0])), recording=None, several_languages=True, api_name="/transcribe")
    assert get_json(server.url + "/health")["status"] == "ok"


def test_the_language_menu_is_fixed_to_english_for_an_english_only_model(page, server):
    if page.locator("#summary").inner_text().strip():
        page.reload()
        page.wait_for_selector("#run")
    expect(page.locator("#language")).to_contain_text("tiny.en knows only English")
    expect(page.locator("#language input")).to_be_disabled()
    expect(page.locator("#language input")).to_have_value("English – en")


def test_progress_names_each_workers_state(page, server, composition):
    upload_and_run(page, composition[0])
    expect(page.locator("body")).to_contain_text(
        re.compile(r"Transcribing: cpu #1 (busy|idle), cpu #2 (busy|idle)"), timeout=60_000)
    wait_for_summary(page)


def test_a_video_plays_with_our_webvtt_track_and_highlighted_words(page, server, films, jfk):
    page.check("#word-highlight input")
    upload_and_run(page, films["mp4"])
    wait_for_summary(page)
    video = played_video(page)
    assert 10.5 < video["duration"] < 13.5
    # Our own WebVTT, from the job's folder: not Gradio's conversion of the SRT.
    assert video["kind"] == "captions" and video["track"].endswith("/speech.player.vtt")
    words = re.sub(r"<[^>]+>", "", " ".join(video["cues"]))
    assert word_error_rate(jfk[1], words) <= 0.10 and "-->" not in words
    assert all(re.search(r"<00:00:\d\d\.\d{3}>", cue) for cue in video["cues"])  # each word's time
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-1280.png"), full_page=True)


def test_on_a_phone_the_menus_stack_and_the_page_scrolls_to_the_progress(phone, server, films, jfk):
    language, model = (phone.locator(f"{box} input").bounding_box() for box in ("#language", "#model"))
    assert model["y"] >= language["y"] + language["height"]  # one under the other: the model's name has room
    assert phone.evaluate("() => document.querySelector('#model input').scrollWidth "
                          "<= document.querySelector('#model input').clientWidth")
    upload_and_run(phone, films["webm"])
    expect(phone.locator("#summary")).to_be_in_viewport(timeout=5_000)  # the settings scrolled away
    wait_for_summary(phone)
    video = played_video(phone)
    assert 10.5 < video["duration"] < 13.5
    assert word_error_rate(jfk[1], " ".join(video["cues"])) <= 0.10  # plain cues: no word highlight asked
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "page-390.png"), full_page=True)


def test_cues_show_while_a_long_job_runs(page, server, long_talk):
    page.uncheck("#multi-gpu input")  # one worker: a job of about 15 s
    upload_and_run(page, long_talk)
    # Text and its cue table while the summary has no result yet: checked at one moment, in the page.
    page.wait_for_function("""() => document.querySelector('#text textarea').value.length > 0
        && document.querySelector('#cues').innerText.includes('The quick')
        && !document.querySelector('#summary').innerText.includes('realtime')""", timeout=60_000)
    early = page.input_value("#text textarea").count("\n")
    wait_for_summary(page)
    assert page.input_value("#text textarea").count("\n") > early
