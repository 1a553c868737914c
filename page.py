"""The page's layout: the form (the input as tabs, the settings, Transcribe), and the job's side (its status,
the player with its captions, the downloads, the cues, the text), wired to `page_events.PageEvents`.

The page keeps a random id in the browser's storage: its jobs are listed under "Recent jobs", and a
job's address (`?job=ID`, set while it runs) shows it again after a reload, in this browser only.
"""

from pathlib import Path

import gradio as gr

import messages
from audio import MEDIA_SUFFIXES, is_media_name
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from jobs import LINE_CHARS_RANGE, VAD_THRESHOLD_RANGE
from languages import language_choices
from models import can_translate
from page_events import PageEvents, PageForm
from page_views import RESULTS
from subtitles import CueOptions
from vad_splitter import VadOptions
from worker_pool import WorkerPool
from writers import FORMATS

# What the file picker offers: audio and video by their MIME types, and those some MIME tables do not know.
MEDIA_FILE_TYPES = ["audio", "video", *MEDIA_SUFFIXES]
HINT = (
    '<div class="hint">Choose a recording (or record, or paste a link, or choose several files), '
    "then Transcribe: its progress, a player and the subtitles show here.</div>"
)


def language_state(english_only: bool, model: str, value: str = "auto") -> dict:
    """The language menu's state for `model`: fixed to English, saying why, for an English-only model."""
    if english_only:
        return {"value": "en", "interactive": False, "info": f"{model} knows only English"}
    return {"value": value, "interactive": True, "info": None}


def devices_info(devices: list[str]) -> tuple[str, str]:
    """The checkbox that spreads a job over every worker: its label and what it says it does, with the
    devices' names. "Multi-GPU" where the workers are GPUs; on CPU workers it says what it uses."""
    if " " in devices[0]:  # Ray actors, named after their node: "node-2 cuda:1"
        return "Multi-GPU", f"Use all {len(devices)} workers of the cluster: {', '.join(devices)}."
    if devices[0].startswith("cuda"):
        gpus = list(dict.fromkeys(devices))  # two workers may share a GPU
        if len(gpus) == 1:
            shared = f", {len(devices)} workers sharing it" if len(devices) > 1 else ""
            return "Multi-GPU", f"This server has one GPU ({gpus[0]}{shared})."
        return "Multi-GPU", f"Use all {len(gpus)} GPUs: {', '.join(gpus)}."
    if len(devices) == 1:
        return "All workers", f"This server has one worker ({devices[0]})."
    both = "both" if len(devices) == 2 else f"all {len(devices)}"
    names = ", ".join(f"cpu #{number}" for number in range(1, len(devices) + 1))
    return "All CPU workers", f"No GPU here: {both} CPU workers ({names}); without it, one."


def uploaded_path(payload) -> str | None:
    """The upload input's preprocessing: the uploaded file's path, if it is named as audio or video.
    (gr.File's own, in Gradio 6.31, also leaves an empty temporary file in the upload folder each time.
    It is replaced on the one input rather than in a subclass, for which Gradio would write a .pyi file
    beside this module.)"""
    if payload is None:
        return None
    if not is_media_name(payload.path):
        name = payload.orig_name or Path(payload.path).name
        raise gr.Error(messages.as_sentence(messages.not_media_name(name)))
    return payload.path


def uploaded_paths(payload) -> list[str]:
    """The several-files input's preprocessing: each file's path, each checked as `uploaded_path` does."""
    return [uploaded_path(item) for item in payload.root] if payload is not None else []


def uploaded_media_paths(payload) -> list[str]:
    """The folder input's preprocessing: the paths of the folder's audio and video files (a folder holds
    other files too: pictures, notes), in name order."""
    if payload is None:
        return []
    return sorted(item.path for item in payload.root if is_media_name(item.path))


