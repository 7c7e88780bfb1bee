"""Behaviour cloning (launch.sft) on scripted-expert demonstrations of a LIBERO-MJX suite:
`get_config("suite=libero_spatial,demos_per_task=1,variant=tiny")`.

Keys of the argument: suite (any registered env; default libero_spatial), demos_per_task (default
1, the paper's one-demonstration regime), variant (tiny|small|base|7b), demos (the demonstration
directory; default demos/<suite>_<demos_per_task>demo, where the README's make_demos command writes
them). Everything but the `sft` section is configs/default.py's get_config for the same variant and
env, so the model, the env preset and all RL needs are identical: RL (launch.train with
--config.train.init_from=SFT_WORKDIR) loads these parameters and checks that its model matches.
"""

import os

import ml_collections

from configs import default
from vla_rl_jax.config import VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = default.parse_arg(arg, {"suite": None, "demos_per_task": None, "variant": VARIANTS,
                                 "demos": None})
  suite = args.get("suite", "libero_spatial")
  try:
    per_task = int(args.get("demos_per_task", "1"))
  except ValueError:
    raise ValueError(f"config argument demos_per_task={args['demos_per_task']!r} must be an "
                     f"integer (demonstrations per task)") from None
  if per_task < 1:
    raise ValueError(f"config argument demos_per_task={per_task} must be >= 1")
  variant = args.get("variant", "tiny")
  c = default.get_config(f"variant={variant},env={suite}")
  c.sft = ml_collections.ConfigDict()
  c.sft.demos = args.get("demos", os.path.join("demos", f"{suite}_{per_task}demo"))
  # about 20 passes over a one-demonstration-per-task suite (10 tasks x ~100-300 steps) at batch 64
  c.sft.num_steps = 2000 * min(per_task, 5)
  c.sft.batch_size = 64
  c.sft.learning_rate = 1e-4 if variant in ("base", "7b") else 1e-3
  c.sft.log_every = 20
  c.sft.checkpoint_every = 500
  c.sft.max_dataset_mb = 1024.0    # the dataset is held on every device (vla_rl_jax/sft.py)
  return c
