"""Every setting of the server and the command line, written once: its flag, its environment variable,
its default and its help. Both doors build their flags from this table and read one `Config`, and the
README's table of settings is made from it (a test keeps the two the same).

A setting given on the command line wins over its environment variable, which wins over its default.
"""

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import parse_batch_size

APP, CLI = "app", "cli"


def parse_size(text: str) -> int:
    """A size in bytes from `2gb`, `500 MB`, `64kb` or a plain number of bytes."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", text.lower())
    if not found:
        raise ValueError(f"a size is a number with kb, mb or gb, such as 2gb, not {text!r}")
    number, unit = float(found.group(1)), (found.group(2) or "b").rstrip("ib") or "b"
    return int(number * 1024 ** "bkmgt".index(unit[0]))


def parse_switch(text: str) -> bool:
    """An on/off environment variable: 1, true or yes for on."""
    return text.strip().lower() in ("1", "true", "yes", "on")


def parse_models(text: str) -> tuple[str, ...]:
    """Model names separated by commas; empty for the default models."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_addresses(text: str) -> tuple[str, ...]:
    """Addresses or networks separated by commas (`10.0.0.5, 172.18.0.0/16`)."""
    import ipaddress

    networks = tuple(part.strip() for part in text.split(",") if part.strip())
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # raises ValueError for a bad one
    return networks


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, with an empty text meaning None."""
    return lambda text: parse(text) if text.strip() else None


@dataclass(frozen=True)
class Setting:
    """One setting: how it is given and what it means."""

    name: str  # the Config attribute
    env: str  # its environment variable
    default: str  # as it would be written in the variable; "" for none
    help: str  # one line, for --help and the README
    parse: Callable[[str], Any] = str
    doors: tuple[str, ...] = (APP, CLI)
    switch: bool = False  # a flag without a value, on when given
    shown_default: str = ""  # the README's words for the default, where the text alone does not say it

    @property
    def flag(self) -> str:
        """The setting's command-line flag: --max-file-size for max_file_size."""
        return "--" + self.name.replace("_", "-")


SETTINGS = (
    Setting(
        "host",
        "WHISPER_HOST",
        "127.0.0.1",
        "the address the web app listens on",
        doors=(APP,),
        shown_default="`127.0.0.1` (`0.0.0.0` in Docker)",
    ),
    Setting("port", "WHISPER_PORT", "7860", "the web app's port", int, doors=(APP,)),
    Setting(
        "model",
        "WHISPER_MODEL",
        "",
        "a size name (large-v3-turbo, small, ...), a Hugging Face repo id or a local CTranslate2 folder; "
        "the app takes several, separated by commas, for its model menu (the first is the default)",
        parse_models,
        shown_default="`large-v3-turbo` with a GPU, else `base,tiny.en` (both bundled)",
    ),
    Setting(
        "devices",
        "WHISPER_DEVICES",
        "auto",
        "auto (two workers on every GPU, else a CPU worker per core, at most 4), cuda:0,cuda:1, cuda:0*2, cpu, cpu*2",
    ),
    Setting(
        "ray_address",
        "WHISPER_RAY_ADDRESS",
        "",
        "run the workers as Ray actors on this cluster (host:port, or auto); devices are then auto, cpu*N or cuda*N",
        optional(str),
        shown_default="none: workers are processes on this machine",
    ),
    Setting(
        "compute_type",
        "WHISPER_COMPUTE_TYPE",
        "",
        "how the model computes",
        optional(str),
        shown_default="`float16` on GPU, `int8` on CPU",
    ),
    Setting(
        "batch_size",
        "WHISPER_BATCH_SIZE",
        "auto",
        "30-s windows per batched call; auto: as many as fit each device's free memory",
        parse_batch_size,
    ),
    Setting(
        "multilingual",
        "WHISPER_MULTILINGUAL",
        "",
        "the recordings change language: each part's language is detected (the page's Several languages "
        "starts ticked, and API requests that name no language get it)",
        parse_switch,
        switch=True,
        shown_default="off",
    ),
    Setting(
        "max_file_size", "WHISPER_MAX_FILE_SIZE", "2gb", "the largest upload, request body or link download", parse_size
    ),
    Setting(
        "allow_private_urls",
        "WHISPER_ALLOW_PRIVATE_URLS",
        "",
        "let links point to loopback, private and link-local addresses (refused by default)",
        parse_switch,
        switch=True,
        shown_default="off",
    ),
    Setting(
        "watch",
        "WHISPER_WATCH",
        "",
        "a folder (a media library) whose audio and video files without subtitles get them, now and as files appear",
        optional(Path),
        shown_default="none",
    ),
    Setting(
        "watch_formats",
        "WHISPER_WATCH_FORMATS",
        "srt",
        "the formats the watched folder gets, separated by commas (srt, vtt, ass, txt, json)",
        lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
    ),
    Setting(
        "username",
        "WHISPER_USERNAME",
        "",
        "with a password: the page's login",
        optional(str),
        doors=(APP,),
        shown_default="none: no login",
    ),
    Setting(
        "password",
        "WHISPER_PASSWORD",
        "",
        "with a username: the page's login",
        optional(str),
        doors=(APP,),
        shown_default="none: no login",
    ),
    Setting(
        "api_key",
        "WHISPER_API_KEY",
        "",
        "the key the APIs ask for (Authorization: Bearer KEY, or X-API-Key)",
        optional(str),
        doors=(APP,),
        shown_default="none: the APIs are open, unless a login is set (then they are closed)",
    ),
    Setting(
        "trusted_proxies",
        "WHISPER_TRUSTED_PROXIES",
        "",
        "reverse proxies (addresses or networks) whose X-Forwarded-For names the real client",
        parse_addresses,
        doors=(APP,),
        shown_default="none: the peer's own address counts",
    ),
    Setting(
        "results_dir",
        "WHISPER_RESULTS_DIR",
        "results",
        "where uploads and results are kept",
        lambda text: Path(text).resolve(),
        doors=(APP,),
    ),
    Setting(
        "keep_hours", "WHISPER_KEEP_HOURS", "24", "uploads and results older than this are deleted", float, doors=(APP,)
    ),
    Setting("queue_size", "WHISPER_QUEUE_SIZE", "32", "jobs waiting at most, beyond those running", int, doors=(APP,)),
    Setting(
        "drain_seconds",
        "WHISPER_DRAIN_SECONDS",
        "600",
        "on SIGTERM, how long running jobs may take to finish",
        float,
        doors=(APP,),
    ),
    Setting(
        "upload_idle_seconds",
        "WHISPER_UPLOAD_IDLE_SECONDS",
        "60",
        "an upload (any request body) that sends nothing for this long is dropped",
        float,
        doors=(APP,),
    ),
)


