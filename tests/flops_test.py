"""Analytic model FLOPs (vla_rl_jax/flops.py) against hand arithmetic and XLA's own count; MFU."""

import dataclasses
import math
import types

import flax.linen as nn
import jax
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax import flops
from vla_rl_jax.builders import build_env, build_model, dummy_obs
from vla_rl_jax.config import ModelConfig

NS = types.SimpleNamespace


def _tiny_model(**kw) -> ModelConfig:
  base = dict(name="tiny_vla", patch_size=4, width=8, depth=1, num_heads=2, mlp_dim=16,
              max_text_len=3, vocab_size=515, num_bins=256, dtype="float32",
              param_dtype="float32", ordinal_head=True)
  return ModelConfig(**{**base, **kw})


def test_tiny_vla_forward_by_hand():
  # 8x8 image, 4x4 patches -> 4 patches; 3 text + 2x2 action tokens + 1 proprio token: S = 12
  patch = 2 * 4 * (4 * 4 * 3) * 8           # 4 patches x 48 pixels -> width 8
  proprio = 2 * 2 * 8                         # proprio 2 -> width 8
  qkvo = 4 * (2 * 12 * 8 * 8)
  scores, values = 2 * 12 * 12 * 8, 2 * 12 * 12 * 8
  mlp = 2 * 12 * 8 * 16 + 2 * 12 * 16 * 8
  head = 2 * 4 * 8 * 256 + 2 * 4 * 8 * 1      # 256 bins + the ordinal slope column
  hand = patch + proprio + qkvo + scores + values + mlp + head
  assert hand == 36448
  got = flops.forward_flops(_tiny_model(), image_size=8, num_action_tokens=4, proprio_size=2)
  assert got == hand
  # batch scales linearly; no proprio token and no ordinal column without them
  assert flops.forward_flops(_tiny_model(), image_size=8, num_action_tokens=4, proprio_size=2,
                             batch=5) == 5 * hand
  s = 11
  no_prop = (patch + 4 * (2 * s * 8 * 8) + 2 * (2 * s * s * 8) + 2 * (2 * s * 8 * 16)
             + 2 * 4 * 8 * 256)
  assert flops.forward_flops(_tiny_model(ordinal_head=False), image_size=8,
                             num_action_tokens=4) == no_prop


def _oft_model(**kw):
  base = dict(name="oft", patch_size=4, width=16, depth=1, num_heads=4, num_kv_heads=2,
              mlp_dim=32, max_text_len=3, vocab_size=300, use_proprio=True,
              siglip=NS(width=8, depth=1, num_heads=2, mlp_dim=16),
              dinov2=NS(width=4, depth=1, num_heads=1, mlp_dim=8, num_registers=2))
  return NS(**{**base, **kw})


def test_oft_forward_by_hand():
  # 8x8 image, patch 4: 4 patches per view
  siglip = (2 * 4 * 48 * 8                                     # patch embedding
            + 4 * (2 * 4 * 8 * 8) + 2 * (2 * 4 * 4 * 8)        # q k v o; scores + values
            + 2 * (2 * 4 * 8 * 16))                            # MLP in + out
  dino_tokens = 4 + 1 + 2                                      # patches + class + 2 registers
  dinov2 = (2 * 4 * 48 * 4
            + 4 * (2 * dino_tokens * 4 * 4) + 2 * (2 * dino_tokens * dino_tokens * 4)
            + 2 * (2 * dino_tokens * 4 * 8))
  vd = 8 + 4
  projector = 2 * 4 * (vd * 4 * vd) + 2 * 4 * (4 * vd * 16) + 2 * 4 * (16 * 16)
  s = 4 + 3 + 4 + 1                                            # patches, text, K*D=4, proprio
  head_dim, kv = 16 // 4, 2 * (16 // 4)
  llama = (2 * s * 16 * 16 * 2                                 # q, o
           + 2 * s * 16 * kv * 2                               # k, v (grouped-query: 2 kv heads)
           + 2 * s * s * 16 * 2                                # scores, values over 4 query heads
           + 3 * (2 * s * 16 * 32))                            # SwiGLU gate, up, down
  head = 2 * 4 * 16 * 256                                      # 256 bins at the 4 action tokens
  proprio = 2 * (2 * 16) + 2 * (16 * 16)
  hand = siglip + dinov2 + projector + llama + head + proprio
  assert head_dim == 4 and hand == 122448
  m = _oft_model()
  assert flops.forward_flops(m, image_size=8, num_action_tokens=4, proprio_size=2) == hand
  # towers as config.py may freeze a sub-config (sorted name/value pairs) or as plain dicts
  frozen = _oft_model(siglip=tuple(sorted(vars(m.siglip).items())), dinov2=dict(vars(m.dinov2)))
  assert flops.forward_flops(frozen, image_size=8, num_action_tokens=4, proprio_size=2) == hand
  # a tower at depth 0 is off: neither its blocks nor its patch embedding nor its projector width
  no_dino = _oft_model(dinov2=NS(width=4, depth=0, num_heads=1, mlp_dim=8, num_registers=2),
                       use_proprio=False)
  s2 = 4 + 3 + 4
  llama2 = (2 * s2 * 16 * 16 * 2 + 2 * s2 * 16 * kv * 2 + 2 * s2 * s2 * 16 * 2
            + 3 * (2 * s2 * 16 * 32))
  proj2 = 2 * 4 * (8 * 32) + 2 * 4 * (32 * 16) + 2 * 4 * (16 * 16)
  assert flops.forward_flops(no_dino, image_size=8, num_action_tokens=4, proprio_size=2) == (
      siglip + proj2 + llama2 + head)
  # two views: both towers and the projector per view, the decoder over both views' patches
  s3 = 8 + 3 + 4 + 1
  llama3 = (2 * s3 * 16 * 16 * 2 + 2 * s3 * 16 * kv * 2 + 2 * s3 * s3 * 16 * 2
            + 3 * (2 * s3 * 16 * 32))
  assert flops.forward_flops(m, image_size=8, num_action_tokens=4, proprio_size=2,
                             num_views=2) == 2 * (siglip + dinov2 + projector) + llama3 + head + proprio


