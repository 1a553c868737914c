"""Links instead of files: fetch the media of a URL (a media file, or a video page yt-dlp knows) for a job.

A server that fetches URLs for its users could be made to fetch its own network's private services
(server-side request forgery). So only http and https are fetched, and every address a host name
resolves to must be public: loopback, private, link-local (which holds the clouds' metadata service
at 169.254.169.254), shared and reserved addresses are refused, on the first request and on every
redirect, and the connection goes to the very address that was checked (no second DNS answer).
IPv6 addresses that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged by it too.
`WHISPER_ALLOW_PRIVATE_URLS=1` lifts the address rule, for servers that fetch from their own network.

Everything a link fetches is limited as its bytes arrive, in size and in time: the media file by the upload
limit; a video page, and whatever else yt-dlp reads to find the media, by PAGE_BYTES in all (and only
uncompressed, so that no small answer can unpack into gigabytes); and all of it together by the link's time
limit, however slowly a server trickles its bytes.
"""

import functools
import http.client
import ipaddress
import mimetypes
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ALLOW_PRIVATE_ENV = "WHISPER_ALLOW_PRIVATE_URLS"
TIME_LIMIT_S = 600.0  # for the whole download of one link
CHUNK_BYTES = 1 << 16
# What yt-dlp may read for one link to find its media (the page, its scripts and APIs): together, at most.
# yt-dlp holds what it reads as text, so a link job takes at most a few times this in memory.
PAGE_BYTES = 20 * 1024**2
SOCKET_WAIT_S = 30.0  # the longest one read waits for a silent server (never past the time limit)
# Networks whose IPv6 addresses carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and 8215).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# Content types of a web page, whose media yt-dlp finds; anything else is taken as the media itself.
PAGE_TYPES = ("text/html", "application/xhtml+xml")


class LinkError(ValueError):
    """The link cannot be fetched; the message says why, in words for the person who gave it."""


