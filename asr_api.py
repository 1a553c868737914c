"""whisper-asr-webservice's API, so that Bazarr's Whisper provider, subgen's clients and other tools made for
ahmetoner/whisper-asr-webservice work against this server unchanged:

    POST /asr               multipart audio_file; query: task, language, initial_prompt, encode, output,
                            vad_filter, word_timestamps (and diarize, min_speakers, max_speakers: ignored,
                            as that project's faster_whisper engine ignores them; video_file: subgen's)
    POST /detect-language   multipart audio_file; query: encode (and subgen's detect_lang_offset,
                            detect_lang_length, video_file)

A door into the job layer (`jobs.py`), like the page and the OpenAI API: the same pools, limits, drain, and
our VAD, batching, cue rules and Chinese script. With `encode=false` the body is what Bazarr sends: raw
16-bit little-endian mono PCM at 16 kHz. Bazarr sends no header: on a server with an API key or a login,
the same routes answer under `/key/KEY/` (`/key/KEY/asr`), so that Bazarr's endpoint is
`http://server:7860/key/KEY`; other clients may send the key as `Authorization: Bearer KEY` or `X-API-Key`.
"""

import json
import shutil
import struct
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

import messages
from datatypes import SAMPLE_RATE, Transcript
from http_jobs import ApiAccess, check_key, run_while_connected, save_upload
from jobs import VAD_THRESHOLD_RANGE, JobRequest, JobService
from languages import language_name
from results import new_job_folder
from vad_splitter import VadOptions
from writers import render

OUTPUTS = ("txt", "vtt", "srt", "tsv", "json")
DETECTION_S = 30  # the audio /detect-language listens to by default, as that project does (Whisper's window)
KEY_PREFIX = "/key/{key}"
# That project's `vad_filter`: with it, our VAD at its default; without it (its default) that project
# transcribes all of the file, so ours keeps whatever might be speech (its most sensitive setting).
VAD_FILTER_THRESHOLD = VadOptions().threshold
VAD_ALL_THRESHOLD = VAD_THRESHOLD_RANGE[0]


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte header that makes raw 16-bit mono PCM at 16 kHz a WAV file (`encode=false` bodies)."""
    data_bytes = min(data_bytes, 0xFFFFFFFF - 36)  # the most a WAV header can say (37 hours)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def flag(value: str | None, default: bool) -> bool:
    """A query flag as FastAPI reads a bool: true, 1, yes, on."""
    return default if value is None else value.strip().lower() in ("true", "1", "yes", "on")


def error_response(error: messages.UserError) -> JSONResponse:
    """A refusal as FastAPI words it ({"detail": ...}), which that project's clients expect."""
    return JSONResponse({"detail": error.sentence[:500]}, status_code=error.status)


