"""The results folder as the outside world sees it: `/results`, wherever it lies on the server.

Gradio names every file it serves by its absolute path (`/gradio_api/file=/srv/app/results/3f2a/talk.srt`),
in its messages, its file addresses and the paths its upload route gives back, which would show strangers
how the server's disk is laid out. This ASGI middleware writes the results folder's path as `/results` in
everything Gradio sends, and back in the file addresses and event data that come in, so that neither side
of Gradio notices.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC = b"/results"
GRADIO = "/gradio_api/"
# Where requests carry paths of files, in JSON: the events' data.
EVENT_ROUTES = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/")


class PublicPaths:
    """ASGI middleware: the results folder as `/results`, to and from Gradio."""

    def __init__(self, app: ASGIApp, results_dir: str):
        self.app = app
        self.real = results_dir.rstrip("/").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request, its paths made public on the way out and real on the way in."""
        if scope["type"] != "http" or not (scope["path"].startswith(GRADIO) or scope["path"] == "/config"):
            await self.app(scope, receive, send)
            return
        scope = self._inward_path(scope)
        if scope["method"] == "POST" and scope["path"].startswith(EVENT_ROUTES):
            receive = self._inward_body(receive)

        rewrite = False  # only messages (JSON, server-sent events); never the files themselves

        async def outward(message: Message) -> None:
            nonlocal rewrite
            if message["type"] == "http.response.start":
                kind = dict(message["headers"]).get(b"content-type", b"")
                rewrite = kind.startswith((b"application/json", b"text/event-stream", b"text/plain"))
                if rewrite:  # the body's length changes: let the server count it (chunked) instead
                    message["headers"] = [
                        (name, value) for name, value in message["headers"] if name != b"content-length"
                    ]
            elif message["type"] == "http.response.body" and rewrite:
                message["body"] = message.get("body", b"").replace(self.real, PUBLIC)
            await send(message)

        await self.app(scope, receive, outward)

    def _inward_path(self, scope: Scope) -> Scope:
        """`/gradio_api/file=/results/...` to the real path."""
        marker = "/gradio_api/file=" + PUBLIC.decode()
        if not scope["path"].startswith(marker):
            return scope
        path = self.real.decode() + scope["path"][len(marker) :]
        return {
            **scope,
            "path": "/gradio_api/file=" + path,
            "raw_path": scope.get("raw_path", b"").replace(b"file=" + PUBLIC, b"file=" + self.real, 1),
        }

    def _inward_body(self, receive: Receive) -> Receive:
        """The event's data (a small JSON body, read whole) with `"/results/...` paths made real again."""
        public, real = b'"' + PUBLIC + b"/", b'"' + self.real + b"/"
        read = False

        async def translated() -> Message:
            nonlocal read
            if read:
                return await receive()
            read = True
            body = b""
            while (message := await receive())["type"] == "http.request":
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    return {"type": "http.request", "body": body.replace(public, real), "more_body": False}
            return message  # the client left

        return translated
