"""The real web app, served by `python app.py`, used in headless Chromium as a person would, and by scripts
through gradio_client."""

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
from playwright.sync_api import expect

import speech
from browser import (
    PATIENCE_MS,
    fresh,
    job_address,
    no_error_badges,
    open_page,
    played,
    screenshot,
    status,
    upload_and_run,
    wait_for_result,
    wait_for_summary,
)
from helpers import get_json, job_folders, start_app, word_error_rate, worker_pids

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("app"), WHISPER_DEVICES="cpu*2", WHISPER_BATCH_SIZE="2")
    try:
        assert get_json(app.url + "/health") == {
            "status": "ok",
            "models": {"tiny.en": 2},
            "workers": {"tiny.en": ["cpu", "cpu"]},
        }
        pids = worker_pids(app.process.pid)
        assert len(pids) == 2
    except BaseException:
        app.stop()  # a server left running would outlive the tests
        raise
    yield app
    assert app.stop() == 143
    print(app.output())  # shown by pytest when a test of this module failed
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids), "worker processes outlived the server"


@pytest.fixture
def page(chromium, server):
    context, page = open_page(chromium, server.url)
    yield page
    context.close()


@pytest.fixture
def phone(chromium, server):
    """The page on a phone's screen: 390 px wide."""
    context, page = open_page(chromium, server.url, 390, 844)
    yield page
    context.close()


@pytest.fixture(scope="module")
def silence_file(tmp_path_factory) -> Path:
    return speech.write_wav(tmp_path_factory.mktemp("silence") / "quiet.wav", speech.silence(5.0))


def test_upload_transcribe_on_every_worker_and_download(page, server, jfk):
    checkbox = page.locator("#multi-gpu input[type=checkbox]")
    expect(page.locator("#multi-gpu")).to_contain_text("All CPU workers")
    expect(page.locator("#multi-gpu")).to_contain_text(
        "No GPU here: both CPU workers (cpu #1, cpu #2); without it, one."
    )
    assert checkbox.is_checked()
    expect(page.locator("#cancel")).to_be_hidden()  # nothing to cancel yet
    upload_and_run(page, jfk[0])
    wait_for_summary(page)
    expect(page.locator("#cancel")).to_be_hidden()  # nor once the job is done
    expect(page.locator("#status")).to_contain_text("on 2 worker(s)")
    shown = page.input_value("#text textarea")
    assert word_error_rate(jfk[1], shown) <= 0.10, shown
    with page.expect_download() as download:
        page.click("#download-srt")
    assert download.value.suggested_filename == "jfk.srt"
    cues = list(srt.parse(Path(download.value.path()).read_text(encoding="utf-8")))
    assert word_error_rate(jfk[1], " ".join(cue.content for cue in cues)) <= 0.10
    assert cues[-1].end.total_seconds() <= 11.1
    # The cues to edit: each with its times, to the millisecond, and its lines; the text has a copy button.
    editor = page.locator("#cues")
    expect(editor.locator(".cue")).to_have_count(len(cues))
    assert editor.locator(".cue .start").first.input_value().startswith("00:00.")
    expect(editor).to_contain_text(re.compile(r"And,? so,? my fellow Americans"))
    expect(page.locator("#text button[aria-label*=Copy i]").first).to_be_attached()


def test_a_refusal_stays_in_the_page_and_the_next_file_works(page, server, jfk, tmp_path):
    notes = tmp_path / "README.md"
    notes.write_text("# not a recording\n")
    page.set_input_files("#upload input[type=file]", str(notes))  # the picker refuses it at once
    expect(page.get_by_text("Invalid file type: README.md").first).to_be_visible(timeout=10_000)
    fresh(page, server.url)
    fake = tmp_path / "song.mp3"
    fake.write_text("this is not audio\n")
    upload_and_run(page, fake)
    said = wait_for_result(page)
    assert "This file cannot be transcribed: not a readable audio or video file" in said
    time.sleep(6)  # longer than a toast would stay: the message does not go away by itself
    assert "not a readable audio or video file" in status(page) and no_error_badges(page)
    assert page.locator("#status .message.error").count() == 1
    upload_and_run(page, jfk[0])
    assert "not a readable" not in wait_for_summary(page)  # the next action replaced the message


def test_a_recording_without_speech_says_so_and_offers_no_file(page, silence_file):
    upload_and_run(page, silence_file)
    said = wait_for_result(page)
    assert "No speech found" in said and no_error_badges(page)
    expect(page.locator("#download-srt")).to_be_hidden()