def test_unknown_model_names_the_field():
  with pytest.raises(ValueError, match="model.name='bogus'"):
    flops.forward_flops(_tiny_model(name="bogus"), image_size=8, num_action_tokens=4)


@pytest.fixture(scope="module")
def xla_forward():
  """The default tiny model on fake_reach (no scan in the forward): XLA's flops of one jitted
  forward of 4 observations, and ours."""
  cfg = config_lib.resolve(get_config("variant=tiny"))
  env = build_env(cfg)
  model = build_model(cfg, env)
  obs = dummy_obs(cfg, env, batch=4)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), obs)["params"])
  params = jax.tree_util.tree_map(lambda x: getattr(x, "value", x), params,
                                  is_leaf=lambda x: hasattr(x, "value"))
  compiled = jax.jit(lambda p, o: model.apply({"params": p}, o)).lower(params, obs).compile()
  ca = compiled.cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  ours = flops.forward_flops(cfg.model, image_size=env.image_size,
                             num_action_tokens=cfg.policy.chunk_size * env.action_size,
                             proprio_size=env.proprio_size, batch=4)
  return float(ca["flops"]), ours


def test_tiny_vla_forward_matches_xla_cost_analysis(xla_forward):
  """XLA counts the same matmuls plus elementwise work (norms, softmax, GELU, biases, the ordinal
  term), so it must be at least ours and at most 10% more (measured 4.8% more: 41.05 vs 39.16
  MFLOPs for 4 observations of the default tiny model on fake_reach)."""
  xla, ours = xla_forward
  assert ours <= xla <= 1.10 * ours, (xla, ours, xla / ours)


def _dot_flops(jaxpr) -> int:
  """2 x multiply-adds of every dot_general in a jaxpr, sub-jaxprs included (a second formulation
  of the model's matmul FLOPs, read off the traced program rather than the formula)."""
  from jax.extend import core as jcore
  total = 0
  for e in jaxpr.eqns:
    if e.primitive.name == "dot_general":
      (lhs_contract, _), _ = e.params["dimension_numbers"]
      lhs = e.invars[0].aval.shape
      total += 2 * math.prod(e.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
    for v in e.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        if isinstance(sub, jcore.ClosedJaxpr):
          total += _dot_flops(sub.jaxpr)
        elif isinstance(sub, jcore.Jaxpr):
          total += _dot_flops(sub)
  return total


@pytest.fixture(scope="module")
def oft_forward_counts():
  """A small oft model on fake_reach (both towers, DINOv2 registers, GQA, proprio on) with
  model.scan_layers=False (XLA's cost_analysis counts a scanned block once; unrolled it counts every
  layer): XLA's flops of one jitted forward of 4 observations, the jaxpr's dot_general FLOPs, ours."""
  c = get_config("variant=tiny")
  m = c.model
  m.name, m.ordinal_head, m.use_proprio, m.scan_layers = "oft", False, True, False
  m.width, m.depth, m.num_heads, m.num_kv_heads, m.mlp_dim = 128, 2, 4, 2, 256
  m.siglip.update(dict(width=64, depth=2, num_heads=2, mlp_dim=128))
  m.dinov2.update(dict(width=64, depth=2, num_heads=2, mlp_dim=128, num_registers=2))
  cfg = config_lib.resolve(c, 8)
  env = build_env(cfg)
  model = build_model(cfg, env)
  obs = dummy_obs(cfg, env, batch=4)
  params = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), obs)["params"]))
  fwd = lambda p, o: model.apply({"params": p}, o)
  ca = jax.jit(fwd).lower(params, obs).compile().cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  ours = flops.forward_flops(cfg.model, image_size=env.image_size,
                             num_action_tokens=cfg.policy.chunk_size * env.action_size,
                             proprio_size=env.proprio_size, batch=4)
  assert env.proprio_size > 0 and cfg.model.use_proprio  # the proprio token and MLP are counted
  return float(ca["flops"]), _dot_flops(jax.make_jaxpr(fwd)(params, obs).jaxpr), ours


