"""The watched folder, as `python cli.py --watch FOLDER` runs it: a media library that gets subtitles, now
and as files appear, across a restart."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile
import srt

from conftest import blue_video
from helpers import ROOT, wait_until, word_error_rate

pytestmark = pytest.mark.server


class Watcher:
    """`python cli.py --watch FOLDER` with two CPU workers, its log in a file."""

    def __init__(self, folder: Path, log: Path):
        self.log = log
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "cli.py"),
                    "--watch",
                    str(folder),
                    "--model",
                    "tiny.en",
                    "--devices",
                    "cpu*2",
                    "--watch-formats",
                    "srt,vtt",
                ],
                cwd=folder.parent,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def said(path: Path) -> str:
    return " ".join(cue.content for cue in srt.parse(path.read_text()))


def test_a_watched_library_gets_subtitles_once_now_and_as_files_appear(tmp_path, jfk, ffmpeg):
    library = tmp_path / "library"
    (library / "Show" / "Season 1").mkdir(parents=True)
    (library / ".trash").mkdir()
    shutil.copy(jfk[0], library / "talk.flac")
    blue_video(ffmpeg, jfk[0], library / "Show" / "Season 1" / "S01E01.mp4")
    shutil.copy(jfk[0], library / ".hidden.flac")
    shutil.copy(jfk[0], library / ".trash" / "old.flac")
    shutil.copy(jfk[0], library / "movie.mkv.part")  # still downloading
    shutil.copy(jfk[0], library / "had.flac")
    (library / "had.en.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nmine\n")  # its own, kept
    (library / "had.en.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nmine\n")
    (library / "broken.mp3").write_text("not audio\n")
    (library / "notes.txt").write_text("not media\n")
    outside = sorted(tmp_path.iterdir())

    watcher = Watcher(library, tmp_path / "first.log")
    try:
        wait_until(
            lambda: (library / "Show" / "Season 1" / "S01E01.en.vtt").exists() and (library / "talk.en.srt").exists(),
            watcher.output,
        )
        for subtitles in (library / "talk.en.srt", library / "Show" / "Season 1" / "S01E01.en.srt"):
            assert word_error_rate(jfk[1], said(subtitles)) <= 0.1, subtitles
        # A file that appears while it runs, written a little at a time: taken once it stops growing, whole.
        samples, rate = soundfile.read(jfk[0])
        with soundfile.SoundFile(library / "new.wav", "w", rate, samples.shape[1]) as growing:
            for start in range(0, len(samples), rate):
                growing.write(samples[start : start + rate])
                growing.flush()
                time.sleep(0.5)
        wait_until(lambda: (library / "new.en.srt").exists(), watcher.output)
        assert word_error_rate(jfk[1], said(library / "new.en.srt")) <= 0.1  # all of it, not what was there early
        wait_until(lambda: "every file has what it needs" in watcher.output().split("new.en.srt")[-1], watcher.output)
    finally:
        assert watcher.stop() in (143, -signal.SIGTERM)
    first = watcher.output()
    assert first.count("broken.mp3: This file cannot be transcribed") == 1, first  # reported once
    assert (library / "had.en.srt").read_text().endswith("mine\n")  # subtitles it had are left alone
    assert not list(library.glob("movie*.srt")) and not list(library.glob(".hidden*.srt"))
    assert not list((library / ".trash").glob("*.srt")) and not list(library.rglob(".*.part"))
    assert sorted(tmp_path.iterdir()) == sorted([*outside, tmp_path / "first.log"])  # nothing written outside

    again = Watcher(library, tmp_path / "second.log")  # a restart: nothing is done again
    try:
        wait_until(lambda: "every file has what it needs" in again.output(), again.output)
    finally:
        again.stop()
    second = again.output()
    assert "watching" in second and "files done before" in second
    assert " -> " not in second and "cannot be transcribed" not in second and "model loaded" in second, second