@dataclass(frozen=True)
class Config:
    """The settings of one server or command-line run, parsed (SETTINGS gives each one's meaning and
    default: `default_config()`)."""

    host: str
    port: int
    model: tuple[str, ...]
    devices: str
    ray_address: str | None
    compute_type: str | None
    batch_size: int | None
    multilingual: bool
    max_file_size: int
    allow_private_urls: bool
    watch: Path | None
    watch_formats: tuple[str, ...]
    username: str | None
    password: str | None
    api_key: str | None
    trusted_proxies: tuple[str, ...]
    results_dir: Path
    keep_hours: float
    queue_size: int
    drain_seconds: float
    upload_idle_seconds: float

    @property
    def login(self) -> tuple[str, str] | None:
        """(username, password) where the page has a login, else None."""
        return (self.username, self.password) if self.username and self.password else None


def default_config(**changes: Any) -> Config:
    """Every setting at its default, but `changes`."""
    return Config(**{setting.name: setting.parse(setting.default) for setting in SETTINGS} | changes)


def add_arguments(parser: argparse.ArgumentParser, door: str) -> None:
    """Add the flags of `door`'s settings to `parser`, each defaulting to its environment variable."""
    for setting in SETTINGS:
        if door not in setting.doors:
            continue
        if setting.switch:
            parser.add_argument(
                setting.flag, action="store_const", const="1", default=None, help=f"{setting.help} ({setting.env}=1)"
            )
        else:
            parser.add_argument(
                setting.flag,
                default=None,
                metavar=setting.name.upper(),
                help=f"{setting.help} ({setting.env}; default {setting.default or 'none'})",
            )


def config_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    """The Config of parsed flags: each setting from its flag, else its variable, else its default. A bad
    value ends the program through `parser.error`, naming the flag or the variable."""
    values = {}
    for setting in SETTINGS:
        if not hasattr(args, setting.name):
            continue
        given = getattr(args, setting.name)
        source = setting.flag if given is not None else setting.env
        text = given if given is not None else os.environ.get(setting.env, setting.default)
        try:
            values[setting.name] = setting.parse(text)
        except ValueError as error:
            parser.error(f"{source}: {error}")
    config = default_config(**values)
    if hasattr(args, "username") and bool(config.username) != bool(config.password):
        parser.error("give both a username and a password, or neither")
    return config


def readme_table() -> str:
    """The README's table of settings, as Markdown."""
    rows = ["| flag | variable | default | meaning | used by |", "|---|---|---|---|---|"]
    for setting in SETTINGS:
        default = setting.shown_default or f"`{setting.default}`"
        env = f"`{setting.env}=1`" if setting.switch else f"`{setting.env}`"
        doors = " and ".join({APP: "app", CLI: "command line"}[door] for door in setting.doors)
        rows.append(f"| `{setting.flag}` | {env} | {default} | {setting.help} | {doors} |")
    return "\n".join(rows)
