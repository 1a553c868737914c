"""An OpenAI-compatible HTTP API, for scripts and for tools made for OpenAI's speech-to-text:

    GET  /v1/models
    POST /v1/audio/transcriptions   multipart: file, model, language, prompt, response_format,
    POST /v1/audio/translations                temperature, timestamp_granularities[]

A door into the job layer (`jobs.py`): the same worker pools, limits and drain as the page. Each request's
upload is written into a job folder of its own, which is deleted once the answer is sent; a client that
goes away stops its job. Every error comes in OpenAI's shape, {"error": {"message", "type", "param",
"code"}}, and short.
"""

import json
import shutil
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

import messages
from datatypes import Transcript
from http_jobs import ApiAccess, check_key, run_while_connected, save_upload
from jobs import JobRequest, JobService
from results import new_job_folder
from writers import plain_text, render

DEFAULT_MODEL = "whisper-1"  # what OpenAI's clients send: the server's default model
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MAX_FIELD_CHARS = 64  # an echoed value is cut to this in an error


def error_response(error: messages.UserError) -> JSONResponse:
    """A UserError in OpenAI's shape."""
    kind = {401: "authentication_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}
    body = {
        "message": error.sentence[:500],
        "type": kind.get(error.status, "invalid_request_error"),
        "param": error.param,
        "code": error.code,
    }
    return JSONResponse({"error": body}, status_code=error.status)


class OpenAIApi:
    """The API's routes, over the job layer."""

    def __init__(
        self, service: JobService, access: ApiAccess, results_dir: Path, max_file_bytes: int, multilingual: bool = False
    ):
        self.service = service
        self.access = access
        self.results_dir = results_dir
        self.max_file_bytes = max_file_bytes
        self.multilingual = multilingual  # a request that names no language: each part's language detected

    def router(self) -> APIRouter:
        """The routes, under /v1."""
        router = APIRouter(prefix="/v1")
        router.add_api_route("/models", self.models, methods=["GET"])
        router.add_api_route("/audio/transcriptions", self.transcriptions, methods=["POST"])
        router.add_api_route("/audio/translations", self.translations, methods=["POST"])
        router.add_api_route("/{anything:path}", self.not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        return router

    async def models(self, request: Request) -> Response:
        """GET /v1/models: the default name, then the server's models."""
        try:
            check_key(request, self.access)
        except messages.UserError as error:
            return error_response(error)
        names = [DEFAULT_MODEL, *self.service.pools]
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "owned_by": "whisper-for-subs"} for name in names],
            }
        )

    async def not_found(self, request: Request, anything: str) -> Response:
        """Any other route under /v1: 404, in OpenAI's shape."""
        return error_response(
            messages.UserError(f"there is no {request.method} /v1/{anything[:MAX_FIELD_CHARS]} here", status=404)
        )

    async def transcriptions(self, request: Request) -> Response:
        """POST /v1/audio/transcriptions."""
        return await self._answer(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        """POST /v1/audio/translations (to English)."""
        return await self._answer(request, "translate")

    async def _answer(self, request: Request, task: str) -> Response:
        folder = new_job_folder(self.results_dir)
        try:
            check_key(request, self.access)
            try:
                async with request.form(max_files=1, max_fields=20) as form:
                    fields = self._fields(form, task)
                    source = await save_upload(form.get("file"), folder, self.max_file_bytes, "file")
            except HTTPException as error:  # Starlette's refusal of the form: too many fields, a field too large
                raise messages.UserError(
                    f"the form cannot be read: {str(error.detail)[:MAX_FIELD_CHARS]}", status=error.status_code
                ) from None
            # A place in the queue only now that the whole upload is here: a slow client holds none.
            with self.service.admitted():
                transcript = await run_while_connected(
                    request, lambda cancel: self.service.run(source, fields["options"], cancel=cancel)
                )
            return self._render(transcript, fields)
        except messages.UserError as error:
            return error_response(error)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _fields(self, form, task: str) -> dict:
        model = str(form.get("model") or DEFAULT_MODEL)[:MAX_FIELD_CHARS]
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise messages.UserError(
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", param="response_format"
            )
        granularities = set(form.getlist("timestamp_granularities[]")) or {"segment"}
        if not granularities <= {"segment", "word"}:
            raise messages.UserError(
                "timestamp_granularities[] takes segment and word", param="timestamp_granularities[]"
            )
        try:
            temperature = float(form.get("temperature") or 0)
        except ValueError:
            temperature = -1.0
        if not 0 <= temperature <= 1:
            raise messages.UserError("temperature must be a number from 0 to 1", param="temperature")
        language = str(form.get("language") or "auto")
        pool_name = self.service.default_model if model == DEFAULT_MODEL else model
        pool = self.service.pools.get(pool_name)
        options = self.service.check(
            JobRequest(
                model=pool_name,
                language=language,
                task=task,
                initial_prompt=str(form.get("prompt") or ""),
                multilingual=self.multilingual and language == "auto" and pool is not None and pool.multilingual,
            )
        )
        return {"options": options, "format": response_format, "words": "word" in granularities, "task": task}

    @staticmethod
    def _render(transcript: Transcript, fields: dict) -> Response:
        fmt = fields["format"]
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(render(transcript, fmt))
        text = plain_text(transcript.cues, transcript.language, one_line=True)
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        if fmt == "json":
            return JSONResponse({"text": text})
        document = {
            "task": fields["task"],
            "language": transcript.language,
            "duration": round(transcript.duration, 3),
            "text": text,
            "segments": [
                {
                    "id": index,
                    "seek": 0,
                    "start": segment.start,
                    "end": segment.end,
                    "text": segment.text,
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": segment.avg_logprob,
                    "compression_ratio": 0.0,
                    "no_speech_prob": segment.no_speech_prob,
                }
                for index, segment in enumerate(transcript.segments)
            ],
        }
        if fields["words"]:
            document["words"] = [
                {"word": word.text.strip(), "start": word.start, "end": word.end}
                for segment in transcript.segments
                for word in segment.words
            ]
        return Response(json.dumps(document, ensure_ascii=False), media_type="application/json")