class AsrApi:
    """The routes of whisper-asr-webservice, over the job layer."""

    def __init__(self, service: JobService, access: ApiAccess, results_dir: Path, max_file_bytes: int):
        self.service = service
        self.access = access
        self.results_dir = results_dir
        self.max_file_bytes = max_file_bytes

    def router(self) -> APIRouter:
        """The routes: at the root, and under /key/KEY for clients that send no header."""
        router = APIRouter()
        for prefix in ("", KEY_PREFIX):
            router.add_api_route(f"{prefix}/asr", self.asr, methods=["POST"], include_in_schema=not prefix)
            router.add_api_route(
                f"{prefix}/detect-language", self.detect_language, methods=["POST"], include_in_schema=not prefix
            )
        return router

    async def asr(self, request: Request) -> Response:
        """POST /asr: the subtitles (or text, or JSON) of the file, as whisper-asr-webservice answers."""
        query = request.query_params
        output = query.get("output") or "txt"
        folder = new_job_folder(self.results_dir)
        try:
            self._allow(request)
            if output not in OUTPUTS:
                raise messages.UserError(f"output is one of {', '.join(OUTPUTS)}", param="output")
            options = self.service.check(
                JobRequest(
                    language=query.get("language") or "auto",
                    task=query.get("task") or "transcribe",
                    initial_prompt=query.get("initial_prompt") or "",
                    vad_threshold=VAD_FILTER_THRESHOLD if flag(query.get("vad_filter"), False) else VAD_ALL_THRESHOLD,
                )
            )
            source, filename = await self._receive(request, folder)
            with self.service.admitted():
                transcript = await run_while_connected(
                    request, lambda cancel: self.service.run(source, options, cancel=cancel)
                )
            body = answer(transcript, output, flag(query.get("word_timestamps"), False))
            headers = {
                "Asr-Engine": "whisper-for-subs",
                "Content-Disposition": f'attachment; filename="{quote(Path(filename).name)}.{output}"',
            }
            return Response(body, media_type="text/plain; charset=utf-8", headers=headers)
        except messages.UserError as error:
            return error_response(error)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def detect_language(self, request: Request) -> Response:
        """POST /detect-language: the language spoken in the file's first 30 s (or in subgen's stretch of
        it), by its first speech there; its name, and how sure the model is."""
        query = request.query_params
        folder = new_job_folder(self.results_dir)
        try:
            self._allow(request)
            offset = _seconds(query.get("detect_lang_offset"), 0, "detect_lang_offset")
            length = _seconds(query.get("detect_lang_length"), DETECTION_S, "detect_lang_length")
            source, _ = await self._receive(request, folder)
            with self.service.admitted():
                code, probability = await run_while_connected(
                    request, lambda cancel: self.service.detect_language(source, offset, length, cancel)
                )
            name = language_name(code).lower()
            return JSONResponse({"detected_language": name, "language_code": code, "confidence": round(probability, 4)})
        except messages.UserError as error:
            return error_response(error)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _allow(self, request: Request) -> None:
        """Whether the request may use the API: a key in the path (/key/KEY/asr) counts as the header would."""
        check_key(request, self.access, request.path_params.get("key"))

    async def _receive(self, request: Request, folder: Path) -> tuple[Path, str]:
        """The upload (`audio_file`) in `folder`, and its name as sent: the file as it came, or with
        `encode=false` its raw PCM made a WAV file."""
        try:
            async with request.form(max_files=1, max_fields=10) as form:
                upload = form.get("audio_file")
                source = await save_upload(upload, folder, self.max_file_bytes, "audio_file")
                filename = getattr(upload, "filename", "") or "audio"
        except HTTPException as error:  # Starlette's refusal of the form
            detail = str(error.detail)[:64]
            raise messages.UserError(f"the form cannot be read: {detail}", status=error.status_code) from None
        if flag(request.query_params.get("encode"), True):
            return source, filename
        wav = source.with_suffix(".pcm.wav")
        with open(source, "rb") as raw, open(wav, "wb") as made:
            made.write(wav_header(source.stat().st_size // 2 * 2))
            shutil.copyfileobj(raw, made, 1 << 20)
        source.unlink()
        return wav, filename


def _seconds(text: str | None, default: int, param: str) -> int:
    """A query's whole number of seconds; UserError for anything else."""
    if text is None:
        return default
    if not text.strip().isdigit():
        raise messages.UserError(f"{param} is a whole number of seconds", param=param)
    return int(text)


def answer(transcript: Transcript, output: str, words: bool) -> str:
    """The file of `output` as whisper-asr-webservice answers it. Its SRT, WebVTT and text are ours (cues
    that follow the subtitle rules); TSV is a cue a line, its times in milliseconds; JSON has that
    project's shape (segments, with their words where `words`)."""
    if output == "tsv":
        rows = [
            f"{round(cue.start * 1000)}\t{round(cue.end * 1000)}\t{cue.text.replace(chr(10), ' ')}\n"
            for cue in transcript.cues
        ]
        return "start\tend\ttext\n" + "".join(rows)
    if output != "json":
        return render(transcript, output)
    segments = [
        {
            "id": index + 1,
            "seek": 0,
            "start": segment.start,
            "end": segment.end,
            "text": " " + segment.text,
            "tokens": [],
            "avg_logprob": segment.avg_logprob,
            "compression_ratio": 0.0,
            "no_speech_prob": segment.no_speech_prob,
            "temperature": 0.0,
            "words": [
                {"start": word.start, "end": word.end, "word": word.text, "probability": word.probability}
                for word in segment.words
            ]
            if words
            else None,
        }
        for index, segment in enumerate(transcript.segments)
    ]
    text = "".join(segment["text"] for segment in segments)
    return json.dumps({"language": transcript.language, "segments": segments, "text": text}, ensure_ascii=False)
