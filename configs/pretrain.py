"""Pretraining (launch.pretrain): behaviour cloning on scripted-expert demonstrations of procedural
tabletop tasks that are none of LIBERO's 40 (env libero_pretrain, envs/tasks/pretrain_tasks.py):
`get_config("num_tasks=16,variant=tiny")`.

Keys of the argument: num_tasks (default 16), variant (tiny|small|base|7b). It is
configs/libero_sft.py's config with env libero_pretrain, so the model (image size, chunk, text
length, action and proprio sizes) is the one SFT and RL on the four LIBERO suites build:
`launch.sft --config.train.init_from=PRETRAIN_WORKDIR` loads these parameters.
sft.demos is left empty: launch.pretrain records the demonstrations into WORKDIR/demos.
"""

import ml_collections

from configs import default, libero_sft
from vla_rl_jax.config import VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = default.parse_arg(arg, {"num_tasks": None, "variant": VARIANTS})
  variant = args.get("variant", "tiny")
  try:
    num_tasks = int(args.get("num_tasks", "16"))
  except ValueError:
    raise ValueError(f"config argument num_tasks={args['num_tasks']!r} must be an integer") from None
  c = libero_sft.get_config(f"suite=libero_pretrain,variant={variant}")
  c.env.kwargs.num_tasks = num_tasks     # checked by the env's schema (1..MAX_TASKS) at resolve
  c.sft.demos = ""
  # about as many passes over the data as libero_sft's one-demonstration runs at 2 demos per task
  c.sft.num_steps = 2000
  return c