def test_oft_forward_counts_exactly_the_models_matmuls(oft_forward_counts):
  """The formula (written from a description of OpenVLA-OFT before models/oft.py existed) against
  the real model's traced program: every dot_general of the forward (tower patch embeddings and
  blocks over patches + DINOv2's class/register tokens, the projector, proprio MLP, the Llama
  decoder over BOS + patches + proprio + the rest of max_text_len + K*D, the LM head at the K*D
  action positions on the 256 bin columns) sums to exactly forward_flops."""
  _, dots, ours = oft_forward_counts
  assert dots == ours, (dots, ours, dots - ours)


def test_oft_forward_matches_xla_cost_analysis(oft_forward_counts):
  """XLA counts the same matmuls plus elementwise work (LayerNorm/RMSNorm, RoPE, the S x S mask and
  softmax, GELU/SiLU, biases, pixel normalisation), so it is at least ours and at most 10% more.
  The gap is all elementwise (the jaxpr's dots equal ours exactly) and shrinks with width:
  measured XLA / ours = 1.150 at decoder width 32 (towers 16), 1.036 at 128 (towers 64, this
  test: 198.6 vs 191.7 MFLOP for 4 observations), 1.018 at 256 (towers 128)."""
  xla, _, ours = oft_forward_counts
  assert ours <= xla <= 1.10 * ours, (xla, ours, xla / ours)


def test_oft_7b_forward_agrees_with_its_parameter_count():
  """The 7b figure against the real 7b model's parameter count (oft.param_count: eval_shape of the
  init, nothing allocated). A dense layer costs 2 x its parameters per token it runs on, so the
  forward is 2 x (decoder params x S + each tower's params x its tokens + projector params x
  patches + 256 head columns x width x K*D) + attention's 4 x S^2 x width per layer; biases, norms
  and position tables ride along as parameters (they are not matmuls), so agree to 0.1%
  (measured: 1.6e-4 low, 5.7770 vs 5.7779 TFLOP per observation). And the
  usual 2 x params x tokens bound: the forward is below 2 x all params x S (the 32000-row embedding
  is a gather and the head runs at 56 of the S positions)."""
  from vla_rl_jax.models import oft
  cfg = config_lib.resolve(get_config("variant=7b,env=libero_10"), 8)
  m, n_act = cfg.model, cfg.policy.chunk_size * 7
  assert (cfg.policy.chunk_size, cfg.env.image_size, m.use_proprio) == (8, 224, False)
  pc = oft.param_count(cfg, num_action_tokens=n_act)
  n = (224 // 14) ** 2                                   # 256 patches
  s = n + m.max_text_len + n_act                         # BOS + patches + text + 56 (no proprio)
  attn = lambda tokens, width, depth: depth * 4 * tokens * tokens * width
  approx = (2 * (pc["decoder"] * s + pc["siglip"] * n + pc["dinov2"] * (n + 5) + pc["projector"] * n
                 + 256 * m.width * n_act)
            + attn(s, m.width, m.depth) + attn(n, 1152, 26) + attn(n + 5, 1024, 23))
  f1 = flops.forward_flops(m, image_size=224, num_action_tokens=n_act)
  assert abs(f1 - approx) <= 0.001 * f1, (f1, approx, f1 / approx)
  assert 2 * pc["decoder"] * s < f1 < 2 * pc["total"] * s, (f1, pc, s)


def test_step_flops_counts_rollout_and_update():
  cfg = config_lib.resolve(get_config("variant=tiny"))
  env = build_env(cfg)
  f1 = flops.forward_flops(cfg.model, image_size=env.image_size,
                           num_action_tokens=cfg.policy.chunk_size * env.action_size,
                           proprio_size=env.proprio_size)
  c, n = cfg.num_calls, cfg.num_trajectories  # 16 / 4 = 4 calls, 16 x 8 = 128 trajectories
  assert (c, n, cfg.num_rollout_trajectories, cfg.rl.num_epochs) == (4, 128, 128, 1)
  s = flops.step_flops(cfg, env)
  assert s.per_example_forward == f1 and s.per_policy_call == 128 * f1
  assert s.rollout == 128 * 4 * f1 and s.update == 3 * 128 * 4 * f1
  assert s.total == s.rollout + s.update and s.upper_bound
  # oversampling rolls out more than it trains; epochs repeat the update; KL adds a forward
  over = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, oversample=2, num_epochs=2,
                                                         kl_coef=0.1))
  s2 = flops.step_flops(over, env)
  assert s2.rollout == 256 * 4 * f1 and s2.update == 4 * 128 * 4 * f1 * 2
  # measured calls and dead minibatches: the actual count, no longer a bound
  s3 = flops.step_flops(cfg, env, policy_calls=3, live_minibatch_frac=0.5)
  assert s3.rollout == 128 * 3 * f1 and s3.update == int(3 * 128 * 3 * f1 * 0.5)
  assert not s3.upper_bound
  # per-call gradient accumulation (or remat) recomputes the forward once more
  acc = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, grad_accum="per_call"))
  assert flops.step_flops(acc, env).update == 4 * 128 * 4 * f1


