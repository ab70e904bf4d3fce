"""The adapter between this policy and LeRobot 0.6's real-time chunking runtime
(`lerobot-rollout --inference.type=rtc`, `lerobot.rollout.inference.rtc`).

The runtime calls `predict_action_chunk(batch, inference_delay=, prev_chunk_left_over=)` from its own
thread, with the previous chunk's unexecuted rest zero-padded to `execution_horizon` rows. The adapter
turns that call into a prefix-conditioned prediction and remembers the chunks it returned, which is how it
tells real left-over rows from the runtime's padding.
"""

import logging
from collections import deque

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor

from .blending import blend_join, default_blend_steps
from .configuration_act_relative_rtc import ACTRelativeRTCConfig
from .inference_inputs import observation_batch_size

# Chunks remembered, newest first: the runtime's left-over is the tail of the newest one. A few older ones
# cover a runtime that failed to queue the newest (e.g. its postprocessor raised).
REMEMBERED_CHUNKS = 4
# A limit warning is logged the first time and then every this many times per kind since `reset`: the
# runtime calls the policy several times a second.
WARN_EVERY = 100


class RTCRuntimeAdapter:
    """Serves the runtime's calls for one policy; `reset` with the policy (a new episode)."""

    def __init__(self, config: ACTRelativeRTCConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._chunks: deque[Tensor] = deque(maxlen=REMEMBERED_CHUNKS)
        self._limit_counts: dict[str, int] = {}

    def predict(
        self,
        policy: PreTrainedPolicy,
        batch: dict[str, Tensor],
        inference_delay: int,
        prev_chunk_left_over: Tensor | None,
    ) -> Tensor:
        """The call of LeRobot 0.6's real-time chunking runtime (`lerobot.rollout.inference.rtc`).

        The runtime passes the unexecuted rest of the previous chunk ([T, A] or [B, T, A], in the space
        `predict_action_chunk` returns) and the number of control steps it expects this inference to take.
        It then drops as many rows of the returned chunk as steps passed while inference ran: the chunk's
        index 0 is the observation's time step.

        - Prefix: the first `d = min(inference_delay, rtc_max_delay, real left-over rows)` left-over actions
          (they execute while inference runs). Returns that prefix followed by the `chunk_size` actions
          predicted after it, [B, d + chunk_size, A], so every predicted action survives the runtime's skip.
        - Padding: the runtime zero-pads the left-over to `execution_horizon` rows
          (`_normalize_prev_actions_length`) without saying how many rows are real. An all-zero row can be a
          legitimate absolute action, so padding is not recognised by its values: the policy remembers the
          chunks it returned here, and the runtime's left-over is always the unconsumed tail of the last one
          followed by padding. Rows past the end of that chunk are padding and are never used. A left-over
          that continues no remembered chunk (a direct call, or after `reset`) is taken as given: pass real
          actions only.
        - Limits: a delay beyond `rtc_max_delay`, or beyond the real left-over (the runtime's queue ran dry),
          conditions on fewer actions; a warning names the limit that was hit.
        - `rtc_inference_mode=discard`: the left-over is not used as a prefix. Returns the chunk predicted
          from the observation alone, [B, chunk_size, A]; the runtime's skip then drops the actions that
          were due while inference ran, which is plain chunking under that delay.
        - `relative_anchor=last_action` (both modes): the chunk's relative actions are measured from the
          action executed just before the left-over, the row before it in the chunk it continues (the last
          row when only padding is left); from the state when there is none (an episode's first call, or a
          left-over that continues no remembered chunk, with a warning).
        - Blending at the join (both modes): the runtime is expected to skip `inference_delay` rows, so the
          new chunk takes over at that row. Its rows `inference_delay + i` (i < k) are blended with the
          real left-over rows for the same steps, where there are any (`blending.blend_join`); the rows
          before, the prefix included, are returned as they are. k is `rtc_blend_steps`, or, when it is
          None (the default), half of the real left-over rows past the join: the runtime's left-over
          overlaps the new chunk whatever `n_action_steps` says.
        """
        if inference_delay < 0:
            raise ValueError(f"inference_delay must be >= 0 control steps, got {inference_delay}.")
        policy.eval()
        prefix_mode = self.config.rtc_inference_mode == "prefix"
        explicit_blend = self.config.rtc_blend_steps
        anchored = self.config.anchors_on_last_action
        batch_size = observation_batch_size(self.config, batch)
        real_rows = last_action = None
        # Discard mode reads the left-over only to blend with it, or for the last executed action.
        if prev_chunk_left_over is not None and (prefix_mode or explicit_blend != 0 or anchored):
            real_rows, last_action = self._real_left_over(prev_chunk_left_over, batch_size)
        anchor = {"last_action": last_action} if anchored else {}
        if prefix_mode:
            chunk = self._predict_after_prefix(policy, batch, inference_delay, real_rows, anchor)
        else:
            chunk = policy.predict_action_chunk(batch, **anchor)
        if real_rows is not None:
            blend_steps = explicit_blend
            if blend_steps is None:  # half of the left-over's real rows past the join, as in select_action
                blend_steps = default_blend_steps(real_rows.shape[1] - inference_delay)
            # Row j of the returned chunk and of the left-over is the same step: both start at the step the
            # observation was taken.
            chunk = blend_join(chunk, real_rows, inference_delay, blend_steps)
        # Remembered as returned (blended): the runtime's next left-over is this chunk's tail.
        self._chunks.appendleft(chunk)
        return chunk

    def _predict_after_prefix(
        self,
        policy: PreTrainedPolicy,
        batch: dict[str, Tensor],
        inference_delay: int,
        real_rows: Tensor | None,
        anchor: dict[str, Tensor | None],
    ) -> Tensor:
        """Prefix mode: the first `min(inference_delay, rtc_max_delay, real rows)` real left-over rows
        [B, d, A] (None: no left-over) followed by the chunk predicted after them, [B, d + chunk_size, A];
        `anchor`: the `last_action` argument of an anchored policy, or nothing."""
        n_real = 0 if real_rows is None else real_rows.shape[1]
        delay = min(inference_delay, self.config.rtc_max_delay, n_real)
        if delay < inference_delay and real_rows is not None:
            self._log_delay_limits(inference_delay, n_real)
        if delay == 0:
            chunk = policy.predict_action_chunk(batch, **anchor)
        else:
            prefix = real_rows[:, :delay]
            predicted = policy.predict_action_chunk(batch, delay=delay, action_prefix=prefix, **anchor)
            chunk = torch.cat([prefix.to(predicted), predicted], dim=1)
        if inference_delay >= chunk.shape[1]:
            self.log_delay_limit(
                "chunk",
                f"Inference delay {inference_delay} is not shorter than the returned chunk ({chunk.shape[1]} "
                "actions): LeRobot's runtime skips all of them. Make inference faster, or train with a "
                "larger chunk_size.",
            )
        return chunk

    def _real_left_over(self, left_over: Tensor, batch_size: int) -> tuple[Tensor, Tensor | None]:
        """The runtime's left-over [T, A] or [B, T, A] -> its real actions [B, k, A], padding removed, and
        the action executed just before them [B, A] (None if unknown)."""
        action_dim = self.config.action_feature.shape[0]
        if left_over.ndim == 2:
            left_over = left_over.unsqueeze(0)
        if left_over.ndim != 3 or left_over.shape[0] != batch_size or left_over.shape[2] != action_dim:
            raise ValueError(
                "prev_chunk_left_over must be [T, action_dim] or [batch, T, action_dim] with "
                f"batch={batch_size} (the observation's) and action_dim={action_dim}, got shape "
                f"{tuple(left_over.shape)}."
            )
        match = self._left_over_rows_in_returned_chunk(left_over)
        n_real, last_executed = (None, None) if match is None else match
        if match is None and self.config.anchors_on_last_action:
            self.log_delay_limit(
                "anchor",
                "relative_anchor=last_action, but prev_chunk_left_over continues no chunk this policy "
                "returned, so the action executed before it is unknown: measuring this chunk from the state.",
            )
        if n_real is None:
            trailing_zero = left_over.shape[1] - n_rows_before_zero_tail(left_over)
            if trailing_zero and self._chunks:
                self.log_delay_limit(
                    "unmatched",
                    "prev_chunk_left_over continues no chunk this policy returned and ends with "
                    f"{trailing_zero} all-zero rows; they are used as real actions. If they are padding, "
                    "pass real rows only.",
                )
            n_real = left_over.shape[1]
        real = left_over[:, :n_real]
        if not torch.isfinite(real).all():
            raise ValueError(
                "prev_chunk_left_over holds NaN or inf values: it must be the unexecuted actions of the "
                "previous chunk, as predict_action_chunk returned them."
            )
        return real, last_executed

    def _left_over_rows_in_returned_chunk(self, left_over: Tensor) -> tuple[int, Tensor | None] | None:
        """How many leading rows of `left_over` [B, T, A] continue a chunk returned to the runtime (newest
        first): it must equal that chunk from some row on, up to the chunk's end; and that chunk's row
        before them [B, A], the action executed last (None when they start at its first row). None if no
        chunk matches."""
        n_rows = left_over.shape[1]
        if n_rows == 0:
            newest = self._chunks[0][:, -1].to(left_over) if self._chunks else None
            return 0, newest
        for chunk in self._chunks:
            if chunk.shape[0] != left_over.shape[0] or chunk.shape[2] != left_over.shape[2]:
                continue
            chunk = chunk.to(left_over)
            length = chunk.shape[1]
            # Window s holds chunk rows s .. s + T - 1; rows past the chunk's end are NaN and not compared.
            tail = chunk.new_full((chunk.shape[0], n_rows, chunk.shape[2]), float("nan"))
            windows = torch.cat([chunk, tail], dim=1).unfold(1, n_rows, 1)[:, :length]  # [B, length, A, T]
            equal = (windows == left_over.transpose(1, 2).unsqueeze(1)).all(dim=2).all(dim=0)  # [length, T]
            rows = torch.arange(n_rows, device=chunk.device)
            inside = rows.unsqueeze(0) < (length - torch.arange(length, device=chunk.device)).unsqueeze(1)
            matches = (equal | ~inside).all(dim=1).nonzero()
            if len(matches):
                start = int(matches[0])
                return min(n_rows, length - start), chunk[:, start - 1] if start > 0 else None
            # The whole chunk was consumed: the runtime passes padding only.
            if not left_over.any():
                return 0, chunk[:, -1]
        return None

    def _log_delay_limits(self, inference_delay: int, n_real: int) -> None:
        max_delay = self.config.rtc_max_delay
        if inference_delay > max_delay:
            self.log_delay_limit(
                "rtc_max_delay",
                f"Inference delay {inference_delay} exceeds rtc_max_delay={max_delay}, the largest delay "
                f"this policy was trained on: conditioning on {min(max_delay, n_real)} committed actions. "
                "Make inference faster, or train with a larger --policy.rtc_max_delay.",
            )
        if n_real < min(inference_delay, max_delay):
            self.log_delay_limit(
                "left_over",
                f"Inference delay {inference_delay}, but only {n_real} real actions were left in the "
                "runtime's queue (it ran dry): conditioning on those. Raise --inference.queue_threshold so "
                "that the next chunk is requested earlier.",
            )

    def log_delay_limit(self, kind: str, message: str) -> None:
        """A warning the first time and every `WARN_EVERY`-th time per kind since `reset`."""
        count = self._limit_counts[kind] = self._limit_counts.get(kind, 0) + 1
        if count == 1 or count % WARN_EVERY == 0:
            logging.warning("%s (%d time(s) since reset)", message, count)


def n_rows_before_zero_tail(rows: Tensor) -> int:
    """[B, T, A] -> the number of rows before the trailing run of rows that are zero in every sample."""
    nonzero = rows.flatten(start_dim=2).any(dim=-1).any(dim=0).nonzero()  # [T] -> indices of nonzero rows
    return 0 if len(nonzero) == 0 else int(nonzero[-1]) + 1
