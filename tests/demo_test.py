"""The pretrained checkpoint `make demo` starts from ships with the repository and loads into the
demo's SFT config (so a model change that breaks it is caught here, not at the user's first demo)."""

import json
import os

import jax
import numpy as np

from configs import libero_sft
from vla_rl_jax import config as config_lib
from vla_rl_jax import trainer
from vla_rl_jax.builders import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "vla_rl_jax", "assets", "pretrained", "tiny")


def test_the_shipped_pretrained_checkpoint_is_pretraining_only_and_initialises_the_demo_s_sft():
  with open(os.path.join(SHIPPED, "config.json")) as f:
    saved = json.load(f)
  # pretrained on the procedural tasks, none of LIBERO's 40 (envs/tasks/pretrain_tasks.py refuses
  # any of theirs), not on the task the demo fine-tunes and reinforces
  assert saved["env"]["name"] == "libero_pretrain"
  c = libero_sft.get_config("suite=libero_bowl_on_plate,demos_per_task=1,variant=tiny")
  c.train.init_from = SHIPPED
  cfg = config_lib.resolve(c, jax.device_count())
  b = build(cfg)
  step, params = trainer.init_params(cfg, b)
  assert step > 0
  fresh = b.init_fn()[0].params
  leaves = jax.tree_util.tree_leaves(params)
  assert len(leaves) == len(jax.tree_util.tree_leaves(fresh))
  assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
  # trained: no weight matrix is still its initial draw
  moved = [float(np.abs(np.asarray(a) - np.asarray(f)).max())
           for a, f in zip(leaves, jax.tree_util.tree_leaves(fresh)) if np.ndim(a) >= 2]
  assert min(moved) > 1e-3, moved
