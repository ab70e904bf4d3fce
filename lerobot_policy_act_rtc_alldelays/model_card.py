"""The model card pushed to the Hub with a checkpoint (`--policy.push_to_hub=true`).

LeRobot's card template knows its own policies only; for a plugin it renders a generic card that never
says the plugin must be installed to load the checkpoint. This section goes at the top of that card.
"""

from huggingface_hub import ModelCard

DISTRIBUTION = "lerobot_policy_act_rtc_alldelays"
PLUGIN_TAG = "act-relative-rtc"

PLUGIN_SECTION = """\
## This checkpoint needs the `{distribution}` plugin

This is an **ACT policy with relative actions and training-time real-time chunking** (policy type
`{policy_type}`), a LeRobot policy plugin. It predicts chunks of actions relative to
`observation.state`, conditioned on the actions that execute while inference runs, so that consecutive
chunks join smoothly on a robot whose inference takes several control steps. It was trained on every
inference delay `0..rtc_max_delay` of every sample.

LeRobot loads it only with the plugin installed (LeRobot finds it by its distribution name):

```bash
pip install {distribution}
lerobot-eval --policy.path={repo_id} ...          # or lerobot-rollout / lerobot-record
```

```python
from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy

policy = ACTRelativeRTCAllDelaysPolicy.from_pretrained("{repo_id}")
```

"""


def add_plugin_section(card: ModelCard, policy_type: str, repo_id: str | None) -> ModelCard:
    """LeRobot's card with the plugin's section before its body and the plugin's tag in its metadata."""
    section = PLUGIN_SECTION.format(
        distribution=DISTRIBUTION, policy_type=policy_type, repo_id=repo_id or "<your-hub-user>/<repo>"
    )
    card.data.tags = sorted({*(card.data.tags or []), PLUGIN_TAG, DISTRIBUTION})
    return ModelCard(f"---\n{card.data.to_yaml()}\n---\n\n{section}{card.text.lstrip()}")
