"""The watched folder: every audio or video file of a media library (a folder and its subfolders) that has no
subtitles of its language beside it gets them, as `<stem>.<language>.srt` (the names Jellyfin, Plex and Kodi
read; other formats on request), now and as files appear. A door into the job layer, like the page and the
APIs.

- Files are taken once they stop growing (the same size and time for SETTLE_S); hidden files and folders,
  and files still being downloaded (`.part`, `.tmp`, `.!qB`, ...), are left alone.
- What became of each file is kept in the folder (`.whisper-for-subs.json`): a restart redoes nothing, and
  a file that failed is reported once and tried again only once it changes.
- Several files at once keep every worker busy; each file's progress goes to the log.
- Nothing is written outside the folder: the subtitles beside their file, written under a hidden name and
  then renamed, so that a media server never reads half of one.
"""

import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import messages
from audio import is_media_name
from jobs import JobOptions, JobService
from pipeline import Progress

log = logging.getLogger("whisper_for_subs")

STATE = ".whisper-for-subs.json"
PARTIAL = (".part", ".partial", ".tmp", ".temp", ".!qb", ".!ut", ".crdownload", ".download", ".opdownload")
SETTLE_S = 5.0  # a file unchanged this long is whole
SCAN_S = 10.0  # how often the folder is looked at for new or changed files
DONE, NO_SPEECH, FAILED = "done", "no speech", "failed"


@dataclass(frozen=True)
class Seen:
    """A file as it was when it was last looked at: changed files are taken again."""

    size: int
    mtime: float

    @classmethod
    def of(cls, path: Path) -> "Seen":
        """The file at `path` as it is now."""
        status = path.stat()
        return cls(status.st_size, status.st_mtime)


