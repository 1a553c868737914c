"""The web app: upload a recording, watch it being transcribed, play it with subtitles, download them.

    python app.py [--port 7860] [--model large-v3-turbo] [--devices auto] ...

Every flag has an environment variable (WHISPER_MODEL, WHISPER_DEVICES, ...), listed in the README.
The worker pools load their models before the page is served and live until the server stops.
"""

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
# faster-whisper keeps its list of language codes private; it is the list the model accepts.
from faster_whisper.tokenizer import _LANGUAGE_CODES

from audio import AudioError, has_picture
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from parallel_transcriber import JobCancelled, JobFailed, ModelSpec, ParallelTranscriber, Progress, parse_devices
from pipeline import Transcript, transcribe_file
from subtitles import CueOptions
from transcriber import TranscribeOptions, batch_size, can_translate, model_label, resolve_model
from vad_splitter import VadOptions
from writers import FORMATS, write

log = logging.getLogger("whisper_for_subs")


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    models: list[str]  # the first is the default
    devices: str
    compute_type: str | None
    batch_size: int | None  # None: what fits each device
    max_file_size: str
    username: str | None
    password: str | None
    results_dir: Path
    keep_hours: float
    queue_size: int


def parse_settings(argv: list[str] | None = None) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="whisper-for-subs web app")
    parser.add_argument("--host", default=env("WHISPER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("WHISPER_PORT", "7860")))
    parser.add_argument("--model", default=env("WHISPER_MODEL", ""),
                        help="model, or several separated by commas (the first is the default)")
    parser.add_argument("--devices", default=env("WHISPER_DEVICES", "auto"))
    parser.add_argument("--compute-type", default=env("WHISPER_COMPUTE_TYPE") or None)
    parser.add_argument("--batch-size", type=batch_size, default=batch_size(env("WHISPER_BATCH_SIZE", "auto")))
    parser.add_argument("--max-file-size", default=env("WHISPER_MAX_FILE_SIZE", "2gb"))
    parser.add_argument("--username", default=env("WHISPER_USERNAME") or None)
    parser.add_argument("--password", default=env("WHISPER_PASSWORD") or None)
    parser.add_argument("--results-dir", default=env("WHISPER_RESULTS_DIR", "results"))
    parser.add_argument("--keep-hours", type=float, default=float(env("WHISPER_KEEP_HOURS", "24")))
    parser.add_argument("--queue-size", type=int, default=int(env("WHISPER_QUEUE_SIZE", "32")))
    args = parser.parse_args(argv)
    if bool(args.username) != bool(args.password):
        parser.error("give both a username and a password, or neither")
    models = [name.strip() for name in args.model.split(",") if name.strip()] or [model_label(None)]
    return Settings(
        host=args.host, port=args.port, models=models, devices=args.devices, compute_type=args.compute_type,
        batch_size=args.batch_size, max_file_size=args.max_file_size, username=args.username,
        password=args.password, results_dir=Path(args.results_dir).resolve(), keep_hours=args.keep_hours,
        queue_size=args.queue_size,
    )


def start_pools(settings: Settings) -> dict[str, ParallelTranscriber]:
    """One worker pool per configured model, each loaded on every device before anything is served."""
    devices = parse_devices(settings.devices)
    pools = {}
    for name in settings.models:
        path = resolve_model(None if name == model_label(None) else name)
        pools[name] = ParallelTranscriber(ModelSpec(path, name=name, compute_type=settings.compute_type), devices)
    return pools


class SubtitleApp:
    """The page's event handlers, over the same pipeline as the command line."""

    def __init__(self, pools: dict[str, ParallelTranscriber], settings: Settings):
        self.pools = pools
        self.settings = settings
        self.cancels: dict[str, threading.Event] = {}  # browser session -> its running job's cancel flag

    def translatable(self, model: str) -> bool:
        return can_translate(model, self.pools[model].multilingual)

    def transcribe(
        self, upload, recording, multi_gpu, language, task, model, formats, vad_threshold,
        initial_prompt, hotwords, line_chars, chinese_script, request: gr.Request, progress=gr.Progress(),
    ):
        source = upload or recording
        if not source:
            raise gr.Error("Choose an audio or video file, or record something, first.")
        if task == "translate" and not self.translatable(model):
            raise gr.Error(f"The model {model} cannot translate. Choose another model, or Transcribe.")
        pool = self.pools[model]
        cancel = self.cancels[request.session_hash] = threading.Event()
        remove_old_results(self.settings.results_dir, self.settings.keep_hours)

        def show(update: Progress) -> None:
            working = ", ".join(update.busy_devices) or "waiting for a worker"
            progress((round(update.done_s), round(update.total_s)), desc=f"Transcribing on {working}", unit="s of speech")

        progress(0, desc="Decoding and finding speech")
        options = TranscribeOptions(
            language=None if language == "auto" else language, task=task,
            initial_prompt=initial_prompt or None, hotwords=hotwords or None, batch_size=self.settings.batch_size,
        )
        try:
            transcript = transcribe_file(
                source, pool, options, VadOptions(threshold=vad_threshold), max_line_chars=int(line_chars),
                chinese_script=chinese_script, on_progress=show, all_workers=multi_gpu, cancel=cancel,
            )
        except AudioError as error:
            raise gr.Error(f"This file cannot be transcribed: {error.args[0].split(': ', 1)[-1]}") from None
        except JobCancelled:
            raise gr.Error("Cancelled.") from None
        except JobFailed as error:
            raise gr.Error(str(error)) from None
        finally:
            self.cancels.pop(request.session_hash, None)
        return self._show_result(source, transcript, formats)

    def _show_result(self, source: str, transcript: Transcript, formats: list[str]):
        job_dir = self.settings.results_dir / uuid.uuid4().hex  # a name nobody else can guess
        job_dir.mkdir(parents=True)
        stem = Path(source).stem
        files = {fmt: write(transcript, job_dir / f"{stem}.{fmt}", fmt) for fmt in formats or ["srt"]}
        player_subtitles = files.get("vtt") or files.get("srt") or write(transcript, job_dir / "player.vtt", "vtt")
        summary = (
            f"**{transcript.duration:.1f} s** of audio ({transcript.language}) in **{transcript.wall_seconds:.1f} s**, "
            f"**{transcript.realtime_factor:.1f}x realtime** on {transcript.workers} worker(s); "
            f"{len(transcript.cues)} subtitles."
        )
        text = "\n".join(cue.text.replace("\n", " ") for cue in transcript.cues)
        picture = has_picture(source)
        downloads = [
            gr.DownloadButton(f"Download {fmt.upper()}", value=str(files[fmt]), visible=True) if fmt in files
            else gr.DownloadButton(visible=False)
            for fmt in FORMATS
        ]
        return (
            summary,
            text,
            gr.Video(value=source, subtitles=str(player_subtitles), visible=True) if picture else gr.Video(visible=False),
            gr.Audio(value=source, subtitles=str(player_subtitles), visible=True) if not picture else gr.Audio(visible=False),
            *downloads,
        )

    def cancel(self, request: gr.Request) -> str:
        flag = self.cancels.get(request.session_hash)
        if flag is not None:
            flag.set()
        return "Cancelled."

    def model_changed(self, model: str):
        allowed = self.translatable(model)
        return gr.Radio(interactive=allowed, value="transcribe",
                        info=None if allowed else f"{model} cannot translate")


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
    several = len(devices) > 1
    kind = "GPUs" if devices[0].startswith("cuda") else "workers"
    languages = ["auto"] + sorted(_LANGUAGE_CODES)
    keep_seconds = int(handlers.settings.keep_hours * 3600)

    with gr.Blocks(title="whisper-for-subs", delete_cache=(3600, keep_seconds)) as demo:
        gr.Markdown("# whisper-for-subs\nUpload a recording; download subtitles that are right, well timed and easy to read.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Audio or video file", type="filepath", elem_id="upload")
                recording = gr.Audio(label="Or record", sources=["microphone"], type="filepath")
                multi_gpu = gr.Checkbox(
                    label=f"Multi-GPU ({len(devices)} {kind})", value=several, interactive=several,
                    info=None if several else "This server has one device.", elem_id="multi-gpu",
                )
                with gr.Row():
                    language = gr.Dropdown(languages, value="auto", label="Language")
                    model = gr.Dropdown(list(pools), value=default_model, label="Model")
                allowed = handlers.translatable(default_model)
                task = gr.Radio(["transcribe", "translate"], value="transcribe", label="Task", interactive=allowed,
                                info=None if allowed else f"{default_model} cannot translate")
                formats = gr.CheckboxGroup(list(FORMATS), value=["srt"], label="Formats")
                with gr.Accordion("Advanced", open=False):
                    vad_threshold = gr.Slider(0.2, 0.8, value=VadOptions().threshold, step=0.05,
                                              label="VAD sensitivity (speech probability threshold)")
                    initial_prompt = gr.Textbox(value="", label="Initial prompt")
                    hotwords = gr.Textbox(value="", label="Hotwords")
                    line_chars = gr.Slider(16, 60, value=CueOptions().max_line_chars, step=1, label="Characters per line")
                    chinese_script = gr.Dropdown(list(CHINESE_SCRIPTS), value=DEFAULT_CHINESE_SCRIPT,
                                                 label="Chinese script")
                with gr.Row():
                    run = gr.Button("Transcribe", variant="primary", elem_id="run")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column():
                summary = gr.Markdown(label="Summary", elem_id="summary")
                text = gr.Textbox(label="Subtitles", lines=12, elem_id="text")
                video = gr.Video(label="Player", visible=False)
                audio = gr.Audio(label="Player", visible=False)
                downloads = [gr.DownloadButton(visible=False, elem_id=f"download-{fmt}") for fmt in FORMATS]

        inputs = [upload, recording, multi_gpu, language, task, model, formats, vad_threshold,
                  initial_prompt, hotwords, line_chars, chinese_script]
        running = run.click(handlers.transcribe, inputs, [summary, text, video, audio, *downloads],
                            api_name="transcribe", concurrency_id="transcribe")
        stop.click(handlers.cancel, None, summary, cancels=[running], api_name=False)
        model.change(handlers.model_changed, model, task, api_name=False)
    return demo


def create_app(pools: dict[str, ParallelTranscriber], settings: Settings) -> FastAPI:
    """The FastAPI app: the page at /, and /health for Docker's health check."""
    handlers = SubtitleApp(pools, settings)
    demo = build_ui(handlers)
    workers = len(next(iter(pools.values())).devices)
    # A bounded queue, and as many jobs at once as keep every worker's next batch queued.
    demo.queue(api_open=False, max_size=settings.queue_size, default_concurrency_limit=2 * workers)
    server = FastAPI()

    @server.get("/health")
    def health() -> dict:
        # The server only starts once every model is loaded, so answering is the signal.
        return {"status": "ok", "models": {name: pool.model_loads for name, pool in pools.items()}}

    auth = (settings.username, settings.password) if settings.username else None
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    return gr.mount_gradio_app(
        server, demo, path="", auth=auth, max_file_size=settings.max_file_size,
        allowed_paths=[str(settings.results_dir)], enable_monitoring=False, footer_links=["api"],
    )


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    pools = start_pools(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that unwind through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        log.info("serving on http://%s:%d", settings.host, settings.port)
        uvicorn.run(create_app(pools, settings), host=settings.host, port=settings.port, log_level="warning")
    finally:
        for pool in pools.values():
            pool.shutdown()


if __name__ == "__main__":
    main()
