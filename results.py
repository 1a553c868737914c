"""The results folder: a folder of its own for each job (its upload, its subtitles and, for the page's jobs,
its record), uploads waiting for their job, and nothing else; everything in it goes once it is older
than the keep time.

    results/
        3f2a.../            a job: talk.mp4, talk.srt, talk.player.vtt, talk.machine.json, job.json
        uploads/9c41.../    an upload of the page, until a job takes it
"""

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

UPLOADS = "uploads"
RECORD = "job.json"
# What a job or its files are in, as the page shows it.
WAITING, RUNNING, DONE, NO_SPEECH, FAILED, CANCELLED, INTERRUPTED = (
    "waiting",
    "running",
    "done",
    "no speech",
    "failed",
    "cancelled",
    "interrupted",
)
ENDED = (DONE, NO_SPEECH, FAILED, CANCELLED, INTERRUPTED)


def distinct_names(names: list[str]) -> list[tuple[str, str]]:
    """(file name, subtitle stem) for each of a batch's files in one folder: a name that comes again gets
    " (2)", " (3)" ...; names that differ only in their extension keep it in their stems, so that no two
    files' subtitles share a name."""
    files: list[str] = []
    for name in names:
        unique, number = name, 1
        while unique in files:
            number += 1
            unique = f"{Path(name).stem} ({number}){Path(name).suffix}"
        files.append(unique)
    stems = [Path(name).stem for name in files]
    return [(name, stem if stems.count(stem) == 1 else name) for name, stem in zip(files, stems)]


def new_job_folder(root: Path) -> Path:
    """A new folder for one job, under a name nobody can guess."""
    folder = root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def is_job_id(text: str) -> bool:
    """Whether `text` could name a job folder (so that a name from a URL never leaves the results folder)."""
    return len(text) == 32 and all(char in "0123456789abcdef" for char in text)


def remove_old(root: Path, keep_hours: float) -> None:
    """Delete what lies in `root` (job folders, waiting uploads, files a broken upload left behind) that
    was last changed more than `keep_hours` ago. Hidden names (the server's own) are left alone."""
    cutoff = time.time() - keep_hours * 3600
    for entry in [*_entries(root), *_entries(root / UPLOADS)]:
        try:
            if entry.name != UPLOADS and entry.lstat().st_mtime < cutoff:
                _remove(entry)
        except FileNotFoundError:  # removed meanwhile
            pass


def remove_leftovers(root: Path) -> None:
    """At start: what no job can take any more, whatever its age: uploads that were waiting for a job
    of the server that stopped, and loose files at the top (parts of uploads cut off)."""
    _remove(root / UPLOADS)
    for entry in _entries(root):
        if not entry.is_dir():
            _remove(entry)


def _entries(folder: Path) -> list[Path]:
    """What lies in `folder`, but hidden names."""
    try:
        return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass
class FileOutcome:
    """One input file of a page's job, and what became of it."""

    source: str  # its name in the job's folder
    name: str  # as the user named it
    stem: str  # of its subtitles' names (talk.srt): its own in a batch, even where two names differ only in
    # their extension ("a.mp3.srt" beside "a.flac.srt")
    state: str = WAITING
    message: str = ""  # what happened, in words: the summary line, or why it failed
    outputs: dict[str, str] = field(default_factory=dict)  # format -> its file's name in the job's folder
    player: str = ""  # the WebVTT file the page's player shows
    picture: bool = False  # it is a video
    transcript: str = ""  # the machine's transcript (JSON), for the cue table and the editor
    edited: str = ""  # the transcript as a person edited it, where they did
    edits: int = 0  # times it was saved edited (each save names the player's track anew)
    muxed: dict[str, str] = field(default_factory=dict)  # container (mkv, mp4) -> the video with its subtitles


@dataclass
class JobRecord:
    """What is kept of a page's job in its folder (`job.json`), so that the page shows it again after a
    reload, or after the server restarted."""

    id: str
    owner: str  # the browser that started it (a random id the browser keeps)
    user: str | None  # the login's name, where the server has a login
    created: float  # time.time()
    request: dict  # the JobRequest's fields, for "Run again"
    files: list[FileOutcome]
    state: str = WAITING
    message: str = ""  # what happened to the whole job, in words
    archive: str = ""  # a batch's zip of every file's subtitles

    @property
    def title(self) -> str:
        """How the job is listed: its file's name, or its batch's first and how many more."""
        more = len(self.files) - 1
        return self.files[0].name + (f" and {more} more" if more else "")

    def save(self, folder: Path) -> None:
        """Write the record into `folder` (a new file put in place, so that a reader never sees half)."""
        text = json.dumps(asdict(self), ensure_ascii=False, indent=1)
        partial = folder / f".{RECORD}.{os.getpid()}"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, folder / RECORD)

    @classmethod
    def load(cls, folder: Path) -> "JobRecord | None":
        """The record in `folder`, or None where there is none that can be read."""
        try:
            data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            data["files"] = [FileOutcome(**item) for item in data["files"]]
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None
