"""One definition of a dead latent (aen_lib.evaluation.dead): one threshold everywhere, named definitions with their windows."""

from __future__ import annotations

import inspect

import pytest
import torch


def test_one_threshold_everywhere():
    from aen_lib.evaluation import dead, features, metrics
    from aen_lib.training.train import TrainConfig, Trainer  # noqa: F401  (the trainer builds its trackers from aen_lib.evaluation.dead)

    assert metrics.DEAD_THRESHOLD is dead.DEAD_THRESHOLD == 1e-12
    assert metrics.DeadLatentTracker is dead.DeadLatentTracker and features.FiringTracker is dead.FiringTracker
    assert metrics.latent_reach is dead.latent_reach
    for fn, arg in ((dead.latent_reach, "thresh"), (metrics.recovery_metrics, "thresh"),
                    (metrics.support_metrics, "thresh"), (metrics.l0, "thresh"),
                    (features.firing_statistics, "threshold")):
        assert inspect.signature(fn).parameters[arg].default == dead.DEAD_THRESHOLD, fn.__name__
    assert dead.DeadLatentTracker(4, window=2).threshold == dead.FiringTracker(4).threshold == dead.DEAD_THRESHOLD


def test_an_activation_between_the_old_and_the_new_threshold_now_fires():
    """A ReLU code of 1e-9 fires under 1e-12 (it did not under the recovery measures' old 1e-6)."""
    from aen_lib import SAE, SAEConfig
    from aen_lib.evaluation.dead import latent_reach

    sae = SAE(SAEConfig(d_in=2, d_sae=2, architecture="relu_l1", l1=0.01))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.tensor([[1e-9, 0.0], [2e-9, -1.0]])
    assert latent_reach(sae, x)["eval_dead_pct"] == 50.0  # latent 0 fires, latent 1 never
    assert latent_reach(sae, x, thresh=1e-6)["eval_dead_pct"] == 100.0


def test_definitions_are_named_with_their_window():
    from aen_lib.evaluation.dead import DEAD_DEFINITIONS, dead_definition_name

    assert set(DEAD_DEFINITIONS) == {"window", "since_last", "silent_heldout", "out_of_reach"}
    assert dead_definition_name("window", 2_048_000) == "no firing in the last complete window of 2,048,000 tokens"
    assert "8,192 samples" in dead_definition_name("out_of_reach", 8192, unit="samples")
    with pytest.raises(ValueError, match="unknown dead-latent definition"):
        dead_definition_name("inactive", 10)
