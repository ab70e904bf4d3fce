"""Interleaving variants step by step, so that drift of a shared machine hits every variant alike."""

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def rotated(items: Sequence[T], step: int) -> list[T]:
    """`items` in the order for `step`: rotated by one each step, so that no variant always runs right after
    the same other one (and inherits its cache or allocator after-effects)."""
    shift = step % len(items)
    return [*items[shift:], *items[:shift]]
