"""The model card that `--policy.push_to_hub=true` uploads beside a checkpoint, rendered offline."""

import pytest
from conftest import make_policy
from huggingface_hub import ModelCard


@pytest.fixture
def card(monkeypatch) -> str:
    # ModelCard.validate asks the Hub: offline, it is skipped.
    monkeypatch.setattr(ModelCard, "validate", lambda self, *args, **kwargs: None)
    policy = make_policy(repo_id="me/so101_act_rtc")
    return str(policy.generate_model_card("me/so101_dataset", policy.config.type, None, ["so101"]))


def test_the_card_keeps_lerobots_metadata_and_body(card):
    assert "datasets: me/so101_dataset" in card
    assert "library_name: lerobot" in card
    assert "# Model Card for act_relative_rtc_alldelays" in card


def test_the_card_says_how_to_install_the_plugin_before_loading_the_checkpoint(card):
    install = card.index("pip install lerobot_policy_act_rtc_alldelays")
    assert install < card.index("# Model Card for")
    assert "--policy.path=me/so101_act_rtc" in card
    assert 'from_pretrained("me/so101_act_rtc")' in card


def test_the_card_says_what_the_policy_is_and_is_tagged_with_the_plugin(card):
    assert "relative actions and training-time real-time chunking" in card
    metadata = card.split("---")[1]
    assert "lerobot_policy_act_rtc_alldelays" in metadata
    assert "so101" in metadata
