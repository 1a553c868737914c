"""Finishing subtitles in the page, in headless Chromium: editing cues (their words, times, splits and
merges), saving them into every format and the player, the words Whisper was unsure of, the video with its
subtitles as a track, and the same for scripts through gradio_client."""

import re
import shutil
from pathlib import Path

import av
import pytest
import srt
from gradio_client import Client, handle_file
from playwright.sync_api import expect

import speech
from browser import PATIENCE_MS, open_page, upload_and_run, wait_for_summary
from helpers import running_app, word_error_rate

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("editor"), WHISPER_DEVICES="cpu*2") as app:
        yield app


@pytest.fixture
def page(chromium, server):
    context, page = open_page(chromium, server.url, 1280, 1000)
    yield page
    context.close()


def downloaded(page, button: str) -> Path:
    with page.expect_download() as download:
        page.click(button)
    return Path(download.value.path())


def player_track(page) -> list[str]:
    """The cues of the player's caption track, as the browser loaded them."""
    page.wait_for_function(
        "() => { const v = document.querySelector('#video video'); return v && v.textTracks.length "
        "&& (v.textTracks[0].cues || []).length; }",
        timeout=PATIENCE_MS,
    )
    return page.evaluate(
        "() => [...document.querySelector('#video video').textTracks[0].cues].map("
        "cue => `${cue.startTime.toFixed(3)} ${cue.endTime.toFixed(3)} ${cue.text}`)"
    )


def test_edited_words_and_times_reach_the_downloads_and_the_player_and_survive_a_reload(page, films):
    page.check("#word-highlight input")
    page.get_by_label("vtt").check()
    upload_and_run(page, films["mp4"])
    wait_for_summary(page)
    count = page.locator("#cues .cue").count()
    first = page.locator("#cues .cue").first
    first.locator(".text").fill("And so, my dear fellow Americans")
    first.locator(".end").fill("00:02.700")
    page.click("#save")
    expect(page.locator("#status")).to_contain_text(
        f"Saved: {count} subtitles, in SRT, VTT and the player.", timeout=PATIENCE_MS
    )
    cues = list(srt.parse(downloaded(page, "#download-srt").read_text()))
    assert cues[0].content == "And so, my dear fellow Americans" and cues[0].end.total_seconds() == 2.7
    vtt = downloaded(page, "#download-vtt").read_text()
    assert "00:00:02.700" in vtt and re.search(r"dear<00:00:\d\d\.\d{3}> fellow", vtt)  # karaoke still times words
    track = player_track(page)
    assert track[0].endswith("dear<00:00:01.000> fellow<00:00:01.240> Americans") or "dear" in track[0], track
    assert track[0].split()[1] == "2.700"
    page.reload()  # the edits are kept with the job
    wait_for_summary(page)
    assert page.locator("#cues .cue .text").first.inner_text() == "And so, my dear fellow Americans"
    expect(page.locator("#revert")).to_be_visible()
    page.click("#revert")
    expect(page.locator("#status")).to_contain_text("Back to the machine's subtitles", timeout=PATIENCE_MS)
    assert "dear" not in page.locator("#cues .cue .text").first.inner_text()
    assert "dear" not in downloaded(page, "#download-srt").read_text()


def test_split_merge_insert_and_delete_then_save(page, jfk):
    upload_and_run(page, jfk[0])
    wait_for_summary(page)
    texts = page.locator("#cues .cue .text")
    expect(texts.first).to_be_visible()
    count = texts.count()  # 3 or 4: "ask not" alone where its pause is over a second
    middle = next(i for i in range(count) if "your country can do" in texts.nth(i).inner_text())
    texts.nth(middle).click()
    page.keyboard.press("Control+Home")
    for _ in range(texts.nth(middle).inner_text().index("your country") + len("your country")):
        page.keyboard.press("ArrowRight")
    page.locator("#cues .cue").nth(middle).locator("[data-do=split]").click()  # at the cursor
    expect(texts).to_have_count(count + 1)
    assert texts.nth(middle).inner_text().strip().endswith("your country")
    assert texts.nth(middle + 1).inner_text().strip().startswith("can do for you")
    page.locator("#cues .cue").nth(middle + 1).locator("[data-do=merge]").click()  # with the last cue
    expect(texts).to_have_count(count)
    page.locator("#cues .cue").nth(0).locator("[data-do=insert]").click()
    expect(texts).to_have_count(count + 1)
    page.click("#save")  # the inserted cue is empty: refused, and nothing saved
    expect(page.locator("#status .message.error")).to_contain_text(
        "Cue 2 has no text: write it, or delete the cue. Nothing was saved.", timeout=PATIENCE_MS
    )
    page.locator("#cues .cue").nth(1).locator("[data-do=delete]").click()
    page.locator("#cues .cue").nth(0).locator(".end").fill("00:05.000")  # now it overlaps the next
    page.click("#save")
    expect(page.locator("#status")).to_contain_text("Cue 2 starts", timeout=PATIENCE_MS)
    expect(page.locator("#status")).to_contain_text("before cue 1 ends (00:05.000)")
    page.locator("#cues .cue").nth(0).locator(".end").fill("00:02.300")
    page.click("#save")
    expect(page.locator("#status")).to_contain_text(f"Saved: {count} subtitles", timeout=PATIENCE_MS)
    cues = list(srt.parse(downloaded(page, "#download-srt").read_text()))
    assert cues[0].content.lower().startswith("and so") and cues[0].end.total_seconds() == 2.3
    assert cues[middle].content.endswith("your country")
    assert cues[-1].content.startswith("can do for you") and cues[-1].content.endswith("your country.")


