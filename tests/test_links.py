"""Links instead of files, against real HTTP servers on 127.0.0.1 and 127.0.0.2: direct media, a page with a
video (yt-dlp), and every refusal (scheme, private addresses on the first request and on redirects,
size, missing files), through the command line and the page's API."""

import functools
import gzip
import http.server
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client

from conftest import blue_video
from helpers import ROOT, get_json, job_folders, run_cli, start_app, word_error_rate
from links import AddressPolicy, LinkError, check_link, fetch_media

TRICKLES = {"/trickle.html": "text/html", "/trickle.flac": "audio/flac"}
PAGE = """<!DOCTYPE html><html><head><title>Ask not</title></head>
<body><h1>An inaugural address</h1><video controls src="jfk.mp4"></video></body></html>"""


class Site:
    """A folder served over HTTP on one loopback address, which records the paths asked for."""

    def __init__(self, folder: Path, host: str):
        self.requests: list[str] = []
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                site.requests.append(self.path)
                if self.path in TRICKLES:  # 2 bytes a second, for a minute at most
                    self.send_response(200)
                    self.send_header("Content-Type", TRICKLES[self.path])
                    self.end_headers()
                    for _ in range(120):
                        self.wfile.write(b"<!")
                        self.wfile.flush()
                        time.sleep(0.5)
                    return
                if self.path == "/huge.html":  # 300 MB of page, for as long as the client reads
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(300 * 2**20))
                    self.end_headers()
                    for _ in range(300 * 16):
                        self.wfile.write(b"<p>" + b"x" * (2**16 - 3))
                    return
                if self.path == "/gzipped.html":  # asked for no compression, it answers gzip anyway
                    body = gzip.compress(b"<html>" + b" " * 10**7 + b"</html>")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.path == "/slow.flac":  # a megabyte, a little at a time
                    self.send_response(200)
                    self.send_header("Content-Type", "audio/flac")
                    self.send_header("Content-Length", str(10**6))
                    self.end_headers()
                    for _ in range(100):
                        self.wfile.write(b"\0" * 10_000)
                        time.sleep(0.05)
                    return
                if self.path.startswith("/browsers-redirect?to=") and "Mozilla" in self.headers.get("User-Agent", ""):
                    self.send_response(302)  # only yt-dlp, which calls itself a browser, is sent on
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.end_headers()
                    return
                if self.path.startswith("/browsers-redirect?to="):
                    self.path = "/page.html"
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, jfk, ffmpeg):
    folder = tmp_path_factory.mktemp("site")
    shutil.copy(jfk[0], folder / "jfk.flac")
    blue_video(ffmpeg, jfk[0], folder / "jfk.mp4")
    (folder / "page.html").write_text(PAGE)
    first, second = Site(folder, "127.0.0.1"), Site(folder, "127.0.0.2")
    yield first, second
    first.close()
    second.close()


class OnlyFirstSite(AddressPolicy):
    """127.0.0.1 stands for the public internet here, 127.0.0.2 for the server's private network."""

    def allowed(self, address: str) -> bool:
        return address == "127.0.0.1"


def test_a_media_link_and_a_page_with_a_video_are_transcribed_by_the_cli(site, jfk, tmp_path):
    first, _ = site
    result = run_cli(
        f"{first.url}/jfk.flac",
        f"{first.url}/page.html",
        "-o",
        tmp_path,
        "--jobs",
        "2",
        env={"WHISPER_ALLOW_PRIVATE_URLS": "1"},
    )
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["Ask not (1).srt", "jfk.srt"]  # named after the file, and after the page (as yt-dlp titles it)
    for name in written:
        text = " ".join(line for line in (tmp_path / name).read_text().splitlines() if line and not line[0].isdigit())
        assert word_error_rate(jfk[1], text) <= 0.10
    assert f"{first.url}/jfk.flac -> {tmp_path / 'jfk.srt'}" in result.stderr


