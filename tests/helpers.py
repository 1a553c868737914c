"""Small helpers shared by the tests."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import jiwer

ROOT = Path(__file__).resolve().parent.parent
# How long a test waits for what it expects before it gives up: far longer than it takes on the slowest
# day seen, so that it fails only where the thing never happens (each wait returns as soon as it does).
PATIENCE_S = 300.0
T = TypeVar("T")


def wait_until(condition: Callable[[], T], message: str = "", seconds: float = PATIENCE_S, every: float = 0.05) -> T:
    """Wait for `condition()` to give something true, and return it; fail with `message` if it never does."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s in vain: {message() if callable(message) else message}")
        time.sleep(every)
    return result


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: what word error rate should compare."""
    text = text.lower().replace("o'clock", "oclock")
    return " ".join(re.sub(r"[^\w\s']", " ", text).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python cli.py ARGS`, with tiny.en (the fastest model) unless ARGS name a model."""
    model = [] if "--model" in args else ["--model", "tiny.en"]
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args), *model],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def job_folders(results: Path) -> list[Path]:
    """The job folders in a results folder (not the waiting uploads, nor the server's own hidden files)."""
    return sorted(path for path in results.iterdir() if path.is_dir() and len(path.name) == 32)


def worker_pids(server_pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(server_pid), "-f", "multiprocessing.spawn"], capture_output=True, text=True
    ).stdout.split()
    return [int(pid) for pid in found]


@dataclass
class AppServer:
    """`python app.py` started by a test, on a free port of 127.0.0.1."""

    url: str
    process: subprocess.Popen
    results: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_app(folder: Path, *args: str, port: int | None = None, **env: str) -> AppServer:
    """Start the web app with its results under `folder` (on `port`, else a free one); returns once /health
    answers."""
    port = port or free_port()
    results = folder / "results"
    log = folder / "server.log"
    # tiny.en, the fastest model, unless the test names models (the default menu is base and tiny.en).
    environment = {**os.environ, "WHISPER_RESULTS_DIR": str(results), "WHISPER_MODEL": "tiny.en", **env}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), *args],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = AppServer(f"http://127.0.0.1:{port}", process, results, log)

    def answers() -> bool:
        try:
            urllib.request.urlopen(server.url + "/health", timeout=5)
        except urllib.error.HTTPError:
            return True  # it answers: a status other than 200 is for the test to judge
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None:
                raise RuntimeError(f"the server stopped while starting:\n{server.output()}") from None
            return False
        return True

    try:
        wait_until(answers, lambda: f"the server did not answer /health:\n{server.output()}", every=0.5)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_app(folder: Path, *args: str, **env: str) -> Iterator[AppServer]:
    """`start_app` for the length of a block; the server must then stop as SIGTERM asks (exit 143). Its
    log is printed, for pytest to show where the block failed."""
    server = start_app(folder, *args, **env)
    try:
        yield server
    finally:
        status = server.stop()
        print(server.output())
    assert status == 143, f"the server exited with {status}"
