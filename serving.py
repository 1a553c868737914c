"""How the web app is served: limits on request bodies, a brake on password guessing, and a server that
drains on SIGTERM.

Clients are known by the address they connect from. Behind a reverse proxy that is the proxy's: the
operator names the proxies to trust (WHISPER_TRUSTED_PROXIES), and only their X-Forwarded-For counts.

`docker stop` sends SIGTERM, waits for the container's stop grace period, then kills it. On the first
SIGTERM the server stops taking jobs, lets the running ones finish and deliver their results, and
only then closes its port; a second signal, or the drain time running out, stops it at once.
"""

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("whisper_for_subs")

# Wrong logins allowed from one client before it must wait; each further one doubles the wait, up to
# the most, so that a person who mistyped still gets in within a minute while guessing stays slow.
FREE_LOGIN_FAILURES = 5
MAX_LOGIN_DELAY_S = 60
LOGIN_PATHS = ("/login", "/login/")  # the page's login: a wrong password answers 400
# The APIs (OpenAI's, whisper-asr-webservice's, and the latter with its key in the path): a wrong key answers 401.
API_PREFIXES = ("/v1/", "/asr", "/detect-language", "/key/")

# After the last job of a drain, the port stays open until neither that job's end nor any request is
# less than QUIET_S ago (at most DELIVERY_S), so that clients can fetch the files of their results.
QUIET_S = 2.0
DELIVERY_S = 15.0
# Then connections still open (a download, a page's event stream) get this long to finish.
CLOSE_CONNECTIONS_S = 5


class ServerDraining(RuntimeError):
    """The server is shutting down and takes no new job."""


class BodyLimits:
    """ASGI middleware: every request body is counted as it arrives and stopped past `max_bytes` (413),
    whatever the route and whether or not it states its length (chunked bodies do not); a body that stops
    arriving for `idle_s` is dropped (408). The app sees the client disconnect, and the client gets the
    refusal."""

    def __init__(self, app: ASGIApp, max_bytes: int, idle_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, through the middleware."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, f"The request is larger than this server takes ({self.max_bytes} bytes).")
            return
        received, refusal, complete = 0, None, False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, refusal, complete
            if refusal is not None:
                return {"type": "http.disconnect"}
            if complete:  # the body is in: what comes now is the client's disconnect, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_s)
            except TimeoutError:
                refusal = (408, f"The request's body stopped arriving for {self.idle_s:g} s.")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    refusal = (413, f"The request is larger than this server takes ({self.max_bytes} bytes).")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return  # the app's answer to a body it did not get: ours goes instead
            if message["type"] == "http.response.start":
                started = True
                if not complete:  # an answer before the whole body (a refusal): read no more of it
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not started:
            log.warning("refused a request body from %s: %s", _client(scope), refusal[1])
            await _refuse(send, *refusal)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large" if status == 413 else "request_timeout",
            },
            "detail": message,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _client(scope: Scope) -> str:
    return scope["client"][0] if scope.get("client") else "unknown"


class LoginBrake:
    """ASGI middleware: after FREE_LOGIN_FAILURES wrong logins (passwords on the page, keys on the API)
    from one address, answer 429 with Retry-After until a wait has passed that doubles with each further
    failure. A right login clears it."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (wrong logins, locked until)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, through the middleware."""
        is_login = scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in LOGIN_PATHS
        is_api = scope["type"] == "http" and scope["path"].startswith(API_PREFIXES)
        if not (is_login or is_api):
            await self.app(scope, receive, send)
            return
        client = _client(scope)  # the peer, or what a trusted proxy says it forwards
        now = time.monotonic()
        failures, locked_until = self._failures.get(client, (0, 0.0))
        if now < locked_until:
            wait = math.ceil(locked_until - now)
            response = JSONResponse(
                {"detail": f"Too many wrong logins: try again in {wait} s."},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
            await response(scope, receive, send)
            return
        status = 0

        async def note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, note_status)
        if status == 200:
            self._failures.pop(client, None)
        elif status == 401 or (is_login and status == 400):
            failures += 1
            delay = (
                min(MAX_LOGIN_DELAY_S, 2 ** (failures - FREE_LOGIN_FAILURES)) if failures >= FREE_LOGIN_FAILURES else 0
            )
            self._forget_old(now)
            self._failures[client] = (failures, now + delay)

    def _forget_old(self, now: float) -> None:
        # Addresses whose last lock ended long ago: kept no longer, so that the table stays small.
        for client, (_failures, locked_until) in list(self._failures.items()):
            if locked_until < now - 3600:
                del self._failures[client]


class RequestClock:
    """ASGI middleware that notes when the last HTTP request came, for the drain's quiet spell."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.last_request = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, through the middleware."""
        if scope["type"] == "http":
            self.last_request = time.monotonic()
        await self.app(scope, receive, send)


class JobCounter:
    """The jobs running now, and whether new ones are still taken."""

    def __init__(self):
        self._changed = threading.Condition()
        self.running = 0
        self.draining = False

    @contextmanager
    def job(self) -> Iterator[None]:
        """Count a job while it runs; raises ServerDraining once the server is shutting down."""
        with self._changed:
            if self.draining:
                raise ServerDraining("the server is shutting down")
            self.running += 1
        try:
            yield
        finally:
            with self._changed:
                self.running -= 1
                self._changed.notify_all()

    def start_draining(self) -> None:
        """Take no new job from now on."""
        with self._changed:
            self.draining = True

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait for the running jobs; False if some still run after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self.running == 0, timeout)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM or SIGINT drains the jobs before the port closes."""

    def __init__(self, config: uvicorn.Config, jobs: JobCounter, clock: RequestClock, drain_seconds: float):
        super().__init__(config)
        self.jobs = jobs
        self.clock = clock
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame) -> None:
        """The first SIGTERM or SIGINT drains; a second one (or no drain time) stops at once."""
        if self.jobs.draining or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            self.force_exit = True  # a second signal: no more waiting for anything
            return
        self._captured_signals.append(sig)  # re-raised by uvicorn once it has stopped, as its own are
        self.jobs.start_draining()  # here, not in the thread: a second signal must find it set
        log.info(
            "shutting down: no new jobs; waiting up to %.0f s for %d running", self.drain_seconds, self.jobs.running
        )
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        if not self.jobs.wait_until_idle(self.drain_seconds):
            log.warning("drain time over with %d jobs still running: stopping them", self.jobs.running)
            self.should_exit = self.force_exit = True
            return
        finished = time.monotonic()
        while time.monotonic() < min(finished + DELIVERY_S, max(finished, self.clock.last_request) + QUIET_S):
            time.sleep(0.1)
        log.info("every job has finished and delivered: stopping")
        self.should_exit = True


def serve(
    app: ASGIApp, host: str, port: int, jobs: JobCounter, drain_seconds: float, trusted_proxies: tuple[str, ...] = ()
) -> None:
    """Serve `app` until SIGTERM or SIGINT, draining the jobs first (see the module's docstring). Only
    `trusted_proxies` (addresses or networks) may say whom they forward for."""
    clock = RequestClock(app)
    config = uvicorn.Config(
        clock,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=CLOSE_CONNECTIONS_S,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
    )
    DrainingServer(config, jobs, clock, drain_seconds).run()
