"""What the HTTP APIs (OpenAI's, and whisper-asr-webservice's) share: the key they ask for, an upload
written into a job folder of its own, and a job that stops when its client goes away (nobody could
fetch its result any more).
"""

import asyncio
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
from fastapi import Request

import messages
from links import safe_name

T = TypeVar("T")

COPY_CHUNK = 1 << 20
DISCONNECT_POLL_S = 0.5


@dataclass(frozen=True)
class ApiAccess:
    """Who may use the APIs: everybody, or whoever sends the key."""

    api_key: str | None  # None: no key is asked for
    login: bool  # the page has a login: then the APIs need a key too


def check_key(request: Request, access: ApiAccess, key_in_path: str | None = None) -> None:
    """Raise UserError(401) unless the request may use the API: it sends the key (`Authorization: Bearer
    KEY`, `X-API-Key: KEY`, or in its path, `key_in_path`, for clients that send no header), or none is
    asked for and the page has no login."""
    if access.api_key is None:
        if access.login:
            raise messages.UserError(
                "this server has a login: its API needs a key (WHISPER_API_KEY)", status=401, code="invalid_api_key"
            )
        return
    given = (
        key_in_path
        or request.headers.get("x-api-key")
        or request.headers.get("authorization", "").removeprefix("Bearer ")
    )
    if not hmac.compare_digest(given.strip().encode(), access.api_key.encode()):
        raise messages.UserError("incorrect API key provided", status=401, code="invalid_api_key")


async def save_upload(upload, folder: Path, limit_bytes: int, param: str) -> Path:
    """Write a multipart file field into `folder`, under a safe version of its name; UserError where the
    field is not a file or is larger than `limit_bytes`."""
    if not hasattr(upload, "read") or not hasattr(upload, "filename"):
        raise messages.UserError(f"send the audio as the multipart file field {param!r}", param=param)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_name(Path(upload.filename or "").name or "audio", default="audio")
    written = 0
    with open(target, "wb") as file:
        while chunk := await upload.read(COPY_CHUNK):
            written += len(chunk)
            if written > limit_bytes:
                raise messages.UserError(messages.too_large(limit_bytes), param=param, status=413)
            file.write(chunk)
    return target


async def run_while_connected(request: Request, work: Callable[[threading.Event], T]) -> T:
    """`work(cancel)` in a thread of its own, `cancel` set when the client disconnects."""
    cancel = threading.Event()

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)
        cancel.set()

    watcher = asyncio.create_task(watch())
    try:
        return await anyio.to_thread.run_sync(work, cancel)
    finally:
        watcher.cancel()
