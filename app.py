"""The web app: upload a recording, watch it being transcribed, play it with subtitles, download them.

    python app.py [--port 7860] [--model large-v3-turbo] [--devices auto] ...

Every flag has an environment variable (WHISPER_MODEL, WHISPER_DEVICES, ...), listed in the README.
The worker pools load their models before the page is served and live until the server stops.

Gradio's upload folder is the results folder: an upload arrives there in a folder of its own, its job
moves it into the job's folder, and the job's subtitles are written beside it, so that the player and
the downloads are served from where they lie and nothing of a job is left anywhere else.
"""

import argparse
import contextvars
import logging
import math
import re
import os
import queue
import shutil
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import pycountry
from gradio import utils as gradio_utils
from gradio_client import utils as gradio_client_utils
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from api import ApiSettings, OpenAIApi
from audio import AudioError, has_picture
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from datatypes import Cue, TranscribeOptions, Transcript
from dispatcher import JobCancelled, JobFailed, Progress
from links import AddressPolicy, LinkError, fetch_media
from models import LANGUAGE_CODES, can_translate, default_models, parse_batch_size
from parallel_transcriber import WorkerPool
from pipeline import transcribe_file
from serving import JobCounter, LoginBrake, ServerDraining, serve
from startup import as_sentence, configure_logging, job_options, model_spec, start_pool, unwind_on_sigterm
from subtitles import CueOptions
from vad_splitter import VadOptions
from writers import FORMATS, write

log = logging.getLogger("whisper_for_subs")

# One answer for every path that did not come in through this server's upload route, whether or not
# something exists there, so that the server's files can be neither read nor probed.
NOT_UPLOADED = "This file was not uploaded to this page, or its job has ended: upload it again."
CANCELLED = "Cancelled."
VAD_THRESHOLD_RANGE = (0.2, 0.8)
LINE_CHARS_RANGE = (16, 60)


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    models: list[str]  # the first is the default
    devices: str
    ray_address: str | None  # workers as Ray actors on this cluster; None: processes on this machine
    compute_type: str | None
    batch_size: int | None  # None: what fits each device
    max_file_size: str
    username: str | None
    password: str | None
    results_dir: Path
    keep_hours: float
    queue_size: int
    drain_seconds: float  # how long SIGTERM waits for running jobs
    api_key: str | None  # for the OpenAI-compatible API; None: open, unless there is a login
    allow_private_urls: bool  # links may point to this server's own network (links.py)
    multilingual: bool  # recordings change language: "Several languages" ticked, and the API's default


