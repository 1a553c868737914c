import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

import speech
from parallel_transcriber import ModelSpec, ParallelTranscriber
from models import resolve_model

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


@pytest.fixture(autouse=True)
def _log_everything(caplog):
    caplog.set_level(logging.DEBUG, logger="whisper_for_subs")