def test_mfu():
  assert flops.mfu(1e12, 1.0, "cpu") is None
  assert flops.mfu(1e12, 1.0, "some new chip") is None
  # two H100s at half their bf16 peak for 2 s
  assert flops.mfu(989e12 * 2 * 0.5 * 2.0, 2.0, "NVIDIA H100 80GB HBM3", 2, "bfloat16") == (
      pytest.approx(0.5))
  assert flops.peak_flops("NVIDIA H200", "bfloat16") == 989e12
  assert flops.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert flops.peak_flops("NVIDIA A100-SXM4-80GB", "float32") == 156e12
  assert flops.peak_flops("TPU v5 lite", "bfloat16") == 197e12
  assert flops.peak_flops("TPU v5", "bfloat16") == 459e12
  assert flops.peak_flops("TPU v6 lite") == 918e12
  assert flops.peak_flops("TPU v4", "float32") is None
  assert flops.mfu(1e12, 0.0, "NVIDIA H100 80GB HBM3") is None


def test_benchmark_flops_fields_and_mfu_path():
  """launch.benchmark's train-row fields (flops.step_fields) on a real (tiny) fused step: no MFU on this CPU; measured
  against an H100's peak instead (the path a GPU run takes: the rollout compiled and timed alone),
  every MFU is a positive fraction and the actual FLOPs are within the full-horizon bound."""
  from vla_rl_jax.builders import build
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.minibatch_size, c.env.episode_length = 2, 16, 8
  b = build(config_lib.resolve(c, jax.device_count()))
  state, _ = b.init_fn()
  bound = flops.step_flops(b.cfg, b.env)
  assert bound.calls == 2 and b.cfg.num_minibatches == 1
  # two repeats (the step's metrics as the benchmark reads them): the median (slower) one counts
  ms = [dict(policy_calls=2.0, updates_applied=1.0), dict(policy_calls=1.0, updates_applied=0.0)]
  cpu = flops.step_fields(b, state, [1.0, 3.0], ms)
  assert cpu["mfu_step"] is None and cpu["mfu_rollout"] is None and cpu["mfu_update"] is None
  assert cpu["model_flops_per_step"] == bound.total
  assert cpu["model_flops_per_policy_call"] == 16 * bound.per_example_forward
  # the median repeat (3 s) rolled out 1 call and applied no update
  assert cpu["model_flops_step_actual"] == cpu["model_flops_rollout_actual"] == bound.rollout // 2
  assert flops.step_fields(b, state, [3.0, 1.0], ms)["model_flops_step_actual"] == bound.total
  gpu = flops.step_fields(b, state, [100.0], ms[:1], device_kind="NVIDIA H100 80GB HBM3")
  # 8 fake devices, a float32 model: the TF32 peak
  assert gpu["mfu_step"] == pytest.approx(bound.total / 100.0 / (494.7e12 * 8))
  assert 0 < gpu["rollout_s"] < 100.0 and gpu["update_s_derived"] == 100.0 - gpu["rollout_s"]
  for k in ("mfu_step", "mfu_rollout", "mfu_update"):
    assert 0 < gpu[k] < 1, (k, gpu[k])