@pytest.mark.parametrize(
    "link, message",
    [
        ("file:///etc/passwd", "only http and https links are fetched, not file"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a private, local or metadata address"),
        ("http://127.0.0.1:{port}/jfk.flac", "127.0.0.1 is a private, local or metadata address"),
        ("http://localhost:{port}/page.html", "localhost is a private, local or metadata address"),
    ],
)
def test_without_the_flag_private_links_and_other_schemes_are_refused_before_any_model_loads(site, link, message):
    first, _ = site
    asked = len(first.requests)
    result = run_cli(link.format(port=first.url.rsplit(":", 1)[1]), timeout=60)
    assert result.returncode == 2 and message in result.stderr and "model loaded" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(first.requests) == asked  # refused before connecting


def test_every_redirect_is_checked_before_connecting(site, tmp_path):
    first, second = site
    with pytest.raises(LinkError, match=r"127\.0\.0\.2 is a private, local or metadata address"):
        fetch_media(f"{first.url}/redirect?to={second.url}/jfk.flac", tmp_path, 10**8, OnlyFirstSite())
    assert second.requests == [] and list(tmp_path.iterdir()) == []
    # A page whose video lies on the private side is refused the same way.
    (tmp_path / "site").mkdir()
    with pytest.raises(LinkError, match=r"127\.0\.0\.2 is a private"):
        fetch_media(f"{first.url}/redirect?to={second.url}/page.html", tmp_path / "site", 10**8, OnlyFirstSite())
    assert second.requests == []
    # A redirect that only yt-dlp's own requests for the page get: checked before yt-dlp connects too.
    with pytest.raises(LinkError, match=r"127\.0\.0\.2 is a private"):
        fetch_media(
            f"{first.url}/browsers-redirect?to={second.url}/page.html", tmp_path / "site", 10**8, OnlyFirstSite()
        )
    assert second.requests == [] and any(path.startswith("/browsers-redirect") for path in first.requests)


def test_missing_files_and_files_over_the_cap_are_refused_and_leave_nothing(site, tmp_path):
    first, _ = site
    allowed = AddressPolicy(allow_private=True)
    with pytest.raises(LinkError, match="the server answered 404"):
        fetch_media(f"{first.url}/missing.flac", tmp_path, 10**8, allowed)
    size = (Path(first.server.RequestHandlerClass.keywords["directory"]) / "jfk.flac").stat().st_size
    with pytest.raises(LinkError, match="more than the limit of 0.1 MB"):
        fetch_media(f"{first.url}/jfk.flac", tmp_path, 100_000, allowed)
    assert size > 100_000 and list(tmp_path.iterdir()) == []
    assert fetch_media(f"{first.url}/jfk.flac", tmp_path, size, allowed).stat().st_size == size
    with pytest.raises(LinkError, match="the download took longer than the 1 s allowed"):
        fetch_media(f"{first.url}/slow.flac", tmp_path, 10**8, allowed, time_limit_s=1)
    assert not (tmp_path / "slow.flac").exists()


@pytest.mark.parametrize("path", ["/trickle.html", "/trickle.flac"])
def test_a_link_that_trickles_is_stopped_at_its_time_limit(site, tmp_path, path):
    first, _ = site
    started = time.monotonic()
    with pytest.raises(LinkError, match="took longer than the 3 s allowed"):
        fetch_media(f"{first.url}{path}", tmp_path, 10**8, AddressPolicy(allow_private=True), time_limit_s=3)
    assert time.monotonic() - started < 5  # checked as its bytes arrive, not once a whole chunk has
    assert list(tmp_path.iterdir()) == []


def test_a_huge_page_is_read_only_up_to_its_limit_in_bounded_memory(site, tmp_path):
    first, _ = site
    script = (
        "import resource, sys; from pathlib import Path; from links import AddressPolicy, LinkError, fetch_media\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    fetch_media(sys.argv[1], Path(sys.argv[2]), 10**9, AddressPolicy(allow_private=True))\n"
        "except LinkError as error:\n    print(error)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, f"{first.url}/huge.html", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said, grown_mb = result.stdout.strip().splitlines()
    assert "more than the limit of 21 MB that is read to find its media" in said, result.stdout + result.stderr
    assert int(grown_mb) < 150, grown_mb  # PAGE_BYTES, held as text by yt-dlp a few times over: not 300 MB
    with pytest.raises(LinkError, match="answered compressed although asked not to"):
        fetch_media(f"{first.url}/gzipped.html", tmp_path, 10**9, AddressPolicy(allow_private=True))


@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "64:ff9b:1::c0a8:1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)
def test_ipv6_forms_of_refused_ipv4_addresses_are_refused(address):
    assert not AddressPolicy().allowed(address)
    with pytest.raises(LinkError, match="is a private, local or metadata address"):
        check_link(f"http://[{address}]/talk.mp3", AddressPolicy())


def test_ipv6_forms_of_public_ipv4_addresses_pass():
    for address in ("64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"):
        assert AddressPolicy().allowed(address), address


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The app as shipped (private links refused) and one that fetches from its own network."""
    strict = start_app(tmp_path_factory.mktemp("strict"), WHISPER_DEVICES="cpu")
    lenient = start_app(
        tmp_path_factory.mktemp("lenient"),
        WHISPER_DEVICES="cpu",
        WHISPER_ALLOW_PRIVATE_URLS="1",
        WHISPER_MAX_FILE_SIZE="1mb",
    )
    yield strict, lenient
    strict.stop()
    lenient.stop()


@pytest.mark.server
def test_the_page_takes_a_link_and_refuses_what_it_must(servers, site, jfk, tmp_path):
    strict, lenient = servers
    first, _ = site
    client = Client(lenient.url + "/", verbose=False, download_files=str(tmp_path))
    summary, text, *_ = client.predict(link=f"{first.url}/page.html", formats=["srt"], api_name="/transcribe")
    assert "realtime" in summary and word_error_rate(jfk[1], text) <= 0.10
    with pytest.raises(Exception, match="more than the limit of 1.05 MB"):  # WHISPER_MAX_FILE_SIZE applies
        client.predict(link=f"{first.url}/jfk.flac", formats=["srt"], api_name="/transcribe")

    client = Client(strict.url + "/", verbose=False, download_files=str(tmp_path))
    for link, message in [
        (f"{first.url}/jfk.flac", "127.0.0.1 is a private, local or metadata address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a private"),
        ("file:///etc/passwd", "only http and https links are fetched"),
    ]:
        with pytest.raises(Exception, match=f"This link cannot be used: {message}"):
            client.predict(link=link, formats=["srt"], api_name="/transcribe")
    assert get_json(strict.url + "/health")["status"] == "ok"
    assert job_folders(strict.results) == []  # no job folder stayed behind
