"""The tiny config learns the fake pixel task: greedy held-out success rises by >= 0.3 (fixed seed)."""

import numpy as np

from configs.default import get_config
from vla_rl_jax import trainer


def test_tiny_config_learns_fake_reach(tmp_path):
  c = get_config("variant=tiny")
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 60, 60, 60
  s = trainer.train_and_evaluate(c, str(tmp_path), quiet=True)
  start, end = s["eval"][0], s["eval"][-1]
  assert start["step"] == 0 and end["step"] == 60
  train = [r["success_rate"] for r in s["train"]]
  curve = " ".join(f"{x:.2f}" for x in train)
  assert end["success_rate"] - start["success_rate"] >= 0.3, (start, end, curve)
  # the sampled (temperature 1.6) training success rises too, not just the greedy policy
  assert np.mean(train[-5:]) - np.mean(train[:5]) >= 0.3, curve
  print(f"\nheld-out greedy success {start['success_rate']:.3f} -> {end['success_rate']:.3f}; "
        f"train curve: {curve}")