def test_cancel_says_cancelled_keeps_the_cues_already_made_and_the_next_runs_at_once(page, server, long_talk, jfk):
    page.uncheck("#multi-gpu input")  # one worker: a job long enough to cancel in the middle
    upload_and_run(page, long_talk)
    page.wait_for_function("() => document.querySelector('#cues').innerText.includes('The quick')", timeout=PATIENCE_MS)
    expect(page.locator("#cancel")).to_be_visible()
    page.click("#cancel")
    expect(page.locator("#status .message.cancelled")).to_contain_text("Cancelled", timeout=PATIENCE_MS)
    assert no_error_badges(page)
    expect(page.locator("#cues")).to_contain_text("The quick")  # what was finished stays
    assert page.input_value("#text textarea")
    started = time.monotonic()
    upload_and_run(page, jfk[0])
    summary = wait_for_summary(page)
    # The long file's remaining minutes of speech were dropped, not worked through first.
    assert time.monotonic() - started < 60 and "11.0 s" in summary


def test_three_uploads_load_no_more_models(page, server, jfk):
    for _ in range(3):
        upload_and_run(page, jfk[0])
        wait_for_summary(page)
        fresh(page, server.url)
    assert get_json(server.url + "/health")["models"] == {"tiny.en": 2}


def test_transcribe_again_with_the_same_upload_in_another_format(page, server, jfk):
    upload_and_run(page, jfk[0])
    wait_for_summary(page)
    expect(page.locator("#download-vtt")).to_be_hidden()
    page.get_by_label("vtt").check()  # another format, then Transcribe again without uploading again
    page.click("#run")
    expect(page.locator("#download-vtt")).to_be_visible(timeout=PATIENCE_MS)
    with page.expect_download() as download:
        page.click("#download-vtt")
    assert download.value.suggested_filename == "jfk.vtt"
    assert len(job_folders(server.results)) == len({folder.name for folder in job_folders(server.results)})


def test_gradio_client_round_trip_and_no_direct_post(server, jfk, tmp_path):
    client = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    summary, text, files, cues, job = client.predict(
        upload=handle_file(str(jfk[0])), formats=["srt", "vtt"], api_name="/transcribe"
    )
    assert "realtime" in summary and word_error_rate(jfk[1], text) <= 0.10
    assert sorted(Path(path).name for path in files) == ["jfk.srt", "jfk.vtt"]
    assert [cue["text"].replace("\n", " ") for cue in cues] == text.splitlines() and len(job) == 32
    request = urllib.request.Request(
        server.url + "/gradio_api/run/transcribe",
        data=b'{"data": []}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (403, 404, 405)


def test_the_checkbox_that_spreads_a_job_says_what_it_uses():
    from page import devices_info

    assert devices_info(["cuda:0", "cuda:0"]) == (
        "Multi-GPU",
        "This server has one GPU (cuda:0, 2 workers sharing it).",
    )
    assert devices_info(["cuda:0"])[1] == "This server has one GPU (cuda:0)."
    assert devices_info(["cuda:0", "cuda:0", "cuda:1", "cuda:1"]) == ("Multi-GPU", "Use all 2 GPUs: cuda:0, cuda:1.")
    assert devices_info(["cpu", "cpu"]) == (
        "All CPU workers",
        "No GPU here: both CPU workers (cpu #1, cpu #2); without it, one.",
    )


def test_several_files_run_as_one_batch_each_reported_as_it_ends_and_one_zip(page, server, jfk, tmp_path):
    talk = tmp_path / "talk.flac"
    shutil.copy(jfk[0], talk)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + b"\0" * 60)  # a WAV header with nothing behind it
    same_name = tmp_path / "again" / "jfk.flac"  # another folder's recording of the same name
    same_name.parent.mkdir()
    samples, rate = soundfile.read(jfk[0])
    soundfile.write(same_name, samples[: 8 * rate], rate)
    as_mp3 = tmp_path / "talk.mp3"  # the same stem as talk.flac: each keeps its own subtitles
    soundfile.write(tmp_path / "short.wav", samples[: 4 * rate], rate)
    shutil.copy(tmp_path / "short.wav", as_mp3.with_suffix(".wav"))
    from conftest import make_media

    make_media(shutil.which("ffmpeg"), "-i", str(tmp_path / "short.wav"), str(as_mp3))
    page.click("#tab-several-button")
    page.set_input_files("#files input[type=file]", [str(jfk[0]), str(broken), str(talk), str(same_name), str(as_mp3)])
    expect(page.locator("#files")).to_contain_text("talk")
    page.click("#run")
    # The failed file is reported while the batch still runs, not only at its end.
    page.wait_for_function(
        """() => document.querySelector('#status .progress')
        && document.querySelector('#status').innerText.includes('broken.wav: This file cannot be transcribed')""",
        timeout=PATIENCE_MS,
    )
    expect(page.locator("#status")).to_contain_text("4 of 5 files", timeout=PATIENCE_MS)
    expect(page.locator("#status")).to_contain_text("broken.wav: This file cannot be transcribed")
    expect(page.locator("#text textarea")).to_have_value(re.compile("== jfk.flac ==.*== talk.flac ==", re.S))
    with page.expect_download() as download:
        page.click("#download-zip")
    assert download.value.suggested_filename == "jfk and 4 more.zip"
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert sorted(bundle.namelist()) == ["jfk (2).srt", "jfk.srt", "talk.flac.srt", "talk.mp3.srt"]
        said = {
            "jfk.srt": jfk[1],
            "talk.flac.srt": jfk[1],
            "jfk (2).srt": "And so my fellow Americans, ask not what your country can do for you",
            "talk.mp3.srt": "And so my fellow Americans",
        }
        for name, words in said.items():
            text = " ".join(cue.content for cue in srt.parse(bundle.read(name).decode()))
            assert word_error_rate(words, text) <= 0.25, (name, text)
    expect(page.locator("#batch-files")).to_contain_text("talk")
    assert no_error_badges(page)