class Library:
    """One watched folder, the jobs of its files, and what became of each."""

    def __init__(self, folder: Path, service: JobService, options: JobOptions, jobs: int):
        self.folder = folder.resolve()
        self.service = service
        self.options = options  # its formats are the subtitles each file gets
        self.running: dict[Path, Future] = {}
        self.pool = ThreadPoolExecutor(jobs, thread_name_prefix="watch")
        self.candidates: dict[Path, tuple[Seen, float]] = {}  # not yet settled: as first seen, and when
        self.state = self._load_state()
        self._lock = threading.Lock()

    def watch(self, stop: threading.Event, scan_s: float = SCAN_S) -> None:
        """Look at the folder now and every `scan_s` until `stop` (or the server drains), taking each file
        that needs subtitles; then let the files started finish."""
        done = sum(item["state"] == DONE for item in self.state.values())
        log.info("watching %s: %d files done before", self.folder, done)
        idle = False
        while not stop.is_set() and not self.service.counter.draining:
            for path in self.settled(self.needing_work()):
                self.running[path] = self.pool.submit(self.process, path)
            self.running = {path: future for path, future in self.running.items() if not future.done()}
            if not (self.running or self.candidates) and not idle:
                log.info("watch: every file has what it needs; waiting for new ones")
            idle = not (self.running or self.candidates)
            stop.wait(scan_s if not self.candidates else min(scan_s, SETTLE_S / 2))
        self.pool.shutdown(wait=True, cancel_futures=True)

    def needing_work(self) -> list[Path]:
        """The folder's media files, in name order, that are not being worked on and were not done (or
        failed) as they are now."""
        found = []
        for root, folders, files in os.walk(self.folder):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(files):
                path = Path(root) / name
                if name.startswith(".") or name.lower().endswith(PARTIAL) or not is_media_name(name):
                    continue
                if path in self.running or self._known(path):
                    continue
                found.append(path)
        return found

    def settled(self, paths: list[Path]) -> list[Path]:
        """Of `paths`, those that have not changed for SETTLE_S: the others are still being written."""
        now, whole = time.monotonic(), []
        for path in paths:
            try:
                seen = Seen.of(path)
            except FileNotFoundError:
                continue
            first, since = self.candidates.get(path, (None, now))
            if first != seen:
                self.candidates[path] = (seen, now)
            elif now - since >= SETTLE_S:
                del self.candidates[path]
                whole.append(path)
        self.candidates = {path: value for path, value in self.candidates.items() if path.exists()}
        return whole

    def process(self, path: Path) -> None:
        """One file: its language (detected where none is asked for), then its subtitles unless they are
        there already."""
        name = str(path.relative_to(self.folder))
        seen = Seen.of(path)
        try:
            language = self.options.transcribe.language or self.service.detect_language(path)[0]
            targets = self._targets(path, language)
            if all(target.exists() for target in targets.values()):
                self._remember(path, seen, DONE, language, "its subtitles were there")
                return
            options = replace(self.options, transcribe=replace(self.options.transcribe, language=language))
            transcript = self.service.run(path, options, on_progress=_progress_logger(name))
        except messages.UserError as error:
            if self.service.counter.draining:  # stopped by the server's shutdown: it did not fail
                return
            log.warning("watch: %s: %s (tried again once the file changes)", name, error.sentence)
            self._remember(path, seen, FAILED, None, error.sentence)
            return
        if not transcript.cues:
            log.info("watch: %s: no speech; no subtitles", name)
            self._remember(path, seen, NO_SPEECH, transcript.language, "")
            return
        targets = self._targets(path, transcript.language)
        for fmt, target in targets.items():
            hidden = target.with_name(f".{target.name}.part")
            self.service.write(transcript, hidden.parent, hidden.stem, options, (fmt,))
            os.replace(hidden.with_suffix(f".{fmt}"), target)
        log.info(
            "watch: %s -> %s (%d cues, %.1fx realtime)",
            name,
            ", ".join(t.name for t in targets.values()),
            len(transcript.cues),
            transcript.realtime_factor,
        )
        self._remember(path, seen, DONE, transcript.language, "")

    def _targets(self, path: Path, language: str) -> dict[str, Path]:
        return {fmt: path.with_name(f"{path.stem}.{language}.{fmt}") for fmt in self.options.formats}

    def _known(self, path: Path) -> bool:
        """Whether the file was done, or failed, as it is now."""
        item = self.state.get(str(path.relative_to(self.folder)))
        try:
            return item is not None and Seen(item["size"], item["mtime"]) == Seen.of(path)
        except FileNotFoundError:
            return True

    def _remember(self, path: Path, seen: Seen, state: str, language: str | None, message: str) -> None:
        with self._lock:
            self.state[str(path.relative_to(self.folder))] = {
                "size": seen.size,
                "mtime": seen.mtime,
                "state": state,
                "language": language,
                "message": message,
            }
            partial = self.folder / f"{STATE}.part"
            partial.write_text(json.dumps(self.state, ensure_ascii=False, indent=1))
            os.replace(partial, self.folder / STATE)

    def _load_state(self) -> dict:
        try:
            return json.loads((self.folder / STATE).read_text())
        except (OSError, ValueError):
            return {}


def _progress_logger(name: str):
    """A Progress callback that logs a file's progress every tenth of it."""
    logged = [-1]

    def show(progress: Progress) -> None:
        tenth = int(progress.fraction * 10)
        if tenth > logged[0] and progress.transcribing:
            logged[0] = tenth
            left = f", about {progress.left_s:.0f} s left" if progress.left_s else ""
            log.info("watch: %s: %d %%%s", name, 10 * tenth, left)

    return show


def start_watching(folder: Path, service: JobService, options: JobOptions) -> threading.Event:
    """Watch `folder` in a thread of its own (the app's), with as many files at once as the job layer runs;
    the event it gives stops it."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: the folder to watch does not exist")
    stop = threading.Event()
    library = Library(folder, service, options, service.running)
    threading.Thread(target=library.watch, args=(stop,), name="watch", daemon=True).start()
    return stop


def watch_folder(service: JobService, options: JobOptions, folder: Path) -> int:
    """The command line's `--watch FOLDER`: watch it until Ctrl-C or SIGTERM; the exit code."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: the folder to watch does not exist")
    stop = threading.Event()
    library = Library(folder, service, options, service.running)
    try:
        library.watch(stop)
    except BaseException:  # Ctrl-C, SIGTERM: the files running stop, unfinished, and are not marked failed
        service.counter.start_draining()
        stop.set()
        raise
    return 0
