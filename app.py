"""The web app: the page (`page.py`), the APIs (`api.py`, `asr_api.py`) and the watched folder (`watch.py`),
all doors into one job layer (`jobs.py`), served with the limits and the drain of `serving.py`.

    python app.py [--port 7860] [--model large-v3-turbo] [--devices auto] ...

Every setting has a flag and an environment variable (WHISPER_MODEL, WHISPER_DEVICES, ...): see
`settings.py` and the README. The worker pools load their models before anything is served and live
until the server stops.

Gradio's upload folder is the results folder (`results.py`): an upload arrives in a folder of its own,
its job moves it into the job's folder, and the job's subtitles are written beside it, so that the
player and the downloads are served from where they lie and nothing of a job is left anywhere else.
"""

import argparse
import logging
import os
import secrets
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from api import OpenAIApi
from asr_api import AsrApi
from http_jobs import ApiAccess
from jobs import JobRequest, JobService
from links import AddressPolicy, fetch_media
from page import build_ui
from page_assets import CSS, HEAD
from page_events import PageEvents
from page_jobs import PageJobs
from public_paths import PublicPaths
from results import remove_leftovers
from serving import BodyLimits, LoginBrake, serve
from settings import APP, Config, add_arguments, config_from
from startup import configure_logging, start_pools, unwind_on_sigterm
from uploads import UPLOAD_ROUTE, UploadDesk
from watch import start_watching
from worker_pool import WorkerPool

log = logging.getLogger("whisper_for_subs")
# Room beside the largest file in a request's body: the form's other fields and its boundaries.
FORM_OVERHEAD_BYTES = 1 << 20


def parse_settings(argv: list[str] | None = None) -> Config:
    """The app's settings from its flags and the environment (see settings.SETTINGS)."""
    parser = argparse.ArgumentParser(description="whisper-for-subs web app")
    add_arguments(parser, APP)
    config = config_from(parser.parse_args(argv), parser)
    if config.watch is not None and not config.watch.is_dir():
        parser.error(f"WHISPER_WATCH: {config.watch} is not a folder")
    return config


def browser_secret(results_dir: Path) -> str:
    """The key the page's browser storage is kept with, the same across restarts (so that a browser's
    jobs are still its own after one): made once, kept in the results folder."""
    path = results_dir / ".browser-secret"
    if not path.is_file():
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(pools: dict[str, WorkerPool], config: Config) -> FastAPI:
    """The FastAPI app: the page at /, the APIs, and /health for Docker's health check. Its `state.service`
    is the job layer, whose job counter the server drains at shutdown."""
    results_dir = config.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(results_dir)
    # Read by Gradio when the page's components are made: uploads land in the results folder.
    os.environ["GRADIO_TEMP_DIR"] = str(results_dir)
    workers = len(next(iter(pools.values())).devices)
    service = JobService(pools, config.batch_size, running=2 * workers, waiting=config.queue_size)
    policy = AddressPolicy(allow_private=config.allow_private_urls)
    jobs = PageJobs(service, results_dir, lambda url, folder: fetch_media(url, folder, config.max_file_size, policy))
    uploads = UploadDesk(results_dir, config.max_file_size)
    events = PageEvents(service, jobs, uploads, results_dir, config.keep_hours)
    demo = build_ui(events, pools, config.multilingual, browser_secret(results_dir))
    # Pages following their jobs wait most of the time: many may. The job layer bounds the work itself (and
    # says so in words): Gradio's own queue only holds events for a moment.
    demo.queue(api_open=False, max_size=max(64, 4 * config.queue_size), default_concurrency_limit=64)
    login = config.login
    # With a login, strangers get no description of the server's routes (ours, nor Gradio's own).
    hidden = {"docs_url": None, "redoc_url": None, "openapi_url": None} if login else {}
    server = FastAPI(**hidden)
    server.state.service = service
    server.state.uploads = uploads

    @server.get("/health")
    def health() -> JSONResponse:
        # The server only starts once every model is loaded, so answering is the signal; a draining
        # server answers 503, so that a load balancer sends no new jobs. With a login, only the status.
        if service.counter.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        details = (
            {}
            if login
            else {
                "models": {name: pool.model_loads for name, pool in pools.items()},
                "workers": {name: pool.devices for name, pool in pools.items()},
            }
        )
        return JSONResponse({"status": "ok", **details})

    # Before the page is mounted at /, which would take every path.
    server.add_api_route(UPLOAD_ROUTE, uploads.receive, methods=["POST"], include_in_schema=False)
    access = ApiAccess(config.api_key, login is not None)
    server.include_router(OpenAIApi(service, access, results_dir, config.max_file_size, config.multilingual).router())
    server.include_router(AsrApi(service, access, results_dir, config.max_file_size).router())
    server.add_middleware(LoginBrake)
    app = gr.mount_gradio_app(
        server,
        demo,
        path="",
        auth=login,
        max_file_size=config.max_file_size,
        app_kwargs=hidden,
        allowed_paths=[str(results_dir)],
        enable_monitoring=False,
        footer_links=["api"],
        css=CSS,
        head=HEAD,
        # Errors of our own (gr.Error) say what went wrong; any other, Gradio's own included, would show
        # the server's inside (its paths, its code): those answer "Error" only, and go to the log.
        show_error=False,
    )
    # Gradio accepts only its own uploads as file inputs once an app "has launched"; a mounted app
    # never does, and would otherwise copy any server path a caller names into its cache.
    demo.has_launched = True
    return app


def main(argv: list[str] | None = None) -> None:
    """Start the pools, then serve until SIGTERM; stop the workers on the way out."""
    config = parse_settings(argv)
    configure_logging(verbose=True)  # the server's log has a line for each work unit
    pools = start_pools(config)
    unwind_on_sigterm()  # uvicorn raises SIGTERM again once it has stopped serving
    app = create_app(pools, config)
    service = app.state.service
    if config.watch is not None:
        options = service.check(JobRequest(formats=config.watch_formats, multilingual=config.multilingual))
        start_watching(config.watch, service, options)
    try:
        log.info("serving on http://%s:%d", config.host, config.port)
        public = PublicPaths(app, str(config.results_dir))
        limited = BodyLimits(public, config.max_file_size + FORM_OVERHEAD_BYTES, config.upload_idle_seconds)
        serve(limited, config.host, config.port, service.counter, config.drain_seconds, config.trusted_proxies)
    finally:
        for pool in pools.values():
            pool.shutdown()
        app.state.uploads.forget_waiting()


if __name__ == "__main__":
    main()
