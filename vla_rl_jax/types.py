"""Pytree dataclasses that cross function boundaries, and the shape-letter legend.

Shape letters used in docstrings across the package:
  B  initial states (prompts) per RL step          G  rollouts per initial state (group)
  N  trajectories = B * G                           C  policy calls per episode (= T / K)
  T  control steps per episode                      K  actions per chunk (parallel decoding)
  D  action dimensions                              L  action tokens per call = K * D
  S  instruction tokens                             H W C3  image height, width, 3 channels
  V  vocabulary size; the last 256 ids are the action bins
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class PolicyObs:
  """What the policy sees at one call.

  image:  uint8[..., H, V*W, 3]  the policy's camera(s): env.camera's V views side by side
                               (V = 1: third person on LIBERO; 2: plus the wrist, as OFT).
  text:   int32[..., S]        instruction token ids, 0-padded.
  proprio: float32[..., P]     proprioception (P may be 0).
  """
  image: jax.Array
  text: jax.Array
  proprio: jax.Array


@struct.dataclass
class Trajectory:
  """One rollout batch, trajectory-major so minibatches slice the leading axis.

  frames:       what the policy saw at each call, leading [N, C]: {"image": uint8[N, C, H, W, 3]}
                or {"scene": the env's renderer inputs} (rollout.call_obs rebuilds the image)
  proprio:      float32[N, C, P]  proprioception at each call (P may be 0)
  tokens:       int32[N, C, L]    sampled action-bin indices (0..255)
  logp:         float32[N, C, L]  log-prob of each token under the sampling policy (tempered)
  token_mask:   float32[N, C, L]  1 where the token's action step ran before the episode ended
  reward:       float32[N]        binary outcome: 1 if the goal predicate held at the end
  length:       int32[N]          control steps executed
  task_id:      int32[N]          (the instruction: text_table[task_id])
  unstable:     bool[N]           physics blew up (counted as failure)
  render_overflow: int32[N]       frames the renderer flagged as possibly inexact (must be 0)
  grasped:      bool[N] | None    every object the goal places was held between both fingers at
                                  some step (LIBERO-MJX `info["grasped"]`); None for envs that do
                                  not report grasps. A success without it was pushed ("pushcut").
  """
  frames: Any
  proprio: jax.Array
  tokens: jax.Array
  logp: jax.Array
  token_mask: jax.Array
  reward: jax.Array
  length: jax.Array
  task_id: jax.Array
  unstable: jax.Array
  render_overflow: jax.Array
  grasped: jax.Array | None = None


@struct.dataclass
class TrainState:
  """Everything the train step carries between calls (and everything a checkpoint holds).

  rng is the ROOT key: each step derives its randomness as fold_in(rng, step), so resume is exact.
  ref_params is None unless a KL term against the starting policy is configured.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ref_params: Any = None


@struct.dataclass
class EnvStats:
  """Env-side state carried across train steps: per-task success statistics (curriculum hooks).

  episodes:      int32[]            episodes rolled out so far
  task_success:  float32[num_tasks] exponential moving average of success per task
  task_count:    float32[num_tasks] episodes seen per task
  """
  episodes: jax.Array
  task_success: jax.Array
  task_count: jax.Array