def parse_settings(argv: list[str] | None = None) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="whisper-for-subs web app")
    parser.add_argument("--host", default=env("WHISPER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("WHISPER_PORT", "7860")))
    parser.add_argument("--model", default=env("WHISPER_MODEL", ""),
                        help="model, or several separated by commas (the first is the default)")
    parser.add_argument("--devices", default=env("WHISPER_DEVICES", "auto"))
    parser.add_argument("--ray-address", default=env("WHISPER_RAY_ADDRESS") or None,
                        help="run the workers as Ray actors on this cluster (host:port, or auto)")
    parser.add_argument("--compute-type", default=env("WHISPER_COMPUTE_TYPE") or None)
    parser.add_argument("--batch-size", type=parse_batch_size, default=parse_batch_size(env("WHISPER_BATCH_SIZE", "auto")))
    parser.add_argument("--max-file-size", default=env("WHISPER_MAX_FILE_SIZE", "2gb"))
    parser.add_argument("--username", default=env("WHISPER_USERNAME") or None)
    parser.add_argument("--password", default=env("WHISPER_PASSWORD") or None)
    parser.add_argument("--results-dir", default=env("WHISPER_RESULTS_DIR", "results"))
    parser.add_argument("--keep-hours", type=float, default=float(env("WHISPER_KEEP_HOURS", "24")))
    parser.add_argument("--queue-size", type=int, default=int(env("WHISPER_QUEUE_SIZE", "32")))
    parser.add_argument("--drain-seconds", type=float, default=float(env("WHISPER_DRAIN_SECONDS", "600")),
                        help="on SIGTERM, how long running jobs may take to finish before the server stops")
    parser.add_argument("--api-key", default=env("WHISPER_API_KEY") or None,
                        help="the key the OpenAI-compatible API asks for (Authorization: Bearer KEY)")
    parser.add_argument("--allow-private-urls", action="store_true", default=env("WHISPER_ALLOW_PRIVATE_URLS") == "1",
                        help="let links point to loopback, private and link-local addresses (refused by default)")
    parser.add_argument("--multilingual", action="store_true", default=env("WHISPER_MULTILINGUAL") == "1",
                        help="detect each part's language: tick Several languages, and for API requests that name none")
    args = parser.parse_args(argv)
    if bool(args.username) != bool(args.password):
        parser.error("give both a username and a password, or neither")
    models = [name.strip() for name in args.model.split(",") if name.strip()] or default_models()
    return Settings(
        host=args.host, port=args.port, models=models, devices=args.devices, ray_address=args.ray_address,
        compute_type=args.compute_type,
        batch_size=args.batch_size, max_file_size=args.max_file_size, username=args.username,
        password=args.password, results_dir=Path(args.results_dir).resolve(), keep_hours=args.keep_hours,
        queue_size=args.queue_size, drain_seconds=args.drain_seconds, api_key=args.api_key,
        allow_private_urls=args.allow_private_urls, multilingual=args.multilingual,
    )


def start_pools(settings: Settings) -> dict[str, WorkerPool]:
    """One worker pool per configured model, each loaded on every device before anything is served."""
    return {name: start_pool(model_spec(name, settings.compute_type), settings.devices, settings.ray_address)
            for name in settings.models}


# What the file picker offers: audio and video by their MIME types, and MPEG transport streams, whose
# extension the MIME table does not know as video.
MEDIA_FILE_TYPES = ["audio", "video", ".ts", ".mts", ".m2ts"]


def uploaded_path(payload) -> str | None:
    """The upload input's preprocessing: the uploaded file's path, if it is named as audio or video.
    (gr.File's own, in Gradio 6.31, also leaves an empty temporary file in the upload folder each time.
    It is replaced on the one input rather than in a subclass, for which Gradio would write a .pyi file
    beside app.py.)"""
    if payload is None:
        return None
    if not gradio_client_utils.is_valid_file(payload.path, MEDIA_FILE_TYPES):
        raise gr.Error(f"{Path(payload.path).name} is not an audio or video file: choose a recording or a film.")
    return payload.path


def uploaded_paths(payload) -> list[str]:
    """The several-files input's preprocessing: each file's path, each checked as `uploaded_path` does."""
    return [uploaded_path(item) for item in payload.root] if payload is not None else []


def uploaded_media_paths(payload) -> list[str]:
    """The folder input's preprocessing: the paths of the folder's audio and video files (a folder
    holds other files too: pictures, notes), in name order; gr.Error where it has none."""
    if payload is None:
        return []
    paths = sorted(item.path for item in payload.root if gradio_client_utils.is_valid_file(item.path, MEDIA_FILE_TYPES))
    if not paths:
        raise gr.Error("This folder holds no audio or video file.")
    return paths


# The languages people subtitle most, first in the menu; the others follow by name.
MOST_USED_LANGUAGES = ("en", "zh", "es", "fr", "de", "ja", "pt", "ru", "ko", "it", "ar", "hi")


def language_name(code: str) -> str:
    """A language's English name from ISO 639 (pycountry), without qualifiers such as "(macrolanguage)"."""
    if code == "jw":  # Whisper's code for Javanese; ISO 639-1 says jv
        code = "jv"
    found = pycountry.languages.get(**{"alpha_2" if len(code) == 2 else "alpha_3": code})
    name = getattr(found, "common_name", None) or getattr(found, "name", code)
    return re.sub(r" \(.*\)$", "", name)


def language_choices() -> list[tuple[str, str]]:
    """The language menu: (shown, value) pairs such as ("Chinese – zh", "zh"), the most used first."""
    rest = sorted((code for code in LANGUAGE_CODES if code not in MOST_USED_LANGUAGES), key=language_name)
    return [("Detect it", "auto")] + [(f"{language_name(code)} – {code}", code) for code in (*MOST_USED_LANGUAGES, *rest)]


def language_state(english_only: bool, model: str, value: str = "auto") -> dict:
    """The language menu's state for `model`: fixed to English, saying why, for an English-only model."""
    if english_only:
        return {"value": "en", "interactive": False, "info": f"{model} knows only English"}
    return {"value": value, "interactive": True, "info": None}


def devices_info(devices: list[str]) -> tuple[str, str]:
    """The Multi-GPU checkbox's label and what it says it does, with the devices' names."""
    if " " in devices[0]:  # Ray actors, named after their node: "node-2 cuda:1"
        return "Multi-GPU", f"Use all {len(devices)} workers of the cluster: {', '.join(devices)}."
    if devices[0].startswith("cuda"):
        gpus = list(dict.fromkeys(devices))  # two workers may share a GPU
        if len(gpus) == 1:
            shared = f", {len(devices)} workers sharing it" if len(devices) > 1 else ""
            return "Multi-GPU", f"This server has one GPU ({gpus[0]}{shared})."
        return "Multi-GPU", f"Use all {len(gpus)} GPUs: {', '.join(gpus)}."
    if len(devices) == 1:
        return "Multi-GPU", f"This server has one device ({devices[0]})."
    both = "both" if len(devices) == 2 else f"all {len(devices)}"
    names = ", ".join(f"cpu #{number}" for number in range(1, len(devices) + 1))
    return "Multi-GPU (CPU workers here)", f"Use {both} CPU workers: {names}. Without it a job uses one."


# The player's captions with word highlight (WebVTT's inline timestamps): the words not yet spoken
# dimmed, in browsers that let pages style them. Chromium does not; it shows them one by one as spoken.
PAGE_CSS = "video::cue(:future) { color: #b4b4b4; }"


@dataclass(frozen=True)
class JobSettings:
    """How the page asked one job (or each file of a batch) to be run."""

    pool: WorkerPool
    options: TranscribeOptions
    multi_gpu: bool
    vad_threshold: float
    line_chars: int
    chinese_script: str
    word_highlight: bool  # ASS and WebVTT (the player's too) light up each word as it is spoken
    session: str  # the browser session, whose Cancel stops the job


class SubtitleApp:
    """The page's event handlers, over the same pipeline as the command line."""

    def __init__(self, pools: dict[str, WorkerPool], settings: Settings):
        self.pools = pools
        self.settings = settings
        self.cancels: dict[str, threading.Event] = {}  # browser session -> its running job's cancel flag
        self.jobs = JobCounter()
        self.uploaded: set[str] = set()  # Gradio's own record of the files its upload route took in
        # (browser session, an upload's path) -> the job folder's copy, for Transcribe pressed again
        self._moved: dict[tuple[str, str], Path] = {}
        self._claiming = threading.Lock()

    def translatable(self, model: str) -> bool:
        return can_translate(model, self.pools[model].multilingual)

    def english_only(self, model: str) -> bool:
        return not self.pools[model].multilingual

    def transcribe(
        self, upload, recording, multi_gpu, language, task, model, formats, vad_threshold, initial_prompt,
        hotwords, line_chars, chinese_script, link=None, files=None, folder=None, several_languages=False,
        word_highlight=False, request: gr.Request = None, progress=gr.Progress(),
    ) -> Iterator[tuple]:
        """One upload, recording or link; or several files (or a folder's) as one batch. Yields the page's
        outputs: cleared, then the cues finished so far while the job runs, last the result. (The inputs
        after the Chinese script came later and may be left out, so that scripts written before them
        still work.)"""
        files = (files or []) + (folder or [])
        source = upload or recording
        link = (link or "").strip() if isinstance(link, str) else ""
        if not source and not link and not files:
            raise gr.Error("Choose an audio or video file, record something, or paste a link, first.")
        if task == "translate" and not self.translatable(model):
            raise gr.Error(f"The model {model} cannot translate. Choose another model, or Transcribe.")
        vad_threshold = number_in_range("VAD sensitivity", vad_threshold, *VAD_THRESHOLD_RANGE)
        line_chars = number_in_range("Characters per line", line_chars, *LINE_CHARS_RANGE)
        if line_chars != int(line_chars):
            raise gr.Error(f"Characters per line must be a whole number, not {line_chars}.")
        pool = self.pools[model]
        try:
            options = job_options(pool.spec, language, task, initial_prompt, hotwords, self.settings.batch_size,
                                  bool(several_languages))
        except ValueError as error:
            raise gr.Error(as_sentence(str(error))) from None
        remove_old_results(self.settings.results_dir, self.settings.keep_hours)
        job_dir = self.settings.results_dir / uuid.uuid4().hex  # a name nobody else can guess
        run = JobSettings(pool, options, multi_gpu, vad_threshold, int(line_chars), chinese_script,
                          bool(word_highlight), request.session_hash)
        if files and not source and not link:
            yield from showing_cues_meanwhile(
                lambda show_cues: self._transcribe_batch(files, job_dir, run, formats, progress, show_cues))
        else:
            yield from showing_cues_meanwhile(
                lambda show_cues: self._transcribe_one(source, link, job_dir, run, formats, progress, show_cues))

    def _transcribe_one(self, source: str | None, link: str, job_dir: Path, run: JobSettings, formats: list[str],
                        progress: gr.Progress, show_cues: Callable[[list[Cue]], None]) -> tuple:
        """One upload, recording or link: the page's outputs with its player, subtitles and downloads."""
        try:
            with self.jobs.job():
                job_dir.mkdir(parents=True)
                if source:
                    source = self._claim(source, run.session, job_dir)
                else:
                    source = self._download(link, job_dir, progress)
                transcript = self._run(source, run, progress, show_cues)
        except ServerDraining:
            raise gr.Error("The server is restarting and takes no new jobs: try again in a minute.") from None
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)  # the upload with it: nothing of a failed job stays
            raise
        return self._show_result(source, job_dir, transcript, formats, run.word_highlight)

    def _claim(self, source: str, session: str, job_dir: Path) -> Path:
        """The job's input, moved out of the upload folder into the job's folder; or, where this browser
        session transcribes the same upload again, where its earlier job moved it. Any other path is
        refused with NOT_UPLOADED."""
        path = os.path.abspath(source)
        with self._claiming:
            # Forget uploads whose job folders have expired (remove_old_results).
            self._moved = {key: moved for key, moved in self._moved.items() if moved.exists()}
            moved = self._moved.get((session, path))
            if moved is not None and moved.is_file():
                return moved
            if path not in self.uploaded or not Path(path).is_file():
                raise gr.Error(NOT_UPLOADED)
            self.uploaded.discard(path)
            self._moved[session, path] = Path(shutil.move(path, free_path(job_dir, Path(path).name)))
        remove_if_empty(Path(path).parent)
        return self._moved[session, path]

    def _download(self, link: str, job_dir: Path, progress: gr.Progress) -> Path:
        """The link's media, fetched into the job's folder within the upload size limit."""
        progress(0, desc="Downloading the link")
        try:
            return fetch_media(link, job_dir, gradio_utils._parse_file_size(self.settings.max_file_size),
                               AddressPolicy(allow_private=self.settings.allow_private_urls))
        except LinkError as error:
            raise gr.Error(f"This link cannot be used: {as_sentence(str(error))}") from None

    def _run(self, source: Path, run: JobSettings, progress: gr.Progress, show_cues: Callable[[list[Cue]], None],
             file_label: str = "") -> Transcript:
        """Transcribe one file, showing its progress (`file_label`: which file of a batch it is) and its
        cues as they are finished. Raises gr.Error with what went wrong."""
        cancel = self.cancels[run.session] = threading.Event()

        def show(update: Progress) -> None:
            reading = bool(update.duration_s) and update.decoded_s < update.duration_s
            if update.done_s == 0 and (reading or not update.expected_s):  # no speech found yet, or no text
                of = f" of {update.duration_s:.0f}" if update.duration_s else ""
                progress(update.decoded_s / update.duration_s if update.duration_s else None, unit="s read",
                         desc=f"{file_label}Decoding and finding speech: {update.decoded_s:.0f}{of} s read")
                return
            states = ", ".join(f"{name} {'busy' if name in update.busy_devices else 'idle'}" for name in update.workers)
            progress((round(update.done_s), round(update.expected_s)), unit="s of speech",
                     desc=f"{file_label}Transcribing: {states or 'waiting for a free worker'}")

        progress(0, desc=f"{file_label}Decoding and finding speech")
        try:
            return transcribe_file(
                source, run.pool, run.options, VadOptions(threshold=run.vad_threshold), max_line_chars=run.line_chars,
                chinese_script=run.chinese_script, on_progress=show, on_cues=show_cues, all_workers=run.multi_gpu,
                cancel=cancel,
            )
        except AudioError as error:
            raise gr.Error(f"This file cannot be transcribed: {error.args[0].split(': ', 1)[-1]}") from None
        except JobCancelled:
            raise gr.Error(CANCELLED) from None
        except JobFailed as error:
            raise gr.Error(str(error)) from None
        finally:
            self.cancels.pop(run.session, None)

    def _transcribe_batch(self, files: list[str], job_dir: Path, run: JobSettings, formats: list[str],
                          progress: gr.Progress, show_cues: Callable[[list[Cue]], None]) -> tuple:
        """Several uploads as one batch, one after another on the workers: each file's subtitles, and
        all of them in one zip named after the batch. A file that fails is reported and the rest go on;
        Cancel stops the whole batch, as it stops a single file's job (its event is cancelled, so
        nothing it would return could be shown), and its folder goes."""
        try:
            with self.jobs.job():
                job_dir.mkdir(parents=True)
                # The same recording chosen twice is one upload (Gradio keeps uploads by content): once.
                sources = list(dict.fromkeys(self._claim(path, run.session, job_dir) for path in files))
                written, lines, texts, transcribed = [], [], [], 0
                for number, source in enumerate(sources, 1):
                    label = f"File {number} of {len(sources)} ({source.name}): "
                    try:
                        transcript = self._run(source, run, progress, show_cues, file_label=label)
                    except gr.Error as error:
                        if error.message == CANCELLED:
                            raise
                        lines.append(f"- {source.name}: {error.message}")
                        continue
                    written += [write(transcript, job_dir / f"{source.stem}.{fmt}", fmt, run.word_highlight)
                                for fmt in formats or ["srt"]]
                    transcribed += 1
                    lines.append(f"- {source.name}: {transcript.duration:.1f} s ({transcript.language}), "
                                 f"{len(transcript.cues)} subtitles, {transcript.realtime_factor:.1f}x realtime")
                    texts.append(f"== {source.name} ==\n" + plain_text(transcript.cues))
        except ServerDraining:
            raise gr.Error("The server is restarting and takes no new jobs: try again in a minute.") from None
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        if not written:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise gr.Error("No file of the batch could be transcribed:\n" + "\n".join(lines))
        batch_name = sources[0].stem + (f" and {len(sources) - 1} more" if len(sources) > 1 else "")
        archive = job_dir / f"{batch_name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in written:
                bundle.write(path, path.name)
        summary = f"**{transcribed} of {len(sources)} files** transcribed:\n" + "\n".join(lines)
        return (
            summary, "\n\n".join(texts), gr.Video(value=None, visible="hidden"), gr.Audio(value=None, visible="hidden"),
            *[gr.DownloadButton(visible=False) for _ in FORMATS],
            gr.DownloadButton(f"Download all ({archive.name})", value=str(archive), visible=True),
            gr.File(value=[str(path) for path in written], visible=True),
            gr.Dataframe(value=None, visible="hidden"),  # each file's cues are in its own files
        )

    def _show_result(self, source: Path, job_dir: Path, transcript: Transcript, formats: list[str],
                     word_highlight: bool) -> tuple:
        stem = source.stem
        files = {fmt: write(transcript, job_dir / f"{stem}.{fmt}", fmt, word_highlight) for fmt in formats or ["srt"]}
        # Always WebVTT of our own for the player: Gradio would otherwise convert an SRT into a file of
        # its own, outside the job's folder (and its conversion garbles the times).
        player_subtitles = files.get("vtt") or write(transcript, job_dir / f"{stem}.player.vtt", "vtt", word_highlight)
        summary = (
            f"**{transcript.duration:.1f} s** of audio ({transcript.language}) in **{transcript.wall_seconds:.1f} s**, "
            f"**{transcript.realtime_factor:.1f}x realtime** on {transcript.workers} worker(s); "
            f"{len(transcript.cues)} subtitles."
        )
        picture = has_picture(source)
        downloads = [
            gr.DownloadButton(f"Download {fmt.upper()}", value=str(files[fmt]), visible=True) if fmt in files
            else gr.DownloadButton(visible=False)
            for fmt in FORMATS
        ]
        # The players are made "hidden" rather than not visible while there is nothing to play: Gradio
        # 6.31 leaves a video player that was not visible empty once it is shown.
        return (
            summary,
            plain_text(transcript.cues),
            gr.Video(value=str(source), subtitles=str(player_subtitles), visible=True) if picture
            else gr.Video(value=None, visible="hidden"),
            gr.Audio(value=str(source), subtitles=str(player_subtitles), visible=True) if not picture
            else gr.Audio(value=None, visible="hidden"),
            *downloads,
            gr.DownloadButton(visible=False),  # the batch's zip and files
            gr.File(visible=False),
            gr.Dataframe(value=cue_rows(transcript.cues), visible=True),
        )

    def cancel(self, request: gr.Request) -> str:
        flag = self.cancels.get(request.session_hash)
        if flag is not None:
            flag.set()
        return CANCELLED

    def model_changed(self, model: str, language: str):
        allowed = self.translatable(model)
        task = gr.Radio(interactive=allowed, value="transcribe", info=None if allowed else f"{model} cannot translate")
        return task, gr.Dropdown(**language_state(self.english_only(model), model, language))

    def remove_unused_uploads(self) -> None:
        """Delete what was uploaded but never transcribed (at shutdown)."""
        for path in list(self.uploaded):
            Path(path).unlink(missing_ok=True)
            remove_if_empty(Path(path).parent)
        self.uploaded.clear()


def plain_text(cues: list[Cue]) -> str:
    """The subtitles' words, a cue a line, for reading and copying."""
    return "\n".join(cue.text.replace("\n", " ") for cue in cues)


def clock(seconds: float) -> str:
    """A time as the cue table shows it, to a tenth of a second (narrow enough for a phone): 01:02.5,
    or 1:02:03.5 from an hour on."""
    minutes, tenths = divmod(round(seconds * 10), 600)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}:" if hours else "") + f"{minutes:02d}:{tenths // 10:02d}.{tenths % 10}"


def cue_rows(cues: list[Cue]) -> list[list[str]]:
    """The cue table: start, end and the lines as they will be shown."""
    return [[clock(cue.start), clock(cue.end), cue.text] for cue in cues]


def showing_cues_meanwhile(job: Callable[[Callable[[list[Cue]], None]], tuple]) -> Iterator[tuple]:
    """Run `job` (given a function to show the cues it has finished) in a thread of its own, and yield
    the page's outputs: cleared, then the newest cues each time there are more, last the job's result
    (or its error, raised). The job does not depend on this generator being read to its end: where the
    page is closed or the job cancelled, it stops and cleans up on its own."""
    newest: queue.Queue = queue.Queue()
    outcome: dict = {}
    context = contextvars.copy_context()  # gr.Progress finds the page's event through it

    def run() -> None:
        try:
            outcome["result"] = context.run(job, newest.put)
        except BaseException as error:  # handed to the page below
            outcome["error"] = error
        finally:
            newest.put(None)

    threading.Thread(target=run, name="job", daemon=True).start()
    yield (gr.skip(), "", gr.Video(value=None, visible="hidden"), gr.Audio(value=None, visible="hidden"),
           *[gr.DownloadButton(visible=False) for _ in FORMATS], gr.DownloadButton(visible=False),
           gr.File(visible=False), gr.Dataframe(value=None, visible="hidden"))
    while (cues := newest.get()) is not None:
        while cues is not None and not newest.empty():
            cues = newest.get()  # cues that came meanwhile: only the newest are worth showing
        if cues is None:
            break
        yield (gr.skip(), plain_text(cues), *[gr.skip()] * (len(FORMATS) + 4),
               gr.Dataframe(value=cue_rows(cues), visible="hidden" if not cues else True))
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["result"]


def number_in_range(name: str, value, low: float, high: float) -> float:
    """`value` as a float, or gr.Error where it is no number, not finite, or outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise gr.Error(f"{name} must be a number from {low} to {high}, not {value!r}.")
    return float(value)


def free_path(folder: Path, name: str) -> Path:
    """`folder / name`, or `name (2)` and so on where a file of a batch already has that name."""
    path, number = folder / name, 1
    while path.exists():
        number += 1
        path = folder / f"{Path(name).stem} ({number}){Path(name).suffix}"
    return path


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone already
        pass


def remove_old_results(root: Path, keep_hours: float) -> None:
    """Delete result folders older than `keep_hours`; run at each job, so no timer is needed."""
    if not root.is_dir():
        return
    cutoff = time.time() - keep_hours * 3600
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def build_ui(handlers: SubtitleApp) -> gr.Blocks:
    pools = handlers.pools
    default_model = next(iter(pools))
    devices = pools[default_model].devices
    several = len(devices) > 1 and not (devices[0].startswith("cuda") and len(set(devices)) == 1)  # not one GPU's workers
    multi_label, multi_info = devices_info(devices)
    # No delete_cache: Gradio would delete every result at each restart. Results and unused uploads
    # expire by WHISPER_KEEP_HOURS instead (remove_old_results), and unused uploads go at shutdown.
    with gr.Blocks(title="whisper-for-subs") as demo:
        gr.Markdown("# whisper-for-subs\nUpload a recording; download subtitles that are right, well timed and easy to read.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Audio or video file", type="filepath", file_types=MEDIA_FILE_TYPES,
                                 elem_id="upload")
                upload.preprocess = uploaded_path
                # format=None: the recording is taken as the browser sent it (FFmpeg reads it), not
                # converted into a second file beside it.
                recording = gr.Audio(label="Or record", sources=["microphone"], type="filepath", format=None)
                link = gr.Textbox(label="Or a link", placeholder="https://… a media file, or a video page",
                                  elem_id="link")
                files = gr.File(label="Or several files, as one batch", file_count="multiple", type="filepath",
                                file_types=MEDIA_FILE_TYPES, elem_id="files")
                files.preprocess = uploaded_paths
                folder = gr.File(label="Or a folder, as one batch", file_count="directory", type="filepath",
                                 elem_id="folder")
                folder.preprocess = uploaded_media_paths
                multi_gpu = gr.Checkbox(label=multi_label, info=multi_info, value=several, interactive=several,
                                        elem_id="multi-gpu")
                several_languages = gr.Checkbox(label="Several languages", value=handlers.settings.multilingual,
                                                info="The recording changes language: each part keeps its own.",
                                                elem_id="several-languages")
                with gr.Row():
                    language = gr.Dropdown(language_choices(), label="Language", elem_id="language", min_width=240,
                                           **language_state(handlers.english_only(default_model), default_model))
                    # Wide enough that on a phone the two menus stack and a long model name fits.
                    model = gr.Dropdown(list(pools), value=default_model, label="Model", min_width=240,
                                        elem_id="model")
                allowed = handlers.translatable(default_model)
                task = gr.Radio(["transcribe", "translate"], value="transcribe", label="Task", interactive=allowed,
                                info=None if allowed else f"{default_model} cannot translate")
                formats = gr.CheckboxGroup(list(FORMATS), value=["srt"], label="Formats")
                word_highlight = gr.Checkbox(label="Word highlight (karaoke)", value=False, elem_id="word-highlight",
                                             info="ASS and WebVTT light up each word as it is spoken, and so does the player.")
                with gr.Accordion("Advanced", open=False):
                    vad_threshold = gr.Slider(*VAD_THRESHOLD_RANGE, value=VadOptions().threshold, step=0.05,
                                              label="VAD sensitivity (speech probability threshold)")
                    initial_prompt = gr.Textbox(value="", label="Initial prompt")
                    hotwords = gr.Textbox(value="", label="Hotwords")
                    line_chars = gr.Slider(*LINE_CHARS_RANGE, value=CueOptions().max_line_chars, step=1,
                                           label="Characters per line")
                    chinese_script = gr.Dropdown(list(CHINESE_SCRIPTS), value=DEFAULT_CHINESE_SCRIPT,
                                                 label="Chinese script")
                with gr.Row():
                    run = gr.Button("Transcribe", variant="primary", elem_id="run")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel", visible=False)  # while a job runs
            with gr.Column():
                # The progress shows here, where the page scrolls to; the cues below it fill in meanwhile.
                summary = gr.Markdown(label="Summary", elem_id="summary", min_height=48)
                video = gr.Video(label="Player", visible="hidden", elem_id="video")
                audio = gr.Audio(label="Player", visible="hidden", elem_id="audio")
                downloads = [gr.DownloadButton(visible=False, elem_id=f"download-{fmt}") for fmt in FORMATS]
                batch_zip = gr.DownloadButton(visible=False, elem_id="download-zip")
                batch_files = gr.File(label="Each file's subtitles", file_count="multiple", visible=False,
                                      interactive=False, elem_id="batch-files")
                cue_table = gr.Dataframe(headers=["Start", "End", "Subtitle"], label="Subtitles", interactive=False,
                                         visible="hidden", wrap=True, column_widths=["20%", "20%", "60%"],
                                         max_height=420, buttons=["copy"], elem_id="cues")
                text = gr.Textbox(label="Text", lines=8, elem_id="text", buttons=["copy"])

        inputs = [upload, recording, multi_gpu, language, task, model, formats, vad_threshold,
                  initial_prompt, hotwords, line_chars, chinese_script, link, files, folder, several_languages,
                  word_highlight]
        # On a phone the results are below the settings: bring the progress into view.
        show_cancel = run.click(lambda: gr.Button(visible=True), None, stop, api_name=False, queue=False,
                                js="() => { document.getElementById('summary').scrollIntoView({block: 'start'}); }")
        running = show_cancel.then(handlers.transcribe, inputs,
                                   [summary, text, video, audio, *downloads, batch_zip, batch_files, cue_table],
                                   api_name="transcribe", concurrency_id="transcribe", show_progress_on=[summary])
        running.then(lambda: gr.Button(visible=False), None, stop, api_name=False, queue=False)
        stop.click(handlers.cancel, None, summary, cancels=[running], api_name=False).then(
            lambda: gr.Button(visible=False), None, stop, api_name=False, queue=False)
        model.change(handlers.model_changed, [model, language], [task, language], api_name=False)
    return demo


def create_app(pools: dict[str, WorkerPool], settings: Settings) -> FastAPI:
    """The FastAPI app: the page at /, and /health for Docker's health check. Its `state.handlers`
    holds the page's handlers, whose job counter the server drains at shutdown."""
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    # Read by Gradio when the page's components are made: uploads land in the results folder.
    os.environ["GRADIO_TEMP_DIR"] = str(settings.results_dir)
    handlers = SubtitleApp(pools, settings)
    demo = build_ui(handlers)
    handlers.uploaded = demo.upload_file_set
    workers = len(next(iter(pools.values())).devices)
    # A bounded queue, and as many jobs at once as keep every worker's next batch queued.
    demo.queue(api_open=False, max_size=settings.queue_size, default_concurrency_limit=2 * workers)
    login = (settings.username, settings.password) if settings.username else None
    # With a login, strangers get no description of the server's routes (ours, nor Gradio's own).
    hidden = {"docs_url": None, "redoc_url": None, "openapi_url": None} if login else {}
    server = FastAPI(**hidden)
    server.state.handlers = handlers

    @server.get("/health")
    def health() -> JSONResponse:
        # The server only starts once every model is loaded, so answering is the signal; a draining
        # server answers 503, so that a load balancer sends no new jobs. With a login, only the status.
        if handlers.jobs.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        details = {} if login else {"models": {name: pool.model_loads for name, pool in pools.items()},
                                    "workers": {name: pool.devices for name, pool in pools.items()}}
        return JSONResponse({"status": "ok", **details})

    server.add_middleware(LoginBrake)
    # Before the page is mounted at /, which would take every path.
    api = OpenAIApi(pools, handlers.jobs, ApiSettings(
        # Gradio's own parser of the size setting, so that both doors read it the same way.
        results_dir=settings.results_dir, max_file_bytes=gradio_utils._parse_file_size(settings.max_file_size),
        batch_size=settings.batch_size, running_jobs=2 * workers, waiting_jobs=settings.queue_size,
        api_key=settings.api_key, login=login is not None, multilingual=settings.multilingual,
    ))
    server.include_router(api.router())
    app = gr.mount_gradio_app(
        server, demo, path="", auth=login, max_file_size=settings.max_file_size, app_kwargs=hidden,
        allowed_paths=[str(settings.results_dir)], enable_monitoring=False, footer_links=["api"], css=PAGE_CSS,
    )
    # Gradio accepts only its own uploads as file inputs once an app "has launched"; a mounted app
    # never does, and would otherwise copy any server path a caller names into its cache.
    demo.has_launched = True
    return app


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    configure_logging(verbose=True)  # the server's log has a line for each work unit
    pools = start_pools(settings)
    unwind_on_sigterm()  # uvicorn raises SIGTERM again once it has stopped serving
    app = create_app(pools, settings)
    try:
        log.info("serving on http://%s:%d", settings.host, settings.port)
        serve(app, settings.host, settings.port, app.state.handlers.jobs, settings.drain_seconds)
    finally:
        for pool in pools.values():
            pool.shutdown()
        app.state.handlers.remove_unused_uploads()


if __name__ == "__main__":
    main()
