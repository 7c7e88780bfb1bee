"""Surrogate losses on log-prob arrays, registered by name (config.rl.loss, vla_rl_jax.rl.registry).

Every loss has the signature
    loss_fn(inp: LossInputs, cfg: RLConfig, **options) -> (loss scalar, metrics dict)
with per-token arrays f32[N, L'] (L' = all action tokens of a trajectory, C * K * D, laid out call,
then chunk step, then action dim) and per-trajectory arrays f32[N]; `options` are the loss's declared
hyperparameters (`--config.rl.loss_kwargs.NAME=VALUE`). `make_loss(cfg)` binds them.

    ppo_clip            SimpleVLA-RL (the reference): PPO ratio clipped to [1 - clip_low,
                        1 + clip_high] (clip-higher), mean over valid tokens within a trajectory,
                        then the weighted mean over trajectories (weights = dynamic-sampling mask).
    ppo_clip_token_mean the same surrogate averaged over all valid tokens of the minibatch (DAPO).
    ppo_clip_seq_mean   the same surrogate summed over each trajectory's valid tokens and divided by
                        the constant L' (the tokens of a full-length trajectory, Dr. GRPO's constant
                        normaliser), then the weighted mean over trajectories: every token weighs the
                        same whatever its trajectory's length.
    gspo                GSPO (sequence-level ratio): s = exp(mean over the trajectory's valid tokens
                        of logp - old_logp), surrogate min(s A, clip(s, 1 - seq_clip_low,
                        1 + seq_clip_high) A) per trajectory, weighted mean over trajectories.
    reinforce           -A * log pi (on-policy, no ratio), trajectory-then-batch mean.

The three ppo_clip losses share two options:
    ratio_level  "token" (default): one ratio per token. "action": one ratio per action (its D
                 tokens), "chunk": one per policy call's chunk (K * D tokens); the group's ratio is
                 exp(SUM over its valid tokens of logp - old_logp), the probability ratio of the
                 whole action (chunk), and every token of the group carries the group's clipped
                 surrogate (so the token means above weigh a group by its valid tokens).
    dual_clip    c (0 = off, else > 1): for A < 0 the surrogate is max(min(r A, clip(r) A), c A),
                 bounding the loss of a token whose ratio exploded (Ye et al. 2020).

Optional terms (off by default): kl_coef * KL(pi || pi_ref) with the k3 estimator, and
-entropy_coef * entropy, both token-mean per trajectory.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from envs import schema
from vla_rl_jax.config import RLConfig
from vla_rl_jax.rl import registry
from vla_rl_jax.rl.registry import register_loss


@struct.dataclass
class LossInputs:
  logp: jax.Array         # f32[N, L'] current policy
  old_logp: jax.Array     # f32[N, L'] policy that sampled the tokens
  advantages: jax.Array   # f32[N]
  token_mask: jax.Array   # f32[N, L'] 1 for tokens whose action ran
  traj_weight: jax.Array  # f32[N] dynamic-sampling weight (0 drops the trajectory)
  entropy: jax.Array      # f32[N, L']
  ref_logp: jax.Array | None = None  # f32[N, L'] reference policy, for the KL term
  # token layout (static): D tokens per action, K actions per chunk (ratio_level "action"/"chunk")
  action_dim: int = struct.field(pytree_node=False, default=1)
  chunk_size: int = struct.field(pytree_node=False, default=1)


LossFn = Callable[[LossInputs], tuple[jax.Array, dict]]


def make_loss(cfg: RLConfig) -> LossFn:
  """The loss `cfg.loss` with its resolved options `cfg.loss_kwargs` bound: inp -> (loss, metrics)."""
  entry = registry.get("loss", cfg.loss)
  options = dict(cfg.loss_kwargs)
  return lambda inp: entry.fn(inp, cfg, **options)


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  """x * mask where masked-out entries are exactly 0 even if x is inf/nan there."""
  return jnp.where(mask > 0, x * mask, 0.0)


def _traj_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over each trajectory's valid tokens -> f32[N] (0 for a trajectory with none)."""
  return jnp.sum(_masked(x, mask), -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)


