"""The one table of settings: both doors read it, and the README's table is made from it."""

import argparse
from dataclasses import fields

import pytest

import app
import cli
from helpers import ROOT
from settings import APP, CLI, SETTINGS, Config, add_arguments, config_from, default_config, parse_size, readme_table


def test_the_readme_shows_the_table_of_settings_as_it_is():
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<!-- settings: made from settings.readme_table() -->\n")[1].split("\n<!-- /settings -->")[0]
    assert shown == readme_table()


def test_every_setting_is_a_field_of_the_config_and_each_door_has_its_flags():
    assert [setting.name for setting in SETTINGS] == [field.name for field in fields(Config)]
    app_flags = {action.dest for action in _parser(APP)._actions}
    cli_flags = {action.dest for action in cli.build_parser()._actions}
    for setting in SETTINGS:
        assert (setting.name in app_flags) == (APP in setting.doors), setting.name
        assert (setting.name in cli_flags) == (CLI in setting.doors), setting.name


def test_a_flag_wins_over_its_variable_which_wins_over_the_default(monkeypatch):
    assert app.parse_settings([]).devices == "auto"
    monkeypatch.setenv("WHISPER_DEVICES", "cpu*2")
    assert app.parse_settings([]).devices == "cpu*2"
    assert app.parse_settings(["--devices", "cpu"]).devices == "cpu"
    # The command line reads the same variables for the settings it shares with the app.
    parser = cli.build_parser()
    assert config_from(parser.parse_args(["talk.wav"]), parser).devices == "cpu*2"
    monkeypatch.setenv("WHISPER_MULTILINGUAL", "1")
    assert app.parse_settings([]).multilingual and config_from(parser.parse_args([]), parser).multilingual


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("WHISPER_MAX_FILE_SIZE", "lots", "WHISPER_MAX_FILE_SIZE: a size is a number with kb, mb or gb"),
        ("WHISPER_BATCH_SIZE", "0", "WHISPER_BATCH_SIZE: batch size must be auto or a whole number"),
        ("WHISPER_TRUSTED_PROXIES", "10.0.0.0/33", "WHISPER_TRUSTED_PROXIES:"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch, capsys, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit):
        app.parse_settings([])
    assert message in capsys.readouterr().err


def test_sizes_read_as_people_write_them():
    assert parse_size("2gb") == 2 * 1024**3 and parse_size("500 MB") == 500 * 1024**2
    assert parse_size("64kb") == 65536 and parse_size("1000") == 1000 and parse_size("1.5mb") == 1572864


def test_the_defaults_are_those_of_the_table():
    config = default_config()
    assert config.port == 7860 and config.max_file_size == 2 * 1024**3 and config.batch_size is None
    assert config.model == () and config.login is None and config.watch_formats == ("srt",)


def _parser(door: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser, door)
    return parser
