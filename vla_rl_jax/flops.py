"""Analytic model FLOPs of a policy forward and of a fused train step; peak FLOP/s and MFU.

Convention (PaLM appendix B, MaxText): FLOPs = 2 x the multiply-adds of the matrix products,
counting every dense layer (patch embedding, attention projections, MLPs, projector, head) and the
attention score (q k^T) and value (p v) products over the full S x S score matrix the dense
implementation computes, masked or not (a causal prefix is not halved). Elementwise work (norms,
softmax, activations, biases, the ordinal-bin term) and embedding look-ups (gathers) are not model
FLOPs and are not counted, so XLA's own count of a forward is slightly higher.

Per fused train step (`step_flops`):
  rollout  num_rollout_trajectories x num_calls policy forwards. The rollout's while_loop exits
           when every episode has ended, so with the full horizon this is an UPPER BOUND; pass the
           step's measured `policy_calls` for the work actually done.
  update   3 forwards (forward + backward = 2x forward) per scored policy call, over the trained
           trajectories (num_prompts x group_size), x num_epochs; +1 forward per scored call when
           activations are recomputed (rl.grad_accum == "per_call", or model.remat); +1 forward
           per scored call for the KL reference policy when rl.kl_coef > 0. Calls no live
           trajectory reached are skipped (lax.cond) and dead minibatches are not run, so this is
           an upper bound too; `policy_calls` and `live_minibatch_frac` make it the actual count.

Models: "tiny_vla" (vla_rl_jax/models/vla.py: ViT-style patch tokens, text and K*D action queries
through one pre-LN transformer with a GELU MLP) and "oft" (OpenVLA-OFT's shape: SigLIP and DINOv2
towers, an MLP projector, a Llama decoder with SwiGLU and grouped-query attention, and an LM head
over the 256 action bins at the K*D action positions only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from envs.base import views

# Dense (no sparsity) peak FLOP/s per device by dtype, from the vendors' data sheets. Matched
# against jax's `device_kind` by substring, most specific first. GPU float32 rows are TF32 tensor
# core peaks (what XLA uses for an f32 matmul at JAX's default precision on Ampere and later); TPU
# float32 has no published peak (f32 matmuls run as several bf16 passes), so it is absent (None).
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494.7e12}),     # SXM; "NVIDIA H100 80GB HBM3"
    ("H200", {"bfloat16": 989e12, "float32": 494.7e12}),     # same compute as the H100 SXM
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("TPU v4", {"bfloat16": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12}),                   # v5e
    ("TPU v5e", {"bfloat16": 197e12}),
    ("TPU v5p", {"bfloat16": 459e12}),
    ("TPU v5", {"bfloat16": 459e12}),                        # v5p reports "TPU v5"
    ("TPU v6 lite", {"bfloat16": 918e12}),                   # v6e (Trillium)
    ("TPU v6e", {"bfloat16": 918e12}),
)


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> float | None:
  """Dense peak FLOP/s of one device of this kind in this compute dtype; None when unknown (CPU)."""
  kind = (device_kind or "").lower()
  for pattern, peaks in PEAK_FLOPS:
    if pattern.lower() in kind:
      return peaks.get(str(dtype))
  return None


def mfu(flops: float, seconds: float, device_kind: str, num_devices: int = 1,
        dtype: str = "bfloat16") -> float | None:
  """Model FLOPs utilisation: flops / seconds / (num_devices x the device's peak), or None on a
  device without a known peak (CPU) or without a positive time."""
  peak = peak_flops(device_kind, dtype)
  if peak is None or not seconds or seconds <= 0:
    return None
  return float(flops) / float(seconds) / (peak * num_devices)


def _get(cfg: Any, name: str, default: Any = None) -> Any:
  """A config field, with a default while it is absent, from a frozen dataclass or a ConfigDict,
  or from a sub-config as config.py may freeze it: a mapping, or sorted (name, value) pairs."""
  if isinstance(cfg, Mapping):
    v = cfg.get(name, default)
  elif isinstance(cfg, tuple) and all(isinstance(x, tuple) and len(x) == 2 for x in cfg):
    v = dict(cfg).get(name, default)
  else:
    v = getattr(cfg, name, default)
  return default if v is None else v


def _square(size: Any) -> tuple[int, int]:
  return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))


def _vit_block(s: int, width: int, mlp_dim: int) -> int:
  """One pre-LN ViT block (MHA with full-width q, k, v, o; a two-matrix MLP) over s tokens."""
  proj = 2 * s * width * (4 * width)            # q, k, v, o
  attn = 2 * (2 * s * s * width)                # scores and values, all heads together
  mlp = 2 * s * (2 * width * mlp_dim)
  return proj + attn + mlp


def tiny_vla_forward(model: Any, *, image_size, num_action_tokens: int, proprio_size: int = 0,
                     batch: int = 1) -> int:
  """FLOPs of TinyVLA on `batch` observations -> logits [batch, K*D, 256].

  Tokens S = P patches + max_text_len text + K*D action queries (+1 proprio token when the env
  has proprioception, as the model appends one); every block sees all S.
  """
  h, w = _square(image_size)
  p, width = model.patch_size, model.width
  n_patch = (h // p) * (w // p)
  s = n_patch + model.max_text_len + num_action_tokens + (1 if proprio_size else 0)
  f = 2 * n_patch * (p * p * 3) * width
  if proprio_size:
    f += 2 * proprio_size * width
  f += model.depth * _vit_block(s, width, model.mlp_dim)
  head_cols = 256 + (1 if _get(model, "ordinal_head", False) else 0)  # + the ordinal slope
  f += 2 * num_action_tokens * width * head_cols
  return batch * f


def oft_forward(model: Any, *, image_size, num_action_tokens: int, proprio_size: int = 0,
                num_views: int = 1, batch: int = 1) -> int:
  """FLOPs of the OFT-shaped model on `batch` observations -> logits [batch, K*D, 256].

  Per view: each tower on (image / patch)^2 patches (DINOv2 adds 1 class token + num_registers;
  depth 0 = tower off), the towers' patch features concatenated (vision_dim = sum of widths) and
  projected Linear(vd, 4 vd) -> Linear(4 vd, width) -> Linear(width, width). The Llama decoder runs
  over S = views x patches + max_text_len + K*D (+1 when model.use_proprio, whose projector is
  Linear(proprio, width) -> Linear(width, width)): q and o width x width, k and v width x
  num_kv_heads * head_dim, a SwiGLU MLP of three width x mlp_dim matrices. The LM head runs at the
  K*D action positions only, on the 256 action-bin columns.
  """
  h, w = _square(image_size)
  p = model.patch_size
  n_patch = (h // p) * (w // p)
  f_view, vision_dim = 0, 0
  for tower in ("siglip", "dinov2"):
    t = _get(model, tower)
    if t is None or _get(t, "depth", 0) == 0:
      continue
    extra = 1 + _get(t, "num_registers", 0) if tower == "dinov2" else 0
    tw = _get(t, "width")
    f_view += 2 * n_patch * (p * p * 3) * tw                        # patch embedding
    f_view += _get(t, "depth") * _vit_block(n_patch + extra, tw, _get(t, "mlp_dim"))
    vision_dim += tw
  width = model.width
  f_view += 2 * n_patch * (vision_dim * 4 * vision_dim + 4 * vision_dim * width + width * width)
  use_proprio = bool(_get(model, "use_proprio", False)) and proprio_size > 0
  s = num_views * n_patch + model.max_text_len + num_action_tokens + (1 if use_proprio else 0)
  head_dim = width // model.num_heads
  kv = _get(model, "num_kv_heads", model.num_heads) * head_dim
  layer = (2 * s * width * (2 * width + 2 * kv)     # q, o; k, v
           + 2 * (2 * s * s * width)                 # scores and values over all query heads
           + 2 * s * (3 * width * model.mlp_dim))    # SwiGLU: gate, up, down
  f = num_views * f_view + model.depth * layer + 2 * num_action_tokens * width * 256
  if use_proprio:
    f += 2 * (proprio_size * width + width * width)
  return batch * f


FORWARDS = {"tiny_vla": tiny_vla_forward, "oft": oft_forward}


def forward_flops(model: Any, *, image_size, num_action_tokens: int, proprio_size: int = 0,
                  num_views: int = 1, batch: int = 1) -> int:
  """FLOPs of one policy forward of `batch` observations for the model `model.name` names."""
  name = _get(model, "name", "tiny_vla")
  if name not in FORWARDS:
    raise ValueError(f"model.name={name!r}: no FLOP formula; known: {sorted(FORWARDS)}")
  kw = dict(image_size=image_size, num_action_tokens=num_action_tokens,
            proprio_size=proprio_size, batch=batch)
  if name == "oft":
    kw["num_views"] = num_views
  elif num_views > 1:   # TinyVLA: the views side by side are one wide image
    h, w = _square(image_size)
    kw["image_size"] = (h, w * num_views)
  return FORWARDS[name](model, **kw)


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """Model FLOPs of one fused train step (see the module docstring for what each counts)."""
  per_example_forward: int    # one observation through the policy
  per_policy_call: int        # one rollout policy call: all num_rollout_trajectories envs
  rollout: int                # num_calls (or the measured policy_calls) rollout policy calls
  update: int                 # forward + backward (+ recompute, + KL reference) of scored calls
  total: int
  calls: float                # policy calls counted (num_calls = the horizon's bound, or measured)
  forwards_per_scored_call: int  # 3, +1 recompute, +1 KL reference
  upper_bound: bool           # True when counted at the full horizon

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def step_flops(cfg: Any, env: Any, policy_calls: float | None = None,
               live_minibatch_frac: float = 1.0) -> StepFlops:
  """Model FLOPs of one fused train step of the resolved config `cfg` on `env`.

  policy_calls: the rollout's measured calls (the step's `policy_calls` metric); None counts the
  full horizon (cfg.num_calls), an upper bound. live_minibatch_frac: the fraction of minibatch
  updates that ran (updates_applied / (num_epochs x num_minibatches)); 1.0 for the bound.
  """
  num_views = len(views(cfg.env.camera))
  f1 = forward_flops(cfg.model, image_size=env.image_size,
                     num_action_tokens=cfg.policy.chunk_size * env.action_size,
                     proprio_size=env.proprio_size, num_views=num_views)
  calls = cfg.num_calls if policy_calls is None else float(policy_calls)
  per_call = f1 * cfg.num_rollout_trajectories
  rollout_f = per_call * calls
  forwards = 3
  if _get(cfg.rl, "grad_accum", "off") == "per_call" or _get(cfg.model, "remat", "none") not in (
      "none", "off", "", False):
    forwards += 1
  if cfg.rl.kl_coef > 0:
    forwards += 1
  update_f = (forwards * f1 * cfg.num_trajectories * calls * cfg.rl.num_epochs
              * live_minibatch_frac)
  return StepFlops(per_example_forward=f1, per_policy_call=per_call, rollout=int(rollout_f),
                   update=int(update_f), total=int(rollout_f + update_f), calls=calls,
                   forwards_per_scored_call=forwards, upper_bound=policy_calls is None)


# ------------------------------------------------------------------------------------------------
# Benchmark rows (launch.benchmark): FLOPs of a measured step and, on an accelerator, MFU.

def rollout_seconds(b, params, repeats: int) -> list[float]:
  """Seconds of the fused step's rollout compiled alone (same call, same shardings), repeats after
  a warm-up: the part of a step the rollout's MFU is measured over."""
  import jax
  from vla_rl_jax.rollout import rollout
  rc = b.cfg

  def roll(params, rng):
    return rollout(b.env, b.policy, params, rng, text_table=b.text_table,
                   num_prompts=rc.rl.num_prompts * rc.rl.oversample, group_size=rc.rl.group_size,
                   num_calls=rc.num_calls, temperature=rc.policy.temperature,
                   camera=rc.env.camera, store=rc.rollout.store,
                   policy_microbatch=rc.rollout.policy_microbatch, mesh=b.mesh)
  fn = jax.jit(roll)
  jax.block_until_ready(fn(params, jax.random.PRNGKey(0)))  # compile + warm-up
  out = []
  for i in range(repeats):
    t = time.perf_counter()
    _, calls = jax.block_until_ready(fn(params, jax.random.PRNGKey(i + 1)))
    out.append((time.perf_counter() - t, float(calls)))
  return out