def test_a_folder_runs_its_audio_and_video_files_as_one_batch(page, server, jfk, tmp_path):
    folder = tmp_path / "lectures"
    (folder / "week 2").mkdir(parents=True)
    shutil.copy(jfk[0], folder / "monday.flac")
    shutil.copy(jfk[0], folder / "week 2" / "tuesday.flac")
    (folder / "notes.txt").write_text("not a recording")
    page.click("#tab-several-button")
    page.set_input_files("#folder input[type=file]", str(folder))
    expect(page.locator("#folder")).to_contain_text("tuesday")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("2 of 2 files", timeout=PATIENCE_MS)
    with page.expect_download() as download:
        page.click("#download-zip")
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert sorted(bundle.namelist()) == ["monday.srt", "tuesday.srt"]  # the notes were left out


def test_a_link_tab_with_no_link_says_what_to_do(page):
    page.click("#tab-link-button")
    page.click("#run")
    said = wait_for_result(page)
    assert "Choose an audio or video file, record something, or paste a link, first." in said and no_error_badges(page)


def test_several_languages_asks_for_a_multilingual_model(server, jfk, tmp_path):
    client = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    with pytest.raises(
        Exception, match="English-only: for several languages, choose a multilingual model such as base"
    ):
        client.predict(upload=handle_file(str(jfk[0])), several_languages=True, api_name="/transcribe")
    assert get_json(server.url + "/health")["status"] == "ok"


def test_the_language_menu_is_fixed_to_english_for_an_english_only_model(page):
    expect(page.locator("#language")).to_contain_text("tiny.en knows only English")
    expect(page.locator("#language input")).to_be_disabled()
    expect(page.locator("#language input")).to_have_value("English – en")


def test_progress_moves_forward_against_the_files_length_with_the_time_left(page, composition):
    upload_and_run(page, composition[0])
    seen = []
    while not page.locator("#status .message").count():
        text = page.inner_text("#status")
        if found := re.search(r"(\d+) % · ", text):
            seen.append((int(found.group(1)), text))
        time.sleep(0.05)
    percents = [percent for percent, _ in seen]
    assert percents == sorted(percents) and len(set(percents)) >= 3, seen
    said = " ".join(text for _, text in seen)
    assert re.search(r"Decoding and finding speech: \d+ of 112 s read", said), said
    assert re.search(r"Transcribing: cpu #1 (busy|idle), cpu #2 (busy|idle)", said), said
    assert "s left" in said, said
    # The bar and its text lie apart: the text is not under the bar.
    wait_for_summary(page)


