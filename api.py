"""An OpenAI-compatible HTTP API, for scripts and for tools made for OpenAI's speech-to-text:

    GET  /v1/models
    POST /v1/audio/transcriptions   multipart: file, model, language, prompt, response_format,
    POST /v1/audio/translations                temperature, timestamp_granularities[]

It is a second door into the same pipeline as the page: the same worker pools, the same file size cap,
a bounded number of jobs (429 beyond it), the same drain at shutdown. Each request's upload is written
into a job folder of its own under the results folder, which is deleted once the answer is sent.
Errors come in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

import hmac
import json
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile

from audio import AudioError
from datatypes import Transcript
from dispatcher import JobCancelled, JobFailed
from parallel_transcriber import WorkerPool
from pipeline import LANGUAGES_WITHOUT_SPACES, transcribe_file
from serving import JobCounter, ServerDraining
from startup import as_sentence, check_task, job_options
from writers import render

DEFAULT_MODEL = "whisper-1"  # what OpenAI's clients send: the server's default model
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ApiSettings:
    results_dir: Path
    max_file_bytes: int | None  # None: no cap
    batch_size: int | None
    running_jobs: int  # at most this many API jobs run at once; the next `waiting_jobs` wait
    waiting_jobs: int
    api_key: str | None  # None: no key is asked for
    login: bool  # the page has a login: then the API needs a key
    multilingual: bool = False  # a request that names no language: each part's language detected


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 429: "rate_limit_error", 503: "server_error"}.get(self.status, "invalid_request_error")
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


class OpenAIApi:
    def __init__(self, pools: dict[str, WorkerPool], jobs: JobCounter, settings: ApiSettings):
        self.pools = pools
        self.jobs = jobs
        self.settings = settings
        self._running = threading.BoundedSemaphore(settings.running_jobs)
        self._admitted = 0  # running and waiting
        self._admitting = threading.Lock()

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1")
        router.add_api_route("/models", self.models, methods=["GET"])
        router.add_api_route("/audio/transcriptions", self.transcriptions, methods=["POST"])
        router.add_api_route("/audio/translations", self.translations, methods=["POST"])
        return router

    async def models(self, request: Request) -> Response:
        try:
            self._check_key(request)
        except ApiError as error:
            return error.response()
        names = [DEFAULT_MODEL, *self.pools]
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "whisper-for-subs"} for name in names]})

    async def transcriptions(self, request: Request) -> Response:
        return await self._answer(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self._answer(request, "translate")

    async def _answer(self, request: Request, task: str) -> Response:
        job_dir = self.settings.results_dir / uuid.uuid4().hex
        try:
            self._check_key(request)
            self._check_length(request)
            self._admit()  # before the upload is read: a full queue costs the client no upload
            try:
                async with request.form(max_files=1, max_fields=20) as form:
                    fields = self._fields(form, task)
                    source = await self._save(form.get("file"), job_dir)
                transcript = await anyio.to_thread.run_sync(self._transcribe, source, fields)
            finally:
                self._leave()
            return self._render(transcript, fields)
        except ApiError as error:
            return error.response()
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    def _check_key(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            if self.settings.login:
                raise ApiError(401, "This server has a login: its API needs a key (WHISPER_API_KEY).", code="invalid_api_key")
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _check_length(self, request: Request) -> None:
        cap, declared = self.settings.max_file_bytes, request.headers.get("content-length", "")
        if cap is not None and declared.isdigit() and int(declared) > cap + COPY_CHUNK:  # the form's own bytes beside the file
            raise ApiError(413, f"The file is larger than this server takes ({cap} bytes).", param="file")

    def _fields(self, form, task: str) -> dict:
        model = form.get("model") or DEFAULT_MODEL
        if model != DEFAULT_MODEL and model not in self.pools:
            raise ApiError(400, f"The model {model!r} does not exist here; see /v1/models.", param="model", code="model_not_found")
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}.", param="response_format")
        granularities = set(form.getlist("timestamp_granularities[]")) or {"segment"}
        if not granularities <= {"segment", "word"}:
            raise ApiError(400, "timestamp_granularities[] takes segment and word.", param="timestamp_granularities[]")
        try:
            temperature = float(form.get("temperature") or 0)
        except ValueError:
            temperature = -1.0
        if not 0 <= temperature <= 1:
            raise ApiError(400, "temperature must be a number from 0 to 1.", param="temperature")
        pool = self.pools[next(iter(self.pools)) if model == DEFAULT_MODEL else model]
        try:
            check_task(pool, task)
        except ValueError as error:
            raise ApiError(400, as_sentence(str(error)), param="model") from None
        language = form.get("language") or "auto"
        try:
            options = job_options(pool.spec, language, task, form.get("prompt"), batch_size=self.settings.batch_size,
                                  multilingual=self.settings.multilingual and language == "auto" and pool.multilingual)
        except ValueError as error:  # an unknown language, or a prompt too long
            raise ApiError(400, as_sentence(str(error)), param="prompt" if "prompt" in str(error) else "language") from None
        return {"pool": pool, "options": options, "format": response_format, "words": "word" in granularities, "task": task}

    async def _save(self, upload, job_dir: Path) -> Path:
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "Send the audio as the multipart field 'file'.", param="file")
        job_dir.mkdir(parents=True)
        target = job_dir / (Path(upload.filename or "").name or "audio")
        written, cap = 0, self.settings.max_file_bytes
        with open(target, "wb") as file:
            while chunk := await upload.read(COPY_CHUNK):
                written += len(chunk)
                if cap is not None and written > cap:
                    raise ApiError(413, f"The file is larger than this server takes ({cap} bytes).", param="file")
                file.write(chunk)
        return target

    def _admit(self) -> None:
        with self._admitting:
            if self._admitted >= self.settings.running_jobs + self.settings.waiting_jobs:
                raise ApiError(429, "Too many jobs are waiting: try again in a moment.", code="queue_full")
            self._admitted += 1

    def _leave(self) -> None:
        with self._admitting:
            self._admitted -= 1

    def _transcribe(self, source: Path, fields: dict) -> Transcript:
        try:
            with self.jobs.job(), self._running:
                return transcribe_file(source, fields["pool"], fields["options"])
        except ServerDraining:
            raise ApiError(503, "The server is restarting and takes no new jobs: try again in a minute.") from None
        except AudioError as error:
            raise ApiError(400, f"This file cannot be transcribed: {error.args[0].split(': ', 1)[-1]}.", param="file") from None
        except (JobFailed, JobCancelled) as error:
            raise ApiError(500, str(error)) from None

    @staticmethod
    def _render(transcript: Transcript, fields: dict) -> Response:
        fmt = fields["format"]
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(render(transcript, fmt))
        joiner = "" if transcript.language in LANGUAGES_WITHOUT_SPACES else " "
        text = joiner.join(segment.text for segment in transcript.segments)
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        if fmt == "json":
            return JSONResponse({"text": text})
        document = {
            "task": fields["task"], "language": transcript.language, "duration": round(transcript.duration, 3), "text": text,
            "segments": [
                {"id": index, "seek": 0, "start": segment.start, "end": segment.end, "text": segment.text, "tokens": [],
                 "temperature": 0.0, "avg_logprob": segment.avg_logprob, "compression_ratio": 0.0,
                 "no_speech_prob": segment.no_speech_prob}
                for index, segment in enumerate(transcript.segments)
            ],
        }
        if fields["words"]:
            document["words"] = [{"word": word.text.strip(), "start": word.start, "end": word.end}
                                 for segment in transcript.segments for word in segment.words]
        return Response(json.dumps(document, ensure_ascii=False), media_type="application/json")