def step_fields(b, state, times: list[float], metrics: list[dict],
                  device_kind: str | None = None) -> dict:
  """launch.benchmark's FLOP and MFU fields of a train row: model FLOPs of the step (the full-horizon bound, and the median repeat's
  actual count from its policy_calls and live minibatches) and, on an accelerator with a known
  peak, MFU of the whole step, of the rollout (timed alone, same call) and of the update (step
  time minus rollout time: the advantages and the dynamic-sampling bookkeeping ride with it).
  device_kind: the peak to measure against (default: this machine's first device)."""
  import jax
  rc = b.cfg
  bound = step_flops(rc, b.env)
  num_mb = rc.rl.num_epochs * rc.num_minibatches

  def actual(m):
    return step_flops(rc, b.env, policy_calls=float(m["policy_calls"]),
                            live_minibatch_frac=float(m["updates_applied"]) / num_mb)
  i = sorted(range(len(times)), key=lambda j: times[j])[len(times) // 2]  # the median repeat
  f = actual(metrics[i])
  row = {"model_flops_per_step": bound.total, "model_flops_per_step_rollout": bound.rollout,
         "model_flops_per_step_update": bound.update,
         "model_flops_per_policy_call": bound.per_policy_call,
         "model_flops_per_example_forward": bound.per_example_forward,
         "model_flops_step_actual": f.total, "model_flops_rollout_actual": f.rollout,
         "model_flops_update_actual": f.update,
         "mfu_step": None, "mfu_rollout": None, "mfu_update": None}
  kind = device_kind or jax.devices()[0].device_kind
  n, dt = jax.device_count(), rc.model.dtype
  row["mfu_step"] = mfu(f.total, times[i], kind, n, dt)
  if row["mfu_step"] is None:  # CPU / unknown peak: no MFU, and no extra rollout compile
    return row
  roll = rollout_seconds(b, state.params, len(times))
  roll_s = sorted(t for t, _ in roll)[len(roll) // 2]
  roll_calls = sorted(c for _, c in roll)[len(roll) // 2]
  roll_f = step_flops(rc, b.env, policy_calls=roll_calls).rollout
  update_s = times[i] - roll_s
  row.update(rollout_s=roll_s, update_s_derived=update_s,
             mfu_rollout=mfu(roll_f, roll_s, kind, n, dt),
             mfu_update=mfu(f.update, update_s, kind, n, dt) if update_s > 0
             else None)
  return row
