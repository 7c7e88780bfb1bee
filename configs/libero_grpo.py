"""GRPO on a LIBERO-MJX suite from an SFT checkpoint, with SimpleVLA-RL's defaults:
`get_config("suite=libero_10,variant=tiny,init_from=/tmp/sft_10")`.

Keys of the argument: suite (any registered env; default libero_spatial), variant (tiny|small|base|7b),
init_from (the launch.sft workdir whose parameters RL starts from; default none: RL from random
parameters, which never succeed on LIBERO, so set it). Everything outside the RL, optimiser and
horizon values below is configs/default.py's get_config for the same variant and env, as in
configs/libero_sft.py, so the model is the one SFT trained and `train.init_from` loads it (the
trainer compares config.INIT_FIELDS and the parameter shapes).

The paper's values (../shared/PAPER.md), held by every variant: G = 8 rollouts per initial state;
temperature 1.6 in sampling AND in the training log-probs (one `policy.temperature`); greedy
evaluation; GRPO advantages (unbiased std, eps 1e-6); PPO clip 0.2 / 0.28 (clip-higher), token
ratio, mean over a trajectory's valid tokens then over trajectories; no KL, no entropy bonus;
dynamic sampling filling the batch (2x oversampling in the compiled step, informative groups kept);
one epoch; AdamW b (0.9, 0.999), weight decay 0.01, global-norm clip 1.0, constant lr; chunk K = 8.
`base` also holds the paper's lr 5e-6, 64 x 8 = 512 trajectories in minibatches of 128 and the
512-step horizon.

Where tiny and small deviate (one line each; README "SFT then RL" has the same table):
- env.episode_length (tiny, small): the env preset's limit, capped at 512 (LIBERO's evaluator
  limits 220->224, 280, 300->304 and 512 for libero_10; 128 for single-task envs) instead of 512:
  rollouts dominate a CPU step (libero_spatial: about 50 control steps/s at B=256 on 2 cores), and
  openpi / OpenVLA-OFT judge success within these limits (the libero_object expert finishes inside
  its 280: tests/experts_test.py).
- optim.learning_rate: tiny 1e-4, small 3e-5 instead of 5e-6: Adam moves each weight by about lr
  per step, and 5e-6 over a few hundred steps barely changes a 64- or 256-wide model (their SFT uses
  1e-3); not tuned, a tenth (tiny) and a thirtieth (small) of SFT's lr.
- rl.num_prompts / rl.minibatch_size (tiny): 16 x 8 = 128 trajectories in minibatches of 32 instead
  of 64 x 8 = 512 in 128: the same 4 optimiser steps per RL step at a quarter of the rollouts.
- policy.temperature (tiny): 1.0 instead of 1.6, in sampling and in the update's log-probs. The
  paper raises it to make a 7B policy explore; the tiny policy's distribution is already wide. On
  libero_bowl_on_plate after one-demonstration SFT (RESULTS.md, "make demo on LIBERO-MJX", 64
  held-out states): greedy 47/64, sampled at 1.0 30/64, at 1.6 the RL batches succeed in 6-14%, and
  12 GRPO steps at 1.6 took greedy success DOWN to 28/64; at 1.0 the batches succeed in 50-72% and
  8 GRPO steps took greedy success from 46/64 to 56/64 (`make demo`, seed 0; 38/64 to 55/64
  on another machine, whose XLA CPU code differs).
"""

import ml_collections

from configs import default
from vla_rl_jax.config import VARIANTS, ConfigError

# The paper's RL values (PAPER.md), applied to every variant; tests/config_test.py checks them.
PAPER = dict(group_size=8, temperature=1.6, eval_temperature=0.0, advantage="grpo", adv_eps=1e-6,
             loss="ppo_clip", ratio_level="token", dual_clip=0.0, clip_low=0.2, clip_high=0.28,
             kl_coef=0.0, entropy_coef=0.0, dynamic_sampling=True, num_epochs=1, chunk_size=8,
             learning_rate=5e-6, b1=0.9, b2=0.999, weight_decay=0.01, grad_clip=1.0,
             warmup_steps=0, num_prompts=64, minibatch_size=128, episode_length=512)

# variant -> {field: value} that differ from PAPER on purpose (the docstring says why)
DEVIATIONS = {
    "tiny": dict(learning_rate=1e-4, num_prompts=16, minibatch_size=32, episode_length="suite",
                 temperature=1.0),
    "small": dict(learning_rate=3e-5, episode_length="suite"),
    "base": {},
    "7b": {},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = default.parse_arg(arg, {"suite": None, "variant": VARIANTS, "init_from": None})
  suite = args.get("suite", "libero_spatial")
  variant = args.get("variant", "tiny")
  c = default.get_config(f"variant={variant},env={suite}")
  if c.policy.chunk_size != PAPER["chunk_size"]:
    raise ConfigError(f"config argument suite={suite!r}: configs/libero_grpo.py is for LIBERO-style "
                      f"envs (chunk {PAPER['chunk_size']}); this env's preset has chunk "
                      f"{c.policy.chunk_size} (use configs/default.py)")
  p = {**PAPER, **DEVIATIONS[variant]}

  c.rl.group_size = p["group_size"]
  c.policy.temperature = p["temperature"]         # rollout sampling and the update's log-probs
  c.policy.eval_temperature = p["eval_temperature"]
  c.rl.advantage, c.rl.adv_eps = p["advantage"], p["adv_eps"]
  c.rl.loss = p["loss"]
  c.rl.loss_kwargs.ratio_level = p["ratio_level"]
  c.rl.loss_kwargs.dual_clip = p["dual_clip"]
  c.rl.clip_low, c.rl.clip_high = p["clip_low"], p["clip_high"]
  c.rl.kl_coef, c.rl.entropy_coef = p["kl_coef"], p["entropy_coef"]
  c.rl.dynamic_sampling = p["dynamic_sampling"]
  c.rl.oversample = max(c.rl.oversample, 2)       # fill the batch with informative groups
  c.rl.num_epochs = p["num_epochs"]
  c.rl.num_prompts, c.rl.minibatch_size = p["num_prompts"], p["minibatch_size"]

  c.optim.learning_rate = p["learning_rate"]
  c.optim.b1, c.optim.b2 = p["b1"], p["b2"]
  c.optim.weight_decay, c.optim.grad_clip = p["weight_decay"], p["grad_clip"]
  c.optim.warmup_steps = p["warmup_steps"]

  k = c.policy.chunk_size
  if p["episode_length"] == "suite":              # the preset's limit, never above the paper's
    c.env.episode_length = min(c.env.episode_length, PAPER["episode_length"])
  else:
    c.env.episode_length = -(-p["episode_length"] // k) * k
  c.train.init_from = args.get("init_from", "")
  return c