def _batch_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted mean over trajectories, normalised by the surviving weight (0 if none survive)."""
  return jnp.sum(_masked(x, weight)) / jnp.maximum(jnp.sum(weight), 1e-8)


RATIO_LEVELS = ("token", "action", "chunk")


def _ratio(inp: LossInputs, level: str) -> jax.Array:
  """f32[N, L']: the importance ratio each token carries (see the module docstring)."""
  log_r = inp.logp - inp.old_logp
  if level == "token":
    return jnp.exp(log_r)
  size = inp.action_dim * (inp.chunk_size if level == "chunk" else 1)
  n, l = log_r.shape
  if l % size:
    raise ValueError(f"ratio_level={level!r}: {l} tokens per trajectory are not whole groups of "
                     f"{size} (action_dim={inp.action_dim}, chunk_size={inp.chunk_size})")
  group = jnp.sum(_masked(log_r, inp.token_mask).reshape(n, l // size, size), -1, keepdims=True)
  return jnp.broadcast_to(jnp.exp(group), (n, l // size, size)).reshape(n, l)


def _clipped_surrogate(inp: LossInputs, cfg: RLConfig, ratio_level: str = "token",
                       dual_clip: float = 0.0):
  ratio = _ratio(inp, ratio_level)
  adv = inp.advantages[:, None]
  clipped_ratio = jnp.clip(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
  surrogate = jnp.minimum(ratio * adv, clipped_ratio * adv)
  clipped = (ratio * adv > clipped_ratio * adv).astype(jnp.float32)
  if dual_clip > 0:  # A < 0: never below c * A, however large the ratio grew
    surrogate = jnp.where(adv < 0, jnp.maximum(surrogate, dual_clip * adv), surrogate)
  return surrogate, ratio, clipped


def _extras(inp: LossInputs, cfg: RLConfig, ratio: jax.Array, clipped: jax.Array | None):
  """Optional KL/entropy terms and the diagnostics every loss reports (ratio: f32[N, L'] or any
  shape that broadcasts to it, e.g. one sequence ratio f32[N, 1])."""
  w, m = inp.traj_weight, inp.token_mask
  ratio = jnp.broadcast_to(ratio, m.shape)
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
    metrics["clip_frac"] = jnp.sum(_masked(jnp.broadcast_to(clipped, m.shape), tok_w)) / tok_n
  return extra, metrics


def _dual_clip_rule(opts: dict) -> None:
  if opts["dual_clip"] != 0.0 and opts["dual_clip"] <= 1.0:
    raise schema.OptionError("dual_clip", opts["dual_clip"],
                             "must be 0 (off) or > 1 (the bound c * A for A < 0; 3 is usual)")


_PPO_OPTIONS = (
    schema.Choice("ratio_level", "token", "tokens one ratio covers: a token, an action (D tokens) "
                  "or a chunk (K * D tokens)", choices=RATIO_LEVELS),
    schema.Float("dual_clip", 0.0, "dual-clip bound c for A < 0 (0 = off, else > 1)", lo=0.0),
)
_ppo = lambda name: register_loss(name, *_PPO_OPTIONS, rules=(_dual_clip_rule,))


@_ppo("ppo_clip")
def ppo_clip(inp: LossInputs, cfg: RLConfig, *, ratio_level: str = "token", dual_clip: float = 0.0):
  surrogate, ratio, clipped = _clipped_surrogate(inp, cfg, ratio_level, dual_clip)
  pg = -_batch_mean(_traj_mean(surrogate, inp.token_mask), inp.traj_weight)
  extra, metrics = _extras(inp, cfg, ratio, clipped)
  return pg + extra, {"pg_loss": pg, **metrics}


@_ppo("ppo_clip_token_mean")
def ppo_clip_token_mean(inp: LossInputs, cfg: RLConfig, *, ratio_level: str = "token",
                        dual_clip: float = 0.0):
  surrogate, ratio, clipped = _clipped_surrogate(inp, cfg, ratio_level, dual_clip)
  tok_w = inp.token_mask * inp.traj_weight[:, None]
  pg = -jnp.sum(_masked(surrogate, tok_w)) / jnp.maximum(jnp.sum(tok_w), 1e-8)
  extra, metrics = _extras(inp, cfg, ratio, clipped)
  return pg + extra, {"pg_loss": pg, **metrics}


@_ppo("ppo_clip_seq_mean")
def ppo_clip_seq_mean(inp: LossInputs, cfg: RLConfig, *, ratio_level: str = "token",
                      dual_clip: float = 0.0):
  surrogate, ratio, clipped = _clipped_surrogate(inp, cfg, ratio_level, dual_clip)
  per_traj = jnp.sum(_masked(surrogate, inp.token_mask), -1) / surrogate.shape[-1]
  pg = -_batch_mean(per_traj, inp.traj_weight)
  extra, metrics = _extras(inp, cfg, ratio, clipped)
  return pg + extra, {"pg_loss": pg, **metrics}


@register_loss(
    "gspo",
    # GSPO (Zheng et al. 2025) clips the sequence ratio to [1 - 3e-4, 1 + 4e-4]: a length-normalised
    # ratio moves far less than a token's
    schema.Float("seq_clip_low", 3e-4, "sequence ratio clipped below at 1 - seq_clip_low",
                 lo=0.0, hi=1.0, hi_open=True),
    schema.Float("seq_clip_high", 4e-4, "sequence ratio clipped above at 1 + seq_clip_high", lo=0.0),
)
def gspo(inp: LossInputs, cfg: RLConfig, *, seq_clip_low: float = 3e-4,
         seq_clip_high: float = 4e-4):
  s = jnp.exp(_traj_mean(inp.logp - inp.old_logp, inp.token_mask))    # f32[N]
  clipped_s = jnp.clip(s, 1.0 - seq_clip_low, 1.0 + seq_clip_high)
  surrogate = jnp.minimum(s * inp.advantages, clipped_s * inp.advantages)
  clipped = (s * inp.advantages > clipped_s * inp.advantages).astype(jnp.float32)
  pg = -_batch_mean(surrogate, inp.traj_weight)
  extra, metrics = _extras(inp, cfg, s[:, None], clipped[:, None])
  return pg + extra, {"pg_loss": pg, **metrics}


@register_loss("reinforce")
def reinforce(inp: LossInputs, cfg: RLConfig):
  pg = -_batch_mean(_traj_mean(inp.logp * inp.advantages[:, None], inp.token_mask), inp.traj_weight)
  extra, metrics = _extras(inp, cfg, jnp.exp(inp.logp - inp.old_logp), None)
  return pg + extra, {"pg_loss": pg, **metrics}
