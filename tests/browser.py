"""The page in headless Chromium (Debian's, driven by Playwright): what the browser tests share."""

import re
from pathlib import Path

from playwright.sync_api import expect

from helpers import PATIENCE_S, ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PATIENCE_MS = PATIENCE_S * 1000


def open_page(browser, url: str, width: int = 1280, height: int = 800):
    """A new browser context (a browser of its own, with its own storage) on the page; (context, page)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#run")
    return context, page


def fresh(page, url: str) -> None:
    """The page opened again without a job in its address, as a person starting over would."""
    page.goto(url)
    page.wait_for_selector("#run")


def choose_file(page, path: Path) -> None:
    """Put `path` into the File tab's picker and wait until the page shows it."""
    page.click("#tab-file-button")
    if not page.locator("#upload input[type=file]").count():  # it holds the last job's file: clear it first
        page.locator("#upload button[aria-label=Clear]").click()
    page.set_input_files("#upload input[type=file]", str(path))
    # Gradio shows the name's stem and extension in separate elements, at times with space between.
    expect(page.locator("#upload")).to_contain_text(re.compile(re.escape(path.stem) + r"\s*" + re.escape(path.suffix)))


def upload_and_run(page, path: Path) -> None:
    choose_file(page, path)
    page.click("#run")


def job_address(page) -> str:
    """The page's address once it names the job the page shows (set as the job starts)."""
    page.wait_for_function("() => /[?&]job=[0-9a-f]{32}$/.test(window.location.href)", timeout=PATIENCE_MS)
    return page.url


def status(page) -> str:
    return page.inner_text("#status")


def wait_for_result(page) -> str:
    """Wait until the job has ended (its status box holds a message, not a progress bar); its text."""
    page.wait_for_selector("#status .message", timeout=PATIENCE_MS)
    return status(page)


def wait_for_summary(page) -> str:
    """Wait until the job has ended well; its summary."""
    expect(page.locator("#status .message.done")).to_contain_text("realtime", timeout=PATIENCE_MS)
    return status(page)


def no_error_badges(page) -> bool:
    """Whether the page shows none of Gradio's error toasts or red "Error" badges."""
    return page.locator(".toast-body.error, .error-text, .status-tracker .error").count() == 0


def played(page, player: str = "#video video") -> dict:
    """The player's media: its length, and its caption track's address and cues."""
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('{player}'); return v && v.readyState >= 1 "
        "&& v.textTracks.length; }",
        timeout=PATIENCE_MS,
    )
    return page.evaluate(f"""async () => {{
        const media = document.querySelector('{player}');
        const track = media.querySelector('track');
        for (let i = 0; i < 50 && !(media.textTracks[0].cues || []).length; i++)
            await new Promise(r => setTimeout(r, 100));
        return {{duration: media.duration, track: track.src, kind: track.kind,
                cues: [...media.textTracks[0].cues].map(cue => cue.text)}};
    }}""")


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
