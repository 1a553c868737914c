"""Jobs that outlive their page: a reload, the job's address opened later, and a server restart, in headless
Chromium at 1280 and 390 px."""

import signal

import pytest
from playwright.sync_api import expect

from browser import PATIENCE_MS, job_address, open_page, upload_and_run, wait_for_result, wait_for_summary
from helpers import start_app, wait_until, word_error_rate

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_a_reload_mid_job_comes_back_to_its_progress_and_cues_and_then_its_result(
    chromium, tmp_path, long_talk, width, height
):
    app = start_app(tmp_path, WHISPER_DEVICES="cpu")
    context, page = open_page(chromium, app.url, width, height)
    try:
        upload_and_run(page, long_talk)
        page.wait_for_function(
            "() => document.querySelector('#cues').innerText.includes('The quick')", timeout=PATIENCE_MS
        )
        address = job_address(page)
        page.reload()
        page.wait_for_selector("#run")
        # The same job, still running: its progress, the cues made so far, and a Cancel for it.
        page.wait_for_selector("#status .progress", timeout=PATIENCE_MS)
        expect(page.locator("#cues")).to_contain_text("The quick", timeout=PATIENCE_MS)
        expect(page.locator("#cancel")).to_be_visible()
        expect(page.locator("#recent")).to_contain_text("long-talk.wav")
        assert page.url == address
        summary = wait_for_summary(page)
        assert "realtime" in summary and page.input_value("#text textarea").count("\n") > 20
        expect(page.locator("#recent")).to_contain_text("done")
        # Opened later from its address alone, in a new tab of the same browser: the result.
        later = context.new_page()
        later.goto(address)
        assert "realtime" in wait_for_summary(later)
        expect(later.locator("#download-srt")).to_be_visible()
    finally:
        context.close()
        app.stop()


def test_a_restart_shows_finished_jobs_and_the_interrupted_one_runs_again(chromium, tmp_path, jfk, long_talk):
    app = start_app(tmp_path, WHISPER_DEVICES="cpu")
    context, page = open_page(chromium, app.url)
    try:
        upload_and_run(page, jfk[0])
        wait_for_summary(page)
        finished = job_address(page)
        page.goto(app.url)
        page.wait_for_selector("#run")
        upload_and_run(page, long_talk)
        page.wait_for_selector("#status .progress", timeout=PATIENCE_MS)
        wait_until(lambda: "] unit " in app.output(), "the long job reached a worker")
        interrupted = job_address(page)
        app.process.send_signal(signal.SIGTERM)  # twice: the server stops at once, its job unfinished
        wait_until(lambda: "shutting down" in app.output(), "the server began to shut down")
        app.process.send_signal(signal.SIGTERM)
        app.process.wait(timeout=120)

        # The same results folder, and the same address (a browser keeps its storage per address).
        app = start_app(tmp_path, port=int(app.url.rsplit(":", 1)[1]), WHISPER_DEVICES="cpu")
        page.goto(finished)
        summary = wait_for_summary(page)
        assert "11.0 s of audio" in summary and word_error_rate(jfk[1], page.input_value("#text textarea")) <= 0.10
        expect(page.locator("#recent")).to_contain_text("interrupted")

        page.goto(interrupted)
        said = wait_for_result(page)
        assert "The server stopped while this job ran" in said
        expect(page.locator("#again")).to_be_visible()
        page.click("#again")  # its upload was kept
        assert "realtime" in wait_for_summary(page)
        expect(page.locator("#download-srt")).to_be_visible()
    finally:
        context.close()
        app.stop()
