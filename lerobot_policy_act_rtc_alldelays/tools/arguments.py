"""Command-line arguments shared by the tools, so that each is written the same way in every command."""

import argparse
from collections.abc import Sequence


def comma_separated_delays(text: str) -> list[int]:
    """'0,4,8' -> [0, 4, 8]: one value of `--delays`, refusing anything but non-negative integers."""
    try:
        delays = [int(delay) for delay in text.split(",") if delay.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "delays are non-negative integers, separated by commas or spaces (e.g. 0,4,8 or 0 4 8), "
            f"got '{text}'"
        ) from None
    if any(delay < 0 for delay in delays):
        raise argparse.ArgumentTypeError(f"delays must be >= 0, got '{text}'")
    return delays


class _Flatten(argparse.Action):
    """Joins the lists of several `comma_separated_delays` values into one."""

    def __call__(self, parser, namespace, values: Sequence[list[int]], option_string=None) -> None:
        setattr(namespace, self.dest, [delay for value in values for delay in value])


def add_delays_argument(parser: argparse.ArgumentParser, default: list[int] | None, help: str) -> None:
    """`--delays`, given as `0 4 8`, `0,4,8` or both mixed (the tools take either)."""
    parser.add_argument(
        "--delays", nargs="+", type=comma_separated_delays, action=_Flatten, default=default, help=help
    )
