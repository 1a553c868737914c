import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

import speech
from models import resolve_model
from parallel_transcriber import ParallelTranscriber
from worker import ModelSpec

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def model_spec() -> ModelSpec:
    """tiny.en, the fastest model, for every test that needs no other language than English."""
    return ModelSpec(resolve_model("tiny.en"), name="tiny.en")


@pytest.fixture(scope="session")
def two_workers(model_spec):
    """Two real CPU worker processes, shared by the tests that only submit jobs."""
    with ParallelTranscriber(model_spec, ["cpu", "cpu"]) as pool:
        yield pool


@pytest.fixture(scope="session")
def jfk() -> tuple[Path, str]:
    return DATA / "jfk.flac", (DATA / "jfk.txt").read_text().strip()


@pytest.fixture(scope="session")
def composition(tmp_path_factory):
    """About 112 s: 22 espeak-ng sentences, pauses of 0.3-3 s, a 20-s silence and a 10-s tone."""
    samples, placed = speech.standard_composition()
    path = speech.write_wav(tmp_path_factory.mktemp("composition") / "composition.wav", samples)
    return path, placed


def tiled(path: Path, times: int, target: Path) -> Path:
    """`path`'s audio `times` over, written to `target`."""
    samples, rate = soundfile.read(path, dtype="float32")
    soundfile.write(target, np.tile(samples, times), rate, subtype="PCM_16")
    return target


@pytest.fixture(scope="session")
def long_talk(composition, tmp_path_factory) -> Path:
    """About 9 minutes, the composition five times over: half a minute of work for one CPU worker."""
    return tiled(composition[0], 5, tmp_path_factory.mktemp("long") / "long-talk.wav")


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    assert path, "ffmpeg is needed to make the test media (.ci/run installs it)"
    return path


def make_media(ffmpeg: str, *args: str) -> None:
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", *args], check=True)


def blue_video(ffmpeg: str, audio: Path, target: Path) -> Path:
    """`audio` under a blue picture, as H.264 and AAC in `target` (an MP4)."""
    make_media(
        ffmpeg,
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:s=160x120:d=11",
        "-i",
        str(audio),
        "-shortest",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        str(target),
    )
    return target


@pytest.fixture(autouse=True)
def _log_everything(caplog):
    caplog.set_level(logging.DEBUG, logger="whisper_for_subs")


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (Debian's; never a downloaded one), for the browser tests."""
    from playwright.sync_api import sync_playwright

    from browser import CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def films(ffmpeg, jfk, tmp_path_factory) -> dict[str, Path]:
    """jfk's speech under a test picture, as H.264 in MP4 and as VP9 in WebM."""
    folder = tmp_path_factory.mktemp("films")
    picture = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-i", str(jfk[0]), "-shortest"]
    make_media(ffmpeg, *picture, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(folder / "speech.mp4"))
    make_media(
        ffmpeg,
        *picture,
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-c:a",
        "libopus",
        str(folder / "speech.webm"),
    )
    return {"mp4": folder / "speech.mp4", "webm": folder / "speech.webm"}