def test_a_video_plays_with_captions_above_its_controls_and_lit_words(page, films, jfk):
    page.check("#word-highlight input")
    upload_and_run(page, films["mp4"])
    wait_for_summary(page)
    video = played(page)
    assert 10.5 < video["duration"] < 13.5
    # Our own WebVTT, from the job's folder: not Gradio's conversion of the SRT.
    assert video["kind"] == "captions" and video["track"].endswith("/speech.player.vtt")
    words = re.sub(r"<[^>]+>", "", " ".join(video["cues"]))
    assert word_error_rate(jfk[1], words) <= 0.10 and "-->" not in words
    assert all(re.search(r"<00:00:\d\d\.\d{3}>", cue) for cue in video["cues"])  # each word's time
    lit = {}
    page.wait_for_selector("#video .captions", state="attached")
    for moment in (0.99, 5.9):  # inside the first cue, and inside the one with "what your country"
        page.evaluate(f"() => {{ document.querySelector('#video video').currentTime = {moment}; }}")
        page.wait_for_function(
            f"() => {{ const v = document.querySelector('#video video'); return Math.abs("
            f"v.currentTime - {moment}) < 0.01 && document.querySelector('#video .captions .line'); }}"
        )
        time.sleep(0.3)
        lit[moment] = page.evaluate("""() => ['spoken', 'future'].map(kind =>
            [...document.querySelectorAll(`#video .captions .${kind}`)]
                .map(word => word.innerText.trim()).join(' '))""")
    # At 0.99 s "And so" is said and "my fellow Americans" not yet; at 5.9 s "what your" is said (after
    # "ask not" and its pause, whether that is a cue of its own or not), and "country" not yet.
    assert re.fullmatch(r"And,? so,?", lit[0.99][0]) and lit[0.99][1].startswith("my fellow"), lit
    assert lit[5.9][0].lower().endswith("what your") and lit[5.9][1].startswith("country"), lit
    # Hovered, the player shows its controls: the captions stay above them.
    page.hover("#video video")
    captions = page.locator("#video .captions").bounding_box()
    controls = page.locator("#video .controls").bounding_box()
    assert captions["y"] + captions["height"] <= controls["y"], (captions, controls)
    screenshot(page, "page-1280.png")


def test_at_1280_by_800_transcribe_shows_without_scrolling(page):
    button = page.locator("#run").bounding_box()
    assert button["y"] + button["height"] <= 800, button
    for tab in ("File", "Record", "Link", "Several files"):
        expect(page.get_by_role("tab", name=tab, exact=True)).to_be_visible()


def test_on_a_phone_the_menus_stack_and_the_page_scrolls_to_the_progress(phone, films, jfk):
    language, model = (phone.locator(f"{box} input").bounding_box() for box in ("#language", "#model"))
    assert model["y"] >= language["y"] + language["height"]  # one under the other: the model's name has room
    assert phone.evaluate(
        "() => document.querySelector('#model input').scrollWidth <= document.querySelector('#model input').clientWidth"
    )
    upload_and_run(phone, films["webm"])
    expect(phone.locator("#status")).to_be_in_viewport(timeout=5_000)  # the settings scrolled away
    wait_for_summary(phone)
    video = played(phone)
    assert 10.5 < video["duration"] < 13.5
    assert word_error_rate(jfk[1], " ".join(video["cues"])) <= 0.10  # plain cues: no word highlight asked
    screenshot(phone, "page-390.png")


def test_cues_show_in_time_order_while_a_long_job_runs(page, long_talk):
    page.uncheck("#multi-gpu input")  # one worker: a job of about 15 s
    upload_and_run(page, long_talk)
    # Text and its cue table while the job still runs: checked at one moment, in the page.
    page.wait_for_function(
        """() => document.querySelector('#text textarea').value.length > 0
        && document.querySelector('#cues').innerText.includes('The quick')
        && document.querySelector('#status .progress')""",
        timeout=PATIENCE_MS,
    )
    early = page.input_value("#text textarea").count("\n")
    # Each cue's start and end, cue after cue: in time order, they only grow.
    times = page.evaluate(
        "() => [...document.querySelectorAll('#cues .cue')].flatMap(cue => "
        "[Number(cue.dataset.start), Number(cue.dataset.end)])"
    )
    assert len(times) >= 4 and times == sorted(times), times
    wait_for_summary(page)
    assert page.input_value("#text textarea").count("\n") > early


def test_the_page_keeps_the_status_text_and_bar_apart(page, composition):
    upload_and_run(page, composition[0])
    page.wait_for_selector("#status .progress-text", timeout=PATIENCE_MS)
    bar = page.locator("#status .progress-track").bounding_box()
    text = page.locator("#status .progress-text").bounding_box()
    assert text["y"] >= bar["y"] + bar["height"], (bar, text)  # the bar covers none of its text
    wait_for_summary(page)


def test_no_other_browser_sees_a_job_even_with_its_address(chromium, page, server, jfk):
    upload_and_run(page, jfk[0])
    wait_for_summary(page)
    address = job_address(page)
    stranger, other = open_page(chromium, address)
    try:
        said = wait_for_result(other)
        assert "There is no such job for this browser" in said
        assert other.locator("#download-srt").is_hidden() and not other.input_value("#text textarea")
        assert "jfk.flac" not in other.inner_text("#recent")
    finally:
        stranger.close()