def is_link(text: str) -> bool:
    """Whether an input names a URL rather than a file (any scheme: `file://` must be refused, not opened)."""
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text.strip()))


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses links may reach: public ones only, unless `allow_private`."""

    allow_private: bool = False

    @classmethod
    def from_environment(cls) -> "AddressPolicy":
        """The policy `WHISPER_ALLOW_PRIVATE_URLS` sets (the command line's)."""
        return cls(allow_private=os.environ.get(ALLOW_PRIVATE_ENV) == "1")

    def allowed(self, address: str) -> bool:
        """Whether a link may connect to `address`."""
        ip = ipaddress.ip_address(address.split("%")[0])
        return self.allow_private or all(one.is_global and not one.is_multicast for one in (ip, *embedded_ipv4(ip)))

    def address_of(self, host: str, port: int) -> str:
        """The address to connect to for `host`, once every address it resolves to is allowed."""
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise LinkError(f"{host}: no such host") from None
        addresses = [info[4][0] for info in found]
        refused = [address for address in addresses if not self.allowed(address)]
        if refused:
            raise LinkError(
                f"{host} is a private, local or metadata address ({refused[0]}): links must point to "
                f"the public internet (a server that fetches from its own network sets {ALLOW_PRIVATE_ENV}=1)"
            )
        return addresses[0]


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: ::ffff:a.b.c.d, ::a.b.c.d, NAT64, 6to4 and Teredo."""
    if ip.version == 4:
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    last_32_bits = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in network for network in NAT64) or (ip.packed[:12] == bytes(12) and int(ip) > 1):
        found.append(last_32_bits)
    return [address for address in found if address is not None]


def check_link(url: str, policy: AddressPolicy) -> None:
    """Raise LinkError for a URL that is not http(s), or whose host is not allowed."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise LinkError(f"only http and https links are fetched, not {parts.scheme or 'this'}: {url}")
    if not parts.hostname:
        raise LinkError(f"the link names no host: {url}")
    policy.address_of(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def fetch_media(
    url: str, folder: Path, max_bytes: int, policy: AddressPolicy | None = None, time_limit_s: float = TIME_LIMIT_S
) -> Path:
    """Download the media of `url` into `folder`: the file itself, or, for a web page, its audio (or
    its video where it has no audio alone) as yt-dlp finds it. Returns the file's path. Raises
    LinkError with the reason (refused, not found, too big, too slow, no media)."""
    policy = policy or AddressPolicy.from_environment()
    check_link(url, policy)
    deadline = _Deadline(time.monotonic() + time_limit_s, time_limit_s)
    opener = _checked_opener(policy)
    with _open(opener, url, {}, deadline) as response:
        if response.headers.get_content_type() not in PAGE_TYPES:
            return _save(response, folder, _file_name(response), max_bytes, deadline)
    media_url, headers, name = _media_of_page(url, policy, deadline)
    with _open(opener, media_url, headers, deadline) as response:
        return _save(response, folder, name, max_bytes, deadline)


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic() by which the download must be done
    seconds: float  # the time limit that stands for, for the message

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.left() < 0:
            raise LinkError(f"the download took longer than the {self.seconds:g} s allowed")

    def socket_wait(self) -> float:
        """How long one read may wait for a silent server: never past the deadline."""
        return max(min(self.left(), SOCKET_WAIT_S), 0.1)


class _Budget:
    """Bytes that may still be read, shared by all the reads of one purpose (a page and what yt-dlp reads
    beside it)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.left = limit

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise LinkError(
                f"the page is more than the limit of {self.limit / 1e6:.3g} MB that is read to find its media"
            )


def _read_within(read1, amount: int | None, budget: _Budget, deadline: _Deadline) -> bytes:
    """Read up to `amount` bytes (all, where None) with `read1`, which returns as soon as any bytes arrive:
    the budget and the deadline are checked as the bytes come, however slowly."""
    pieces, count = [], 0
    while amount is None or count < amount:
        deadline.check()
        piece = read1(CHUNK_BYTES if amount is None else min(CHUNK_BYTES, amount - count))
        if not piece:
            break
        budget.take(len(piece))
        pieces.append(piece)
        count += len(piece)
    return b"".join(pieces)


def _open(opener: urllib.request.OpenerDirector, url: str, headers: dict, deadline: _Deadline):
    request = urllib.request.Request(url, headers={"User-Agent": "whisper-for-subs", **headers})
    try:
        return opener.open(request, timeout=deadline.socket_wait())
    except urllib.error.HTTPError as error:
        raise LinkError(f"the server answered {error.code} {error.reason} for {url}") from None
    except urllib.error.URLError as error:
        raise LinkError(f"could not fetch {url}: {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise LinkError(f"could not fetch {url}: {error}") from None


def _save(response, folder: Path, name: str, max_bytes: int, deadline: _Deadline) -> Path:
    """Write the response's body to `folder / name`, within `max_bytes` and before `deadline`."""
    declared = int(response.headers.get("Content-Length") or 0)
    if declared > max_bytes:
        raise LinkError(f"the file is {declared / 1e6:.3g} MB, more than the limit of {max_bytes / 1e6:.3g} MB")
    path = folder / name
    received = 0
    try:
        with open(path, "wb") as file:
            while True:
                deadline.check()
                chunk = response.read1(CHUNK_BYTES)  # as soon as any bytes arrive: a trickle is still timed
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    raise LinkError(f"the file is more than the limit of {max_bytes / 1e6:.3g} MB")
                file.write(chunk)
    except (OSError, http.client.HTTPException) as error:
        path.unlink(missing_ok=True)
        raise LinkError(f"the download broke off: {error}") from None
    except LinkError:
        path.unlink(missing_ok=True)
        raise
    return path


def _file_name(response) -> str:
    """A safe local name: the URL's last path part, with an extension from the content type if it has none."""
    name = safe_name(Path(urllib.parse.unquote(urllib.parse.urlsplit(response.url).path)).name)
    if not Path(name).suffix:
        name += mimetypes.guess_extension(response.headers.get_content_type()) or ""
    return name


def safe_name(name: str, default: str = "download") -> str:
    """`name` as a file name that is safe to write: letters, digits and a few marks only, no leading dots
    (no `..`), a stem of at most 100 characters and an extension of at most 10; `default` where nothing
    is left."""
    stem, suffix = os.path.splitext(re.sub(r"[^\w.\-() ]", "_", name).strip(" ._"))
    return (stem[:100] or default) + suffix[:10]


def _media_of_page(url: str, policy: AddressPolicy, deadline: _Deadline) -> tuple[str, dict, str]:
    """The URL (and headers) of a page's media as yt-dlp finds it: its best audio alone where the site
    offers one, over plain http(s) (no streaming playlists), and a local name for it. Whatever yt-dlp reads
    for it counts against one PAGE_BYTES budget and the link's deadline."""
    budget = _Budget(PAGE_BYTES)
    from yt_dlp import YoutubeDL  # only for pages
    from yt_dlp.networking._urllib import RedirectHandler, UrllibRH
    from yt_dlp.utils import YoutubeDLError

    class CheckedRedirects(RedirectHandler):
        handler_order = RedirectHandler.handler_order - 1  # asked before yt-dlp's own, which it then is

        def redirect_request(self, request, response, code, message, headers, new_url):
            check_link(new_url, policy)  # before anything connects to it
            return super().redirect_request(request, response, code, message, headers, new_url)

    class RefuseCompressed(urllib.request.BaseHandler):
        """Before yt-dlp's own handler unpacks a compressed answer whole, in memory, where nothing could
        count its bytes: refuse it (every request asks for no compression)."""

        handler_order = 100  # before any other handler looks at the answer

        def http_response(self, request, response):
            if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                response.close()
                raise LinkError(f"{request.full_url} answered compressed although asked not to: it is not read")
            return response

        https_response = http_response

    class CheckedUrllibRH(UrllibRH):
        """yt-dlp's own urllib request handler, whose every redirect is checked first."""

        def _create_instance(self, *args, **kwargs):
            opener = super()._create_instance(*args, **kwargs)
            opener.add_handler(CheckedRedirects())
            opener.add_handler(RefuseCompressed())
            return opener

    class CheckedYoutubeDL(YoutubeDL):
        @functools.cached_property
        def _request_director(self):
            return self.build_request_director([CheckedUrllibRH])  # this handler alone

        def urlopen(self, request):
            # Each request yt-dlp makes for the page, and where its redirects ended, must be allowed.
            check_link(request if isinstance(request, str) else request.url, policy)
            deadline.check()
            response = super().urlopen(request)
            check_link(response.url, policy)
            read1 = getattr(response.fp, "read1", response.fp.read)
            response.read = lambda amount=None: _read_within(read1, amount, budget, deadline)
            return response

    options = {
        "quiet": True,
        "no_warnings": True,
        "noplaylist": True,
        "socket_timeout": deadline.socket_wait(),
        "proxy": "",
        "http_headers": {"Accept-Encoding": "identity"},
        "format": "bestaudio[protocol^=http]/best[protocol^=http]",
    }
    try:
        with CheckedYoutubeDL(options) as downloader:
            info = downloader.extract_info(url, download=False)
    except YoutubeDLError as error:
        raise _refusal_within(error) or LinkError(f"no audio or video found at {url}") from None
    if info.get("entries") is not None:
        raise LinkError(f"{url} is a playlist: give the link of one video")
    check_link(info["url"], policy)
    name = safe_name(f"{info.get('title') or 'download'}.{info.get('ext') or 'media'}")
    return info["url"], dict(info.get("http_headers") or {}), name


def _refusal_within(error: BaseException) -> LinkError | None:
    """The LinkError that yt-dlp wrapped, however deep (its extractors and handlers wrap what they catch)."""
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LinkError):
            return current
        wrapped = getattr(current, "exc_info", None)
        pending += [current.__cause__, current.__context__, wrapped[1] if wrapped else None]
    return None


class _CheckedConnection:
    """Connects to the address the policy checked for the host, not to a second DNS answer."""

    def __init__(self, *args, policy: AddressPolicy, **kwargs):
        self.policy = policy
        super().__init__(*args, **kwargs)

    def _checked_socket(self) -> socket.socket:
        return socket.create_connection((self.policy.address_of(self.host, self.port), self.port), self.timeout)


class _CheckedHTTPConnection(_CheckedConnection, http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = self._checked_socket()


class _CheckedHTTPSConnection(_CheckedConnection, http.client.HTTPSConnection):
    def connect(self) -> None:
        self.sock = self._context.wrap_socket(self._checked_socket(), server_hostname=self.host)


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, request):
        return self.do_open(functools.partial(_CheckedHTTPConnection, policy=self.policy), request)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__(context=ssl.create_default_context())
        self.policy = policy

    def https_open(self, request):
        return self.do_open(
            functools.partial(_CheckedHTTPSConnection, policy=self.policy), request, context=self._context
        )


def _checked_opener(policy: AddressPolicy) -> urllib.request.OpenerDirector:
    """http and https only (no file, ftp or data handlers), no proxy, redirects followed and each of
    their hosts checked when connecting."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _CheckedHTTPHandler(policy),
        _CheckedHTTPSHandler(policy),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener
