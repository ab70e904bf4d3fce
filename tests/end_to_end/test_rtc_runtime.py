"""LeRobot 0.6's real-time chunking runtime driving this policy: its action queue with a padded left-over,
then `lerobot-rollout --inference.type=rtc` itself against a simulated robot (LeRobot 0.6.1 only)."""

import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_policy, set_unit_stats, tiny_config

rtc_engine = pytest.importorskip(
    "lerobot.rollout.inference.rtc", reason="LeRobot 0.4.x has no real-time runtime (lerobot-rollout is 0.6+)"
)

from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.policies.rtc import ActionQueue, RTCConfig  # noqa: E402
from lerobot.robots import Robot, RobotConfig  # noqa: E402

from lerobot_policy_act_rtc_alldelays import (  # noqa: E402
    ACTRelativeRTCAllDelaysPolicy,
    make_act_relative_rtc_alldelays_pre_post_processors,
)
from lerobot_policy_act_rtc_alldelays.tools.continuity import (  # noqa: E402
    chunk_switch_changes,
    discontinuity_ratio,
)

EXECUTION_HORIZON = 10


def pad_like_the_runtime(left_over: torch.Tensor, length: int = EXECUTION_HORIZON) -> torch.Tensor:
    """LeRobot's own padding of the left-over (a private helper of its RTC engine, fenced here: this test
    fails loudly if LeRobot renames it or stops zero-padding)."""
    padded = rtc_engine._normalize_prev_actions_length(left_over, target_steps=length)
    assert padded.shape[0] == length and not padded[left_over.shape[0] :].any()
    return padded


def _observation(policy):
    generator = torch.Generator().manual_seed(0)
    return {
        "observation.state": torch.randn(1, 4, generator=generator) + 50.0,
        "observation.images.wrist": torch.rand(1, 3, 64, 64, generator=generator),
    }


def _engine_cycle(policy, observation, queue: ActionQueue, estimated_delay: int, measured_delay: int):
    """One inference of the engine's loop (`RTCInferenceEngine._rtc_loop`) with `measured_delay` actions
    popped by the robot meanwhile; returns what the robot got during inference and the returned chunk."""
    index_before = queue.get_action_index()
    left_over = queue.get_left_over()
    if left_over is not None:
        left_over = pad_like_the_runtime(left_over)
    chunk = policy.predict_action_chunk(
        observation, inference_delay=estimated_delay, prev_chunk_left_over=left_over
    )
    executed = [queue.get() for _ in range(measured_delay)]
    actions = chunk.squeeze(0)
    queue.merge(actions.clone(), actions.clone(), measured_delay, index_before)
    return executed, chunk


@pytest.mark.parametrize("n_left", [0, 1])
@pytest.mark.parametrize("measured_delay", [1, 3])
@pytest.mark.parametrize("relative", [True, False], ids=["relative", "normalized"])
def test_the_runtime_queue_never_executes_padding(n_left, measured_delay, relative):
    """The queue nearly or fully empty when inference starts; the latency estimate (3) above what is left.
    Every action the robot then gets is a real one (from a chunk), never a padding row: with relative
    actions a zero row would be a joint target of 0, without them the dataset's mean action."""
    policy = make_policy(rtc_max_delay=3, chunk_size=5, predict_relative_actions=relative)
    observation = _observation(policy)
    queue = ActionQueue(RTCConfig(execution_horizon=EXECUTION_HORIZON))
    _, first = _engine_cycle(policy, observation, queue, 0, 0)
    for _ in range(first.shape[1] - n_left):
        queue.get()
    real_left = queue.get_left_over()
    assert real_left.shape[0] == n_left

    executed, chunk = _engine_cycle(policy, observation, queue, 3, measured_delay)
    while (action := queue.get()) is not None:
        executed.append(action)

    # The answer to the padded left-over is the answer to its real rows alone.
    policy_again = make_policy(rtc_max_delay=3, chunk_size=5, predict_relative_actions=relative)
    expected = policy_again.predict_action_chunk(
        observation, inference_delay=3, prev_chunk_left_over=real_left
    )
    assert torch.equal(chunk, expected)
    real_rows = torch.cat([first.squeeze(0), chunk.squeeze(0)[n_left:]])
    for action in executed:
        if action is None:  # the queue ran dry during inference: the robot holds
            continue
        assert torch.isfinite(action).all()
        assert (action == real_rows).all(dim=1).any(), f"{action} is no action of any chunk"
        assert action.abs().sum() > 0
    assert chunk.shape[1] == n_left + policy.config.chunk_size


# ---- lerobot-rollout --inference.type=rtc against a simulated robot ---------------------------------------
# The runtime measures each inference's delay as ceil(latency x fps) control steps. The test sets the latency
# by sleeping inside the policy call until 0.1 step past `delay - 1` steps: that bounds the measured delay
# from below whatever the load, and leaves 0.9 step (90 ms at 10 fps) for the runtime's own processing
# around the call before it reads one step more. On a machine so loaded that the call itself outlasts its
# scheduled time, the delays come out larger; the assertions only need two distinct ones.
FPS = 10
JOINTS = [f"joint_{i}.pos" for i in range(6)]
HOME = np.array([100.0, -80.0, 60.0, 30.0, -50.0, 90.0])  # far from 0: a zero row would be a huge jump
IMAGE_SIZE = 32
CHUNK_SIZE = 10
RTC_MAX_DELAY = 5
QUEUE_THRESHOLD = 6  # the next chunk is requested with 6 actions left: more than the largest delay
DELAY_SCHEDULE = [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]  # control steps each inference takes, in order
SLEEP_TO = 0.9  # each call lasts at least `delay - SLEEP_TO` control steps
# Each inference: the next one is requested 4 steps after a chunk arrives (10 actions, threshold 6), then
# lasts `delay` steps: 90 steps for the schedule, 9 s at 10 fps.
DURATION_S = 10.5


SENT: list[np.ndarray] = []  # every action the simulated robot received, in order


@RobotConfig.register_subclass("lagged_sim_arm")
@dataclass(kw_only=True)
class LaggedSimArmConfig(RobotConfig):
    pass


class LaggedSimArm(Robot):
    """Six joints that move halfway to the commanded position at each command, and a wrist camera whose
    image follows the joints."""

    config_class = LaggedSimArmConfig
    name = "lagged_sim_arm"

    def __init__(self, config: LaggedSimArmConfig):
        super().__init__(config)
        self.state = HOME.copy()
        self.connected = False

    @property
    def observation_features(self) -> dict:
        return {**dict.fromkeys(JOINTS, float), "wrist": (IMAGE_SIZE, IMAGE_SIZE, 3)}

    @property
    def action_features(self) -> dict:
        return dict.fromkeys(JOINTS, float)

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, calibrate: bool = True) -> None:
        self.connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        brightness = np.clip(128 + self.state[:3].mean(), 0, 255)
        image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), brightness, dtype=np.uint8)
        joints = {joint: float(value) for joint, value in zip(JOINTS, self.state, strict=True)}
        return {**joints, "wrist": image}

    def send_action(self, action: dict) -> dict:
        command = np.array([action[joint] for joint in JOINTS])
        SENT.append(command)
        self.state = self.state + 0.5 * (command - self.state)
        return action

    def disconnect(self) -> None:
        self.connected = False


@pytest.fixture(scope="module")
def rollout_checkpoint(tmp_path_factory) -> Path:
    """A tiny random policy saved with both processors, sized for the simulated arm."""
    config = tiny_config(
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,)),
            "observation.images.wrist": PolicyFeature(
                type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)
            ),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))},
        chunk_size=CHUNK_SIZE,
        n_action_steps=CHUNK_SIZE,
        rtc_max_delay=RTC_MAX_DELAY,
    )
    torch.manual_seed(0)
    policy = ACTRelativeRTCAllDelaysPolicy(config)
    set_unit_stats(policy)
    path = tmp_path_factory.mktemp("rollout") / "pretrained_model"
    policy.save_pretrained(path)
    image_stats = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    for processor in make_act_relative_rtc_alldelays_pre_post_processors(
        config, dataset_stats={"observation.images.wrist": image_stats}
    ):
        processor.save_pretrained(path)
    return path


@dataclass
class RuntimeRecord:
    calls: list = field(default_factory=list)  # per runtime call: inference_delay, left-over, delay, chunk
    real_left_over: list = field(default_factory=list)  # rows of each left-over before the runtime pads it
    merges: list = field(default_factory=list)  # (measured delay, actions) per merge into the queue


def _instrument(monkeypatch, record: RuntimeRecord) -> None:
    """Slows the policy's runtime calls to the DELAY_SCHEDULE and records what the runtime and the policy
    exchange; everything else runs as lerobot-rollout runs it."""
    predict = ACTRelativeRTCAllDelaysPolicy.predict_action_chunk

    def slowed(self, batch, delay=0, action_prefix=None, *, inference_delay=None, prev_chunk_left_over=None):
        if inference_delay is None and prev_chunk_left_over is None:  # the policy's own inner call
            record.calls[-1]["delay"] = delay
            return predict(self, batch, delay=delay, action_prefix=action_prefix)
        started = time.perf_counter()
        call = {"inference_delay": inference_delay, "left_over": prev_chunk_left_over}
        record.calls.append(call)
        chunk = predict(
            self, batch, inference_delay=inference_delay, prev_chunk_left_over=prev_chunk_left_over
        )
        call["chunk"] = chunk.squeeze(0).clone()
        # The runtime measures ceil(latency * fps): at least `steps` once the call lasts `steps - SLEEP_TO`.
        steps = DELAY_SCHEDULE[min(len(record.calls) - 1, len(DELAY_SCHEDULE) - 1)]
        time.sleep(max(0.0, (steps - SLEEP_TO) / FPS - (time.perf_counter() - started)))
        return chunk

    monkeypatch.setattr(ACTRelativeRTCAllDelaysPolicy, "predict_action_chunk", slowed)

    pad = rtc_engine._normalize_prev_actions_length

    def recording_pad(prev_actions, target_steps):
        record.real_left_over.append(prev_actions.clone())
        return pad(prev_actions, target_steps)

    monkeypatch.setattr(rtc_engine, "_normalize_prev_actions_length", recording_pad)

    merge = ActionQueue.merge

    def recording_merge(self, original_actions, processed_actions, real_delay, action_index_before=None):
        record.merges.append((real_delay, processed_actions.clone()))
        return merge(self, original_actions, processed_actions, real_delay, action_index_before)

    monkeypatch.setattr(ActionQueue, "merge", recording_merge)


@pytest.fixture
def keep_process_state():
    """lerobot-rollout installs signal handlers and logging handlers for its process: restore them."""
    signals = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")]
    handlers = {sig: signal.getsignal(sig) for sig in signals}
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    root.handlers[:], root.level = root_handlers, root_level


def _index_of(rows: list[np.ndarray], row: np.ndarray) -> int | None:
    return next((i for i, sent in enumerate(rows) if np.array_equal(sent, row)), None)


def test_lerobot_rollout_rtc_drives_the_policy_end_to_end(
    rollout_checkpoint, tmp_path, monkeypatch, keep_process_state
):
    from lerobot.scripts import lerobot_rollout

    record = RuntimeRecord()
    _instrument(monkeypatch, record)
    SENT.clear()
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lerobot-rollout",
            "--strategy.type=base",
            f"--policy.path={rollout_checkpoint}",
            "--robot.type=lagged_sim_arm",
            f"--robot.calibration_dir={tmp_path / 'calibration'}",
            "--inference.type=rtc",
            f"--inference.rtc.execution_horizon={EXECUTION_HORIZON}",
            f"--inference.queue_threshold={QUEUE_THRESHOLD}",
            f"--fps={FPS}",
            f"--duration={DURATION_S}",
            "--device=cpu",
            "--play_sounds=false",
            "--return_to_initial_position=false",
        ],
    )
    lerobot_rollout.main()
    sent = list(SENT)

    calls = [c for c in record.calls if "chunk" in c]
    merges = record.merges[: len(calls)]
    assert len(merges) >= len(DELAY_SCHEDULE) - 2, f"only {len(merges)} inferences ran"
    assert len(sent) > 60, f"the robot received only {len(sent)} actions"

    # 1. Every action sent is finite and is a predicted action of some chunk (a committed prefix row is a
    #    predicted action of an earlier chunk): never a padding row, never anything else.
    predicted = np.concatenate(
        [c["chunk"][c["delay"] if c["left_over"] is not None else 0 :].numpy() for c in calls]
    )
    for action in sent:
        assert np.isfinite(action).all()
        assert (predicted == action.astype(np.float32)).all(axis=1).any(), f"{action} was never predicted"

    # 2. The policy conditions on min(runtime delay, rtc_max_delay, real left-over rows) ...
    with_left_over = [c for c in calls if c["left_over"] is not None]
    for call, real in zip(with_left_over, record.real_left_over, strict=False):
        assert call["delay"] == min(call["inference_delay"], RTC_MAX_DELAY, real.shape[0])
    # ... and that is the delay the runtime then measures, whenever its estimate was right (the estimate is
    # the largest latency so far, so it lags by one inference each time the latency grows).
    agreeing = [
        (c, measured)
        for c, (measured, _) in zip(calls, merges, strict=False)
        if c["left_over"] is not None and c["inference_delay"] == measured
    ]
    assert all(call["delay"] == measured for call, measured in agreeing)
    # At least two distinct real delays of 2 or more: which ones depends on how loaded the machine is.
    agreeing_delays = [measured for _, measured in agreeing]
    assert len(agreeing) >= 4 and len({d for d in agreeing_delays if d >= 2}) >= 2, agreeing_delays

    # 3. While inference ran, the robot executed the prefix the policy was conditioned on (in order, from its
    #    first action), then the new prediction. The runtime drops ceil(latency * fps) rows of the new chunk
    #    while its control loop may have ticked fewer times (it logs "Indexes diff is not equal to real
    #    delay"; once less on an idle machine, more on a loaded one): the prefix's last actions are then
    #    skipped, a runtime property that no policy can change.
    sent32 = [action.astype(np.float32) for action in sent]
    chunk_starts = []
    for call, _ in agreeing:
        delay, chunk = call["delay"], call["chunk"].numpy()
        start = _index_of(sent32, chunk[delay])
        first = _index_of(sent32, chunk[0])
        if start is None or first is None:  # the run ended before this chunk executed
            continue
        executed_prefix = start - first
        assert 0 < executed_prefix <= delay, (executed_prefix, delay)
        assert all(np.array_equal(sent32[first + i], chunk[i]) for i in range(executed_prefix))
        chunk_starts.append(start)
    assert len(chunk_starts) >= len(agreeing) - 1
    for previous, call, real in zip(calls, calls[1:], record.real_left_over, strict=False):
        assert call["left_over"] is not None
        tail = previous["chunk"][len(previous["chunk"]) - len(real) :]
        assert torch.equal(real, tail), "the left-over is not the unexecuted tail of the last chunk"
        assert real.abs().mean() > 10  # absolute joint targets near HOME, not relative offsets near 0

    # 4. Chunk joins stay continuous: the delay sweep's discontinuity (a zero row would give hundreds).
    jumps, inside = chunk_switch_changes(np.stack(sent), chunk_starts)
    ratio = discontinuity_ratio(jumps, inside)
    assert ratio is not None and ratio < 3.0, ratio
    assert math.isfinite(ratio)
