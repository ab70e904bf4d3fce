"""Chunk-boundary smoothness of an executed action sequence, shared by the delay sweep and the real-time
runtime test (no simulator needed).

Discontinuity = the mean action jump `||a_t - a_{t-1}||` at the steps where a new chunk's first action
executes, divided by the mean step-to-step change at all other steps (inside chunks). 1.0 means chunk
switches are as smooth as the motion itself; larger means the robot jerks at every switch.
"""

from collections.abc import Iterable, Sequence

import numpy as np


def chunk_switch_changes(actions: np.ndarray, chunk_starts: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Executed actions [T, A] and the steps at which chunks start -> (action jumps at chunk switches,
    step-to-step changes inside chunks), both 1-D. A chunk starting at step 0 is no switch: nothing ran
    before it."""
    changes = np.linalg.norm(np.diff(np.asarray(actions, dtype=np.float64), axis=0), axis=-1)
    is_switch = np.zeros(len(changes), dtype=bool)
    for start in chunk_starts:
        if 1 <= start < len(actions):
            is_switch[start - 1] = True  # changes[t - 1] = ||a_t - a_{t-1}||
    return changes[is_switch], changes[~is_switch]


def discontinuity_ratio(switch_jumps: Sequence[float], inside_changes: Sequence[float]) -> float | None:
    """Mean jump at chunk switches over mean change inside chunks; None when either is undefined."""
    if len(switch_jumps) == 0 or len(inside_changes) == 0:
        return None
    inside = float(np.mean(inside_changes))
    if inside == 0.0:
        return None
    return float(np.mean(switch_jumps)) / inside
