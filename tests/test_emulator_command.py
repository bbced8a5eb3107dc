"""The emulator command: a flag with help for every knob, presets, and no keys on screen."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

import attrs
import pytest
from support.emulator_http import emulator_command

from kling_async.emulator import EmulatorConfig, build_parser, config_from_args, main
from kling_async.emulator._command import banner

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-secret-do-not-print-42"


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_every_flag_has_help_and_one_default_at_most() -> None:
    """Each flag has help text; none shows "(default: None)" or two defaults."""
    parser = build_parser()
    for action in _options(parser):
        assert action.help and len(action.help) > 10, action.option_strings
        assert action.help.count("(default:") <= 1, action.option_strings
    text = parser.format_help()
    assert "(default: None)" not in text
    assert "%(default)" not in text
    assert "--progress-shape" in text and "eased (fast start, slow finish)" in text


def test_every_config_field_has_a_flag() -> None:
    """Every EmulatorConfig field is reachable from the command line."""
    dests = {action.dest for action in _options(build_parser())}
    assert {field.name for field in attrs.fields(EmulatorConfig)} <= dests


def test_flags_left_out_keep_the_config_defaults() -> None:
    """No flags give the default config; the preset alone gives the preset."""
    parse = build_parser().parse_args
    assert config_from_args(parse([])) == EmulatorConfig()
    assert config_from_args(parse(["--preset", "realistic"])) == EmulatorConfig.realistic()
    args = parse(["--api-key", "a", "--api-key", "b", "--quirks", "--fail-marker", "",
                  "--max-concurrent", "3", "--clock-offset", "-2.5", "--seed", "4"])  # fmt: skip
    config = config_from_args(args)
    assert config.api_keys == frozenset({"a", "b"})
    assert config.quirks and config.fail_marker is None
    assert (config.max_concurrent, config.clock_offset, config.seed) == (3, -2.5, 4)


def test_invalid_values_are_refused_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad combination exits 2 with a message naming the field."""
    with pytest.raises(SystemExit) as exited:
        main(["--run-distribution", "uniform", "--spread", "1.5"])
    assert exited.value.code == 2
    assert "spread" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--max-concurrent", "0"])
    assert "max_concurrent" in capsys.readouterr().err


def test_banner_counts_keys_instead_of_printing_them() -> None:
    """The startup line says how many keys are accepted, never which."""
    config = EmulatorConfig(api_keys=(SECRET, "sk-other"), time_scale=50)
    line = banner(config, "http://127.0.0.1:1", "http://127.0.0.1:2")
    assert SECRET not in line
    assert "2 API keys accepted" in line
    assert "time_scale=50" in line
    assert "1 API key accepted" in banner(EmulatorConfig(api_keys=SECRET), "a", "b")
    assert "any non-empty Bearer token" in banner(EmulatorConfig(), "a", "b")
    assert SECRET not in repr(EmulatorConfig(api_keys=SECRET))


@pytest.mark.slow
async def test_command_banner_hides_the_keys() -> None:
    """The running command prints its URLs, then a banner without the accepted key."""
    flags = ("--api-key", SECRET, "--preset", "realistic", "--time-scale", "100")
    async with emulator_command(*flags) as command:
        process = command.process
        assert process.stdout is not None and process.stderr is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("KLING_EMULATOR_URL=")
        shown = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
        assert shown.startswith("kling emulator serving on")
        assert SECRET not in shown
        assert "1 API key accepted" in shown
        assert re.search(r"clock_offset=3\.0", shown)
    out, err = command.rest
    assert SECRET.encode() not in out + err
    assert process.returncode == 0
