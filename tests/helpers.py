"""Small helpers shared by the tests."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jiwer

ROOT = Path(__file__).resolve().parent.parent


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: what word error rate should compare."""
    text = text.lower().replace("o'clock", "oclock")
    return " ".join(re.sub(r"[^\w\s']", " ", text).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
    )