def test_a_click_plays_the_cue_and_the_cue_being_spoken_is_marked(page, films):
    upload_and_run(page, films["mp4"])
    wait_for_summary(page)
    player_track(page)
    third = page.locator("#cues .cue").nth(2)
    start = float(third.get_attribute("data-start"))
    third.locator("[data-do=play]").click()
    page.wait_for_function(
        f"() => {{ const t = document.querySelector('#video video').currentTime; "
        f"return t >= {start} && t < {start} + 1; }}"
    )
    expect(third).to_have_class(re.compile(r"\bspeaking\b"))  # marked while it is spoken
    assert page.locator("#cues .cue.speaking").count() == 1
    page.evaluate("() => document.querySelector('#video video').pause()")


def test_words_whisper_was_unsure_of_are_marked_and_counted(page, tmp_path):
    audio, _ = speech.compose(
        [
            speech.silence(0.5),
            "The zorblax quintaphone gleeped the frambulous wozzle.",
            speech.silence(0.5),
            "Then Mister Xyloquin said: plimbo tarvish!",
            speech.silence(0.5),
        ]
    )
    upload_and_run(page, speech.write_wav(tmp_path / "nonsense.wav", audio))
    summary = wait_for_summary(page)
    marked = page.locator("#cues mark.unsure")
    count = int(re.search(r"(\d+) words Whisper was unsure of", summary).group(1))
    assert count >= 2 and marked.count() == count
    assert "Whisper was unsure of it" in marked.first.get_attribute("title")


def test_the_video_with_its_subtitles_as_mkv_and_mp4(page, films):
    upload_and_run(page, films["mp4"])
    wait_for_summary(page)
    shown = [cue.strip() for cue in page.locator("#cues .cue .text").all_inner_texts()]
    page.click("#mux")
    expect(page.locator("#download-mkv")).to_be_visible(timeout=PATIENCE_MS)
    for button, codec in (("#download-mkv", "srt"), ("#download-mp4", "mov_text")):
        path = downloaded(page, button)
        with av.open(str(path)) as video:
            track = video.streams.subtitles[0]
            assert track.codec_context.name == codec and track.metadata["language"] == "eng"
            texts = [bytes(packet).decode(errors="replace") for packet in video.demux(track) if packet.size > 2]
        assert [text[-len(cue) :] for text, cue in zip(texts, shown)] == [cue.replace("\n", "\n") for cue in shown]


def test_scripts_send_edited_cues_and_get_the_files_back(server, jfk, tmp_path):
    client = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    _summary, _text, _files, cues, job = client.predict(
        upload=handle_file(str(jfk[0])), formats=["srt", "vtt"], api_name="/transcribe"
    )
    cues[0]["text"] = "And so, my fellow Americans:"
    summary, files = client.predict(job=job, cues=cues, api_name="/save_cues")
    assert summary == f"jfk.flac: {len(cues)} subtitles saved"
    by_name = {Path(path).name: Path(path) for path in files}
    assert sorted(by_name) == ["jfk.srt", "jfk.vtt"]
    assert list(srt.parse(by_name["jfk.srt"].read_text()))[0].content == "And so, my fellow Americans:"
    assert word_error_rate(jfk[1], " ".join(cue.content for cue in srt.parse(by_name["jfk.srt"].read_text()))) <= 0.1
    with pytest.raises(Exception, match="(?i)cue 1 ends"):
        client.predict(job=job, cues=[{"start": 2, "end": 1, "text": "late"}], api_name="/save_cues")
    with pytest.raises(Exception, match="(?i)no such job"):
        client.predict(job="0" * 32, cues=cues, api_name="/save_cues")
    shutil.rmtree(tmp_path, ignore_errors=True)