def build_ui(
    events: PageEvents, pools: dict[str, WorkerPool], several_languages: bool, browser_secret: str
) -> gr.Blocks:
    """The page, wired to `events`."""
    default_model = next(iter(pools))
    devices = pools[default_model].devices
    several = len(devices) > 1 and not (
        devices[0].startswith("cuda") and len(set(devices)) == 1
    )  # not one GPU's workers
    multi_label, multi_info = devices_info(devices)
    english_only = not pools[default_model].multilingual
    translatable = can_translate(default_model, pools[default_model].multilingual)
    # No delete_cache: Gradio would delete every result at each restart. Results expire by
    # WHISPER_KEEP_HOURS instead (results.remove_old), and unused uploads go at shutdown.
    with gr.Blocks(title="whisper-for-subs") as demo:
        browser = gr.BrowserState(None, storage_key="whisper-for-subs-browser", secret=browser_secret)
        tab = gr.State("file")
        gr.HTML(
            "<h1>whisper-for-subs</h1><p>Subtitles that are right, well timed and easy to read.</p>", elem_id="title"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=320):
                with gr.Tabs(elem_id="inputs"):
                    with gr.Tab("File", id="file", elem_id="tab-file") as file_tab:
                        upload = gr.File(
                            label="Audio or video file",
                            type="filepath",
                            file_types=MEDIA_FILE_TYPES,
                            elem_id="upload",
                            height=120,
                        )
                        upload.preprocess = uploaded_path
                    with gr.Tab("Record", id="record", elem_id="tab-record") as record_tab:
                        # format=None: the recording is taken as the browser sent it (FFmpeg reads it), not
                        # converted into a second file beside it.
                        recording = gr.Audio(
                            label="Record", sources=["microphone"], type="filepath", format=None, elem_id="recording"
                        )
                    with gr.Tab("Link", id="link", elem_id="tab-link") as link_tab:
                        link = gr.Textbox(
                            value="",
                            label="Link",
                            placeholder="https://… a media file, or a video page",
                            elem_id="link",
                        )
                    with gr.Tab("Several files", id="several", elem_id="tab-several") as several_tab:
                        files = gr.File(
                            label="Several files, as one batch",
                            file_count="multiple",
                            type="filepath",
                            file_types=MEDIA_FILE_TYPES,
                            elem_id="files",
                            height=120,
                        )
                        files.preprocess = uploaded_paths
                        folder = gr.File(
                            label="Or a folder", file_count="directory", type="filepath", elem_id="folder", height=80
                        )
                        folder.preprocess = uploaded_media_paths
                with gr.Row():
                    language = gr.Dropdown(
                        language_choices(),
                        label="Language",
                        elem_id="language",
                        min_width=240,
                        **language_state(english_only, default_model),
                    )
                    # Wide enough that on a phone the two menus stack and a long model name fits.
                    model = gr.Dropdown(list(pools), value=default_model, label="Model", min_width=240, elem_id="model")
                with gr.Row():
                    task = gr.Radio(
                        ["transcribe", "translate"],
                        value="transcribe",
                        label="Task",
                        interactive=translatable,
                        info=None if translatable else f"{default_model} cannot translate",
                        elem_id="task",
                    )
                    formats = gr.CheckboxGroup(list(FORMATS), value=["srt"], label="Formats", elem_id="formats")
                with gr.Row():
                    multi_gpu = gr.Checkbox(
                        label=multi_label, info=multi_info, value=several, interactive=several, elem_id="multi-gpu"
                    )
                    several_languages_box = gr.Checkbox(
                        label="Several languages",
                        value=several_languages,
                        info="Each part keeps its own language.",
                        elem_id="several-languages",
                    )
                    word_highlight = gr.Checkbox(
                        label="Word highlight",
                        value=False,
                        elem_id="word-highlight",
                        info="Karaoke: each word lit as it is spoken.",
                    )
                with gr.Accordion("Advanced", open=False):
                    vad_threshold = gr.Slider(
                        *VAD_THRESHOLD_RANGE,
                        value=VadOptions().threshold,
                        step=0.05,
                        label="VAD sensitivity (speech probability threshold)",
                    )
                    initial_prompt = gr.Textbox(value="", label="Initial prompt")
                    hotwords = gr.Textbox(value="", label="Hotwords")
                    line_chars = gr.Slider(
                        *LINE_CHARS_RANGE, value=CueOptions().max_line_chars, step=1, label="Characters per line"
                    )
                    chinese_script = gr.Dropdown(
                        list(CHINESE_SCRIPTS), value=DEFAULT_CHINESE_SCRIPT, label="Chinese script"
                    )
                with gr.Row():
                    run = gr.Button("Transcribe", variant="primary", elem_id="run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", visible=False)  # while a job runs
                    again = gr.Button("Run again", elem_id="again", visible=False)  # an interrupted job
                recent = gr.HTML(elem_id="recent")
            with gr.Column(scale=6, min_width=320):
                # What happens, what went wrong, or the summary: here, where the page scrolls to, until the next action.
                status = gr.HTML(HINT, elem_id="status", min_height=48)
                job = gr.Textbox(visible=False, elem_id="job")
                video = gr.Video(label="Player", visible="hidden", elem_id="video")
                audio = gr.Audio(label="Player", visible="hidden", elem_id="audio")
                with gr.Row():
                    downloads = [gr.DownloadButton(visible=False, elem_id=f"download-{fmt}") for fmt in FORMATS]
                    archive = gr.DownloadButton(visible=False, elem_id="download-zip")
                batch_files = gr.File(
                    label="Each file's subtitles",
                    file_count="multiple",
                    visible=False,
                    interactive=False,
                    elem_id="batch-files",
                )
                # The cues: live while the job runs, to edit once it has ended.
                cues = gr.HTML("", elem_id="cues", visible="hidden")
                with gr.Row():
                    save = gr.Button("Save edits", variant="primary", elem_id="save", visible=False)
                    revert = gr.Button("Revert edits", elem_id="revert", visible=False)
                    mux = gr.Button("Video with subtitles", elem_id="mux", visible=False)
                with gr.Row():
                    download_mkv = gr.DownloadButton(visible=False, elem_id="download-mkv")
                    download_mp4 = gr.DownloadButton(visible=False, elem_id="download-mp4")
                edits = gr.JSON(visible="hidden")  # what Save sends: the editor's cues, collected in the page
                text = gr.Textbox(label="Text", lines=8, elem_id="text", buttons=["copy"], visible="hidden")
        # The scripting API's outputs (gradio_client): not shown on the page.
        api_outputs = [
            gr.Textbox(label="summary", visible=False),
            gr.Textbox(label="text", visible=False),
            gr.File(label="files", file_count="multiple", visible=False),
            gr.JSON(label="cues", visible=False),
            gr.Textbox(label="job", visible=False),
        ]
        api_run = gr.Button(visible=False)

        named = {
            "status": status,
            "job": job,
            "video": video,
            "audio": audio,
            "archive": archive,
            "batch_files": batch_files,
            "cues": cues,
            "save": save,
            "revert": revert,
            "mux": mux,
            "download_mkv": download_mkv,
            "download_mp4": download_mp4,
            "text": text,
            "cancel": cancel,
            "again": again,
            **{f"download_{fmt}": button for fmt, button in zip(FORMATS, downloads)},
        }
        results = [browser, recent, *(named[name] for name in RESULTS)]
        settings = {
            "model": model,
            "language": language,
            "task": task,
            "formats": formats,
            "all_workers": multi_gpu,
            "several_languages": several_languages_box,
            "word_highlight": word_highlight,
            "vad_threshold": vad_threshold,
            "initial_prompt": initial_prompt,
            "hotwords": hotwords,
            "line_chars": line_chars,
            "chinese_script": chinese_script,
        }
        form = {
            "tab": tab,
            "upload": upload,
            "recording": recording,
            "link": link,
            "files": files,
            "folder": folder,
            **settings,
            "browser": browser,
        }

        def transcribe(request: gr.Request, *values):
            fields = dict(zip(form, values))
            fields["files"] = (fields["files"] or []) + (fields.pop("folder") or [])
            owner = fields.pop("browser")
            yield from events.transcribe(PageForm(**fields), owner, request)

        def transcribe_for_script(
            upload: str | None = None,
            recording: str | None = None,
            link: str | None = None,
            files: list[str] | None = None,
            model: str = default_model,
            language: str = "auto",
            task: str = "transcribe",
            formats: list[str] | None = None,
            multi_gpu: bool = several,
            several_languages: bool = several_languages,
            word_highlight: bool = False,
            vad_threshold: float = VadOptions().threshold,
            initial_prompt: str = "",
            hotwords: str = "",
            line_chars: float = CueOptions().max_line_chars,
            chinese_script: str = DEFAULT_CHINESE_SCRIPT,
            request: gr.Request = None,
        ):
            chosen = "link" if link else "several" if files else "record" if recording and not upload else "file"
            yield from events.transcribe_for_script(
                PageForm(
                    chosen,
                    upload,
                    recording,
                    link or "",
                    files or [],
                    model,
                    language,
                    task,
                    formats or ["srt"],
                    multi_gpu,
                    several_languages,
                    word_highlight,
                    vad_threshold,
                    initial_prompt,
                    hotwords,
                    line_chars,
                    chinese_script,
                ),
                request,
            )

        for chosen, tab_item in (
            ("file", file_tab),
            ("record", record_tab),
            ("link", link_tab),
            ("several", several_tab),
        ):
            tab_item.select(lambda chosen=chosen: chosen, None, tab, api_name=False, queue=False)
        loading = demo.load(events.load, browser, results, api_name=False, show_progress="hidden")
        # On a phone the status is below the form: bring it into view.
        running = run.click(
            transcribe,
            list(form.values()),
            results,
            api_name=False,
            show_progress="hidden",
            cancels=[loading],
            concurrency_id="jobs",
            js="(...values) => { document.getElementById('status').scrollIntoView({block: 'start'}); return values; }",
        )
        cancel.click(events.cancel, [job, browser], None, api_name=False, queue=False)
        again.click(
            events.run_again,
            [job, browser],
            results,
            api_name=False,
            show_progress="hidden",
            cancels=[loading, running],
            concurrency_id="jobs",
        )
        job.change(None, job, None, js="(id) => { window.whisperForSubs.showJob(id); }", api_name=False, queue=False)
        views = [named[name] for name in RESULTS]
        save.click(
            events.save_edits,
            [job, browser, edits],
            views,
            api_name=False,
            show_progress="hidden",
            js="(job, browser, edits) => [job, browser, window.whisperForSubs.edits()]",
        )
        revert.click(events.revert, [job, browser], views, api_name=False, show_progress="hidden")
        mux.click(events.mux, [job, browser], views, api_name=False, show_progress="hidden")

        def save_cues(job: str, cues: list, request: gr.Request = None) -> tuple[str, list[str]]:
            return events.save_for_script(job, cues, request)

        gr.Button(visible=False).click(
            save_cues,
            [gr.Textbox(label="job", visible=False), gr.JSON(label="cues", visible=False)],
            [gr.Textbox(label="summary", visible=False), gr.File(label="files", file_count="multiple", visible=False)],
            api_name="save_cues",
        )
        api_run.click(
            transcribe_for_script,
            [
                upload,
                recording,
                link,
                files,
                model,
                language,
                task,
                formats,
                multi_gpu,
                several_languages_box,
                word_highlight,
                vad_threshold,
                initial_prompt,
                hotwords,
                line_chars,
                chinese_script,
            ],
            api_outputs,
            api_name="transcribe",
            concurrency_id="jobs",
        )

        def model_changed(chosen: str, current_language: str):
            allowed = can_translate(chosen, pools[chosen].multilingual)
            return (
                gr.Radio(
                    interactive=allowed, value="transcribe", info=None if allowed else f"{chosen} cannot translate"
                ),
                gr.Dropdown(**language_state(not pools[chosen].multilingual, chosen, current_language)),
            )

        model.change(model_changed, [model, language], [task, language], api_name=False)
    return demo
