"""The command-line arguments every tool shares."""

import argparse

import pytest

from lerobot_policy_act_rtc_alldelays.tools.arguments import add_delays_argument


def delays_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_delays_argument(parser, [0], "")
    return parser


@pytest.mark.parametrize("given", [["0,4,8"], ["0", "4", "8"], ["0,4", "8"]])
def test_delays_are_taken_comma_or_space_separated(given):
    assert delays_parser().parse_args(["--delays", *given]).delays == [0, 4, 8]


def test_delays_default_when_not_given():
    assert delays_parser().parse_args([]).delays == [0]


@pytest.mark.parametrize(
    ("given", "message"), [("0,four", "separated by commas or spaces (e.g. 0,4,8"), ("-1", "must be >= 0")]
)
def test_a_delay_other_than_a_non_negative_integer_is_refused_saying_what_is_accepted(given, message, capsys):
    with pytest.raises(SystemExit):
        delays_parser().parse_args([f"--delays={given}"])
    assert message in capsys.readouterr().err
