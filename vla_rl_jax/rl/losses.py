"""Surrogate losses on log-prob arrays, chosen by name from LOSSES (config.rl.loss).

Every loss has the signature
    loss_fn(inp: LossInputs, cfg: RLConfig) -> (loss scalar, metrics dict)
with per-token arrays f32[N, L'] (L' = all action tokens of a trajectory, C * K * D) and
per-trajectory arrays f32[N].

    ppo_clip            SimpleVLA-RL: PPO ratio clipped to [1 - clip_low, 1 + clip_high]
                        (clip-higher), mean over valid tokens within a trajectory, then the
                        weighted mean over trajectories (weights = dynamic-sampling mask).
    ppo_clip_token_mean the same surrogate averaged over all valid tokens of the minibatch (DAPO).
    reinforce           -A * log pi (on-policy, no ratio), trajectory-then-batch mean.

Optional terms (off by default): kl_coef * KL(pi || pi_ref) with the k3 estimator, and
-entropy_coef * entropy, both token-mean per trajectory.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from vla_rl_jax.config import RLConfig


@struct.dataclass
class LossInputs:
  logp: jax.Array         # f32[N, L'] current policy
  old_logp: jax.Array     # f32[N, L'] policy that sampled the tokens
  advantages: jax.Array   # f32[N]
  token_mask: jax.Array   # f32[N, L'] 1 for tokens whose action ran
  traj_weight: jax.Array  # f32[N] dynamic-sampling weight (0 drops the trajectory)
  entropy: jax.Array      # f32[N, L']
  ref_logp: jax.Array | None = None  # f32[N, L'] reference policy, for the KL term


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  """x * mask where masked-out entries are exactly 0 even if x is inf/nan there."""
  return jnp.where(mask > 0, x * mask, 0.0)


def _traj_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over each trajectory's valid tokens -> f32[N] (0 for a trajectory with none)."""
  return jnp.sum(_masked(x, mask), -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)


def _batch_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted mean over trajectories, normalised by the surviving weight (0 if none survive)."""
  return jnp.sum(_masked(x, weight)) / jnp.maximum(jnp.sum(weight), 1e-8)


def _clipped_surrogate(inp: LossInputs, cfg: RLConfig):
  ratio = jnp.exp(inp.logp - inp.old_logp)
  adv = inp.advantages[:, None]
  clipped_ratio = jnp.clip(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
  surrogate = jnp.minimum(ratio * adv, clipped_ratio * adv)
  clipped = (ratio * adv > clipped_ratio * adv).astype(jnp.float32)
  return surrogate, ratio, clipped


def _extras(inp: LossInputs, cfg: RLConfig, ratio: jax.Array, clipped: jax.Array | None):
  """Optional KL/entropy terms and the diagnostics every loss reports."""
  w, m = inp.traj_weight, inp.token_mask
  extra = jnp.zeros(())
  metrics = {}
  ent = _batch_mean(_traj_mean(inp.entropy, m), w)
  metrics["entropy"] = ent
  if cfg.entropy_coef > 0:
    extra = extra - cfg.entropy_coef * ent
  if cfg.kl_coef > 0:
    if inp.ref_logp is None:
      raise ValueError("rl.kl_coef > 0 needs reference log-probs")
    log_r = inp.ref_logp - inp.logp
    kl = _batch_mean(_traj_mean(jnp.exp(log_r) - log_r - 1.0, m), w)
    metrics["kl_ref"] = kl
    extra = extra + cfg.kl_coef * kl
  tok_w = m * w[:, None]
  tok_n = jnp.maximum(jnp.sum(tok_w), 1e-8)
  metrics["ratio_mean"] = jnp.sum(_masked(ratio, tok_w)) / tok_n
  # over every valid token, dropped groups included: 0 on the first minibatch of an update
  metrics["ratio_max_dev"] = jnp.max(_masked(jnp.abs(ratio - 1.0), m))
  metrics["approx_kl_old"] = jnp.sum(_masked(inp.old_logp - inp.logp, tok_w)) / tok_n
  if clipped is not None:
    metrics["clip_frac"] = jnp.sum(_masked(clipped, tok_w)) / tok_n
  return extra, metrics


def ppo_clip(inp: LossInputs, cfg: RLConfig):
  surrogate, ratio, clipped = _clipped_surrogate(inp, cfg)
  pg = -_batch_mean(_traj_mean(surrogate, inp.token_mask), inp.traj_weight)
  extra, metrics = _extras(inp, cfg, ratio, clipped)
  return pg + extra, {"pg_loss": pg, **metrics}


def ppo_clip_token_mean(inp: LossInputs, cfg: RLConfig):
  surrogate, ratio, clipped = _clipped_surrogate(inp, cfg)
  tok_w = inp.token_mask * inp.traj_weight[:, None]
  pg = -jnp.sum(_masked(surrogate, tok_w)) / jnp.maximum(jnp.sum(tok_w), 1e-8)
  extra, metrics = _extras(inp, cfg, ratio, clipped)
  return pg + extra, {"pg_loss": pg, **metrics}


def reinforce(inp: LossInputs, cfg: RLConfig):
  pg = -_batch_mean(_traj_mean(inp.logp * inp.advantages[:, None], inp.token_mask), inp.traj_weight)
  extra, metrics = _extras(inp, cfg, jnp.exp(inp.logp - inp.old_logp), None)
  return pg + extra, {"pg_loss": pg, **metrics}


LOSSES: dict[str, Callable[[LossInputs, RLConfig], tuple[jax.Array, dict]]] = {
    "ppo_clip": ppo_clip,
    "ppo_clip_token_mean": ppo_clip_token_mean,
    "reinforce": reinforce,
}
