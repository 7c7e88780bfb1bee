"""Advantages, dynamic sampling and every registered loss against values worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from envs import schema
from vla_rl_jax.rl import advantages as adv_lib
from vla_rl_jax.rl import losses as losses_lib
from vla_rl_jax.rl import registry
from vla_rl_jax.rl.losses import LossInputs, make_loss
from vla_rl_jax.rl.registry import register_loss

LOSS_NAMES = registry.names("loss")
ADVANTAGE_NAMES = registry.names("advantage")


def rl_cfg(loss_kwargs=None, **kw):
  c = get_config("variant=tiny")
  for k, v in kw.items():
    setattr(c.rl, k, v)
  for k, v in (loss_kwargs or {}).items():
    c.rl.loss_kwargs[k] = v
  return config_lib.resolve(c).rl


def run_loss(name, inp, loss_kwargs=None, **rl):
  """The registered loss `name` with options resolved by config.resolve, under jax.jit."""
  return jax.jit(make_loss(rl_cfg(loss_kwargs, loss=name, **rl)))(inp)


def test_config_accepts_exactly_the_registered_names():
  assert {"ppo_clip", "ppo_clip_token_mean", "ppo_clip_seq_mean", "gspo", "reinforce"} <= set(LOSS_NAMES)
  assert {"grpo", "rloo", "dr_grpo", "reinforce_pp"} <= set(ADVANTAGE_NAMES)
  for name in LOSS_NAMES:
    assert rl_cfg(loss=name).loss == name
  for name in ADVANTAGE_NAMES:
    assert rl_cfg(advantage=name).advantage == name
  with pytest.raises(config_lib.ConfigError, match="rl.loss='not_registered'"):
    rl_cfg(loss="not_registered")


def test_grpo_by_hand():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
  a = adv_lib.grpo(r, 1e-6)
  # group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735
  np.testing.assert_allclose(a[0], [0.866025, -0.866025, -0.866025, 0.866025], rtol=1e-5)
  # group 1: mean 0.25, std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
  np.testing.assert_allclose(a[1], [1.5, -0.5, -0.5, -0.5], rtol=1e-5)


def test_all_equal_groups_have_zero_advantage_and_weight():
  r = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  adv, w = adv_lib.compute("grpo", r, 1e-6, dynamic_sampling=True)
  np.testing.assert_array_equal(adv[:2], 0.0)
  np.testing.assert_array_equal(w, [[0, 0, 0], [0, 0, 0], [1, 1, 1]])
  _, w_off = adv_lib.compute("grpo", r, 1e-6, dynamic_sampling=False)
  np.testing.assert_array_equal(w_off, 1.0)


def _reference(name, r, eps):
  """float64 numpy: the formulas of advantages.py's docstring (weights all 1)."""
  mean = r.mean(-1, keepdims=True)
  if name == "grpo":
    return (r - mean) / (r.std(-1, ddof=1, keepdims=True) + eps)
  if name == "rloo":
    return r - (r.sum(-1, keepdims=True) - r) / (r.shape[-1] - 1)
  if name == "reinforce_pp":
    x = r - mean
    return (x - x.mean()) / (x.std() + eps)
  return r - mean


@pytest.mark.parametrize("name", [n for n in ADVANTAGE_NAMES if not n.startswith("test_")])
def test_all_equal_groups_are_exactly_zero_under_jit(name):
  """With dynamic sampling off, any residue on an all-equal group is a spurious gradient."""
  fn = registry.get("advantage", name).fn
  f = jax.jit(lambda r: fn(r, 1e-6))
  rng = np.random.default_rng(0)
  for g in range(2, 17):
    # all-0 and all-1 groups (the rewards the rollout gives); under this CPU's XLA they round only
    # for rloo, while backends that fuse the mean into a multiply-add round for grpo too (residue
    # 1 ulp, advantage up to 0.05). Equal groups of 0.7 and 1/3 round under jit here (grpo: 0.1).
    equal = np.repeat([[0.0], [1.0], [0.7], [1 / 3]], g, axis=1)
    mixed01 = rng.permuted(np.concatenate([[[0.0, 1.0]] * 6, rng.integers(0, 2, (6, g - 2))], 1), axis=1)
    mixed = rng.uniform(size=(4, g))
    r = np.concatenate([equal, mixed01, mixed]).astype(np.float32)
    a = np.asarray(f(jnp.asarray(r)))
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a[:4], 0.0, err_msg=f"G={g}")
    np.testing.assert_allclose(a[4:], _reference(name, r.astype(np.float64), 1e-6)[4:],
                               rtol=1e-5, atol=1e-5, err_msg=f"G={g}")


def test_rloo_and_dr_grpo_by_hand():
  r = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(adv_lib.rloo(r, 0.0), [[1.0, -1 / 3, -1 / 3, -1 / 3]], rtol=1e-6)
  np.testing.assert_allclose(adv_lib.dr_grpo(r, 0.0), [[0.75, -0.25, -0.25, -0.25]], rtol=1e-6)


def test_reinforce_pp_normalises_over_the_surviving_batch_by_hand():
  r = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
  f = jax.jit(lambda r, ds: adv_lib.compute("reinforce_pp", r, 0.0, ds), static_argnums=1)
  # x = R - group mean: [.75, -.25, -.25, -.25], [.5, .5, -.5, -.5], [0] * 4; batch mean 0.
  # Dynamic sampling keeps the first two groups: std = sqrt((.75 + 1) / 8) = 0.467707
  adv, w = f(r, True)
  s = np.sqrt(1.75 / 8)
  np.testing.assert_allclose(adv[0], np.array([0.75, -0.25, -0.25, -0.25]) / s, rtol=1e-5)
  np.testing.assert_allclose(adv[1], np.array([0.5, 0.5, -0.5, -0.5]) / s, rtol=1e-5)
  np.testing.assert_array_equal(adv[2], 0.0)
  np.testing.assert_array_equal(w[2], 0.0)
  # without it all 12 count (the uniform group's x = 0 widens nothing but the count): sqrt(1.75/12)
  adv, _ = f(r, False)
  np.testing.assert_allclose(adv[0, 0], 0.75 / np.sqrt(1.75 / 12), rtol=1e-5)   # 1.963961
  np.testing.assert_array_equal(adv[2], 0.0)


def _inputs(logp, old, adv, mask, w, **layout):
  logp = jnp.asarray(logp, jnp.float32)
  return LossInputs(logp=logp, old_logp=jnp.asarray(old, jnp.float32),
                    advantages=jnp.asarray(adv, jnp.float32), token_mask=jnp.asarray(mask, jnp.float32),
                    traj_weight=jnp.asarray(w, jnp.float32), entropy=jnp.zeros_like(logp), **layout)


def test_ppo_clip_higher_is_asymmetric():
  # ratio 1.5 with positive advantage: clipped at 1.28 (not 1.2)
  inp = _inputs([[np.log(1.5)]], [[0.0]], [1.0], [[1.0]], [1.0])
  loss, m = run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.28)
  np.testing.assert_allclose(loss, -1.28, rtol=1e-6)
  assert float(m["clip_frac"]) == 1.0
  # ratio 0.5 with negative advantage: min(0.5 * -1, 0.8 * -1) = -0.8 -> loss 0.8
  inp = _inputs([[np.log(0.5)]], [[0.0]], [-1.0], [[1.0]], [1.0])
  np.testing.assert_allclose(run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.28)[0], 0.8, rtol=1e-6)
  # ratio 1.25, A > 0: inside the higher bound, not clipped (symmetric 0.2 would clip)
  inp = _inputs([[np.log(1.25)]], [[0.0]], [2.0], [[1.0]], [1.0])
  loss, m = run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.28)
  np.testing.assert_allclose(loss, -2.5, rtol=1e-6)
  assert float(m["clip_frac"]) == 0.0
  # ratio 1.5, A < 0: the pessimistic min keeps the unclipped 1.5 * -1
  inp = _inputs([[np.log(1.5)]], [[0.0]], [-1.0], [[1.0]], [1.0])
  np.testing.assert_allclose(run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.28)[0], 1.5, rtol=1e-6)


def test_token_mask_and_trajectory_then_batch_mean():
  # traj 0: 2 valid tokens of 4 at ratio 1 -> surrogate A0 = 1; traj 1: 1 valid token, A1 = -2;
  # traj 2 is dropped by dynamic sampling (weight 0) whatever its values.
  logp = [[0.0, 0.0, 5.0, 5.0], [0.0, 9.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0]]
  old = np.zeros((3, 4))
  mask = [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
  inp = _inputs(logp, old, [1.0, -2.0, 7.0], mask, [1.0, 1.0, 0.0])
  loss, _ = run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.28)
  # per-trajectory means: 1 and -2 -> batch mean over the 2 survivors: -0.5 -> loss +0.5
  np.testing.assert_allclose(loss, 0.5, rtol=1e-6)
  # DAPO-style token mean: (1 + 1 - 2) / 3 valid tokens = 0
  loss_tok, _ = run_loss("ppo_clip_token_mean", inp)
  np.testing.assert_allclose(loss_tok, 0.0, atol=1e-7)
  # reinforce: -(A * logp) = 0 at logp 0 for the masked-in tokens
  np.testing.assert_allclose(run_loss("reinforce", inp)[0], 0.0, atol=1e-7)


def test_sequence_mean_divides_each_trajectory_sum_by_the_full_length():
  # ratio 1 everywhere, so every valid token's surrogate is its trajectory's advantage
  mask = [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
  inp = _inputs(np.zeros((3, 4)), np.zeros((3, 4)), [1.0, -2.0, 7.0], mask, [1.0, 1.0, 0.0])
  # per trajectory then batch: (1 + -2) / 2 survivors
  np.testing.assert_allclose(run_loss("ppo_clip", inp)[0], 0.5, rtol=1e-6)
  # all valid tokens of the survivors: (3 * 1 - 2) / 4
  np.testing.assert_allclose(run_loss("ppo_clip_token_mean", inp)[0], -0.25, rtol=1e-6)
  # per-trajectory sums over L' = 4: 3/4 and -2/4, then their mean: 0.125
  np.testing.assert_allclose(run_loss("ppo_clip_seq_mean", inp)[0], -0.125, rtol=1e-6)


def test_gspo_clips_the_length_normalised_sequence_ratio():
  # valid log-ratios log 1.5 and 0 -> s = exp(log(1.5) / 2) = 1.224745; the masked token's 50 is ignored
  logp = [[np.log(1.5), 0.0, 50.0]]
  mask = [[1, 1, 0]]
  inp = _inputs(logp, np.zeros((1, 3)), [1.0], mask, [1.0])
  loss, m = run_loss("gspo", inp)               # default clip [1 - 3e-4, 1 + 4e-4]
  np.testing.assert_allclose(loss, -1.0004, rtol=1e-6)
  assert float(m["clip_frac"]) == 1.0
  loss, m = run_loss("gspo", inp, loss_kwargs=dict(seq_clip_high=0.5))
  np.testing.assert_allclose(loss, -np.sqrt(1.5), rtol=1e-6)
  assert float(m["clip_frac"]) == 0.0
  # A < 0 with s = 0.5: min(-0.5, -(1 - 3e-4)) = -0.9997
  inp = _inputs([[np.log(0.5), np.log(0.5)]], np.zeros((1, 2)), [-1.0], [[1, 1]], [1.0])
  np.testing.assert_allclose(run_loss("gspo", inp)[0], 0.9997, rtol=1e-6)


def test_ratio_per_token_action_or_chunk_by_hand():
  # C = 2 calls x K = 2 actions x D = 2 dims; A = 1, clip 0.2 / 0.28
  log_r = [[0.1, 0.2, 0.3, -0.1, 0.05, 0.05, 0.4, 0.0]]
  inp = _inputs(log_r, np.zeros((1, 8)), [1.0], np.ones((1, 8)), [1.0], action_dim=2, chunk_size=2)
  loss = lambda level, x=inp: run_loss("ppo_clip", x, dict(ratio_level=level))[0]
  # token: min(r, clip(r)) of e^.1, e^.2, e^.3 -> 1.28, e^-.1, e^.05, e^.05, e^.4 -> 1.28, 1
  tok = (1.105171 + 1.221403 + 1.28 + 0.904837 + 1.051271 + 1.051271 + 1.28 + 1.0) / 8
  np.testing.assert_allclose(loss("token"), -tok, rtol=1e-5)
  # action: sums .3, .2, .1, .4 -> e^.3 -> 1.28, e^.2, e^.1, e^.4 -> 1.28
  np.testing.assert_allclose(loss("action"), -(1.28 + 1.221403 + 1.105171 + 1.28) / 4, rtol=1e-5)
  # chunk: sums .5, .5 -> both clipped at 1.28
  np.testing.assert_allclose(loss("chunk"), -1.28, rtol=1e-6)
  # masked tokens (garbage log-probs) are outside every sum, even inside a partly valid group:
  # groups .05 + .1 and .1 (+ 30 masked) -> e^.15 on 2 tokens, e^.1 on 1; chunk: e^.25 -> 1.28
  masked = inp.replace(logp=jnp.array([[0.05, 0.1, 0.1, 30.0, 30.0, 30.0, 30.0, 30.0]]),
                       token_mask=jnp.array([[1.0] * 3 + [0.0] * 5]))
  np.testing.assert_allclose(loss("action", masked), -(2 * 1.161834 + 1.105171) / 3, rtol=1e-5)
  np.testing.assert_allclose(loss("chunk", masked), -1.28, rtol=1e-6)


def test_dual_clip_bounds_negative_advantages_only():
  ratio5 = lambda a: _inputs([[np.log(5.0)]], [[0.0]], [a], [[1.0]], [1.0])
  # A < 0, ratio 5: min(-5, -1.28) = -5; dual clip c = 3 raises it to -3
  np.testing.assert_allclose(run_loss("ppo_clip", ratio5(-1.0))[0], 5.0, rtol=1e-6)
  np.testing.assert_allclose(run_loss("ppo_clip", ratio5(-1.0), dict(dual_clip=3.0))[0], 3.0,
                             rtol=1e-6)
  # A > 0: unchanged (clipped at 1.28 either way)
  np.testing.assert_allclose(run_loss("ppo_clip", ratio5(1.0), dict(dual_clip=3.0))[0], -1.28,
                             rtol=1e-6)
  # A < 0, ratio 2: -2 is above -3, the bound does not bite
  inp = _inputs([[np.log(2.0)]], [[0.0]], [-1.0], [[1.0]], [1.0])
  np.testing.assert_allclose(run_loss("ppo_clip_token_mean", inp, dict(dual_clip=3.0))[0], 2.0,
                             rtol=1e-6)


def test_symmetric_clip_versus_clip_higher():
  inp = _inputs([[np.log(1.25)]], [[0.0]], [1.0], [[1.0]], [1.0])
  np.testing.assert_allclose(run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.2)[0], -1.2, rtol=1e-6)
  np.testing.assert_allclose(run_loss("ppo_clip", inp, clip_low=0.2, clip_high=0.28)[0], -1.25,
                             rtol=1e-6)


def test_kl_and_entropy_terms():
  inp = _inputs([[0.0]], [[0.0]], [0.0], [[1.0]], [1.0]).replace(
      ref_logp=jnp.array([[np.log(2.0)]]), entropy=jnp.array([[3.0]]))
  loss, m = run_loss("ppo_clip", inp, kl_coef=0.5, entropy_coef=0.1)
  k3 = 2.0 - np.log(2.0) - 1.0  # exp(r) - r - 1 with r = log 2
  np.testing.assert_allclose(m["kl_ref"], k3, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * k3 - 0.1 * 3.0, rtol=1e-6)
  assert "kl_ref" not in run_loss("ppo_clip", inp)[1]   # kl_coef = 0: no term, no reference needed


def _variants():
  """(loss, options): every registered loss at its defaults, the clipped ones at each ratio level."""
  out = []
  for name in LOSS_NAMES:
    out.append((name, {}))
    if "ratio_level" in registry.get("loss", name).schema.names:
      out += [(name, dict(ratio_level="action", dual_clip=3.0)), (name, dict(ratio_level="chunk"))]
  return out


@pytest.mark.parametrize("name, options", _variants())
def test_every_loss_under_jit(name, options):
  """Descending the loss makes positive-advantage tokens more likely and negative ones less; the
  first ratio is 1; a batch whose groups were all dropped gives exactly 0, never nan."""
  layout = dict(action_dim=2, chunk_size=2)
  mask = jnp.array([[1.0] * 8, [1.0] * 4 + [0.0] * 4])   # trajectory 1 ended after one call
  cfg = rl_cfg(options, loss=name)
  fn = make_loss(cfg)

  @jax.jit
  def f(logp, w):
    inp = _inputs(logp, jnp.zeros((2, 8)), [1.0, -1.0], mask, w, **layout)
    return fn(inp)
  g = jax.grad(lambda lp: f(lp, jnp.ones(2))[0])(jnp.zeros((2, 8)))
  assert np.all(np.asarray(g[0]) < 0) and np.all(np.asarray(g[1, :4]) > 0), g
  np.testing.assert_array_equal(g[1, 4:], 0.0)       # tokens that never ran carry no gradient
  loss, m = f(jnp.zeros((2, 8)), jnp.ones(2))
  assert float(m["ratio_max_dev"]) == 0.0
  loss, m = f(jnp.full((2, 8), 0.3), jnp.zeros(2))
  assert float(loss) == 0.0
  assert all(np.isfinite(np.asarray(v)).all() for v in m.values())


@register_loss("test_scaled_reinforce",
               schema.Float("scale", 2.0, "multiplies the reinforce loss", lo=0.0, lo_open=True),
               schema.Bool("report", False, "adds the scale to the metrics"))
def _scaled_reinforce(inp, cfg, *, scale, report):
  loss, m = losses_lib.reinforce(inp, cfg)
  return scale * loss, dict(m, scale=jnp.float32(scale)) if report else m


def test_a_loss_registered_outside_the_package_is_configured_and_used():
  cfg = rl_cfg(loss="test_scaled_reinforce")
  assert cfg.loss_kwargs == (("report", False), ("scale", 2.0))    # declared defaults
  cfg = rl_cfg(dict(scale=3, report=True), loss="test_scaled_reinforce")
  assert cfg.loss_kwargs == (("report", True), ("scale", 3.0))
  inp = _inputs([[0.5]], [[0.0]], [2.0], [[1.0]], [1.0])
  loss, m = jax.jit(make_loss(cfg))(inp)
  np.testing.assert_allclose(loss, 3 * -(2.0 * 0.5), rtol=1e-6)
  assert float(m["scale"]) == 3.0
  with pytest.raises(config_lib.ConfigError, match=r"^config.rl.loss_kwargs.scale=0.0: must be > 0"):
    rl_cfg(dict(scale=0.0), loss="test_scaled_reinforce")
  with pytest.raises(config_lib.ConfigError,
                     match=r"^config.rl.loss_kwargs.scael=1: unknown option .* did you mean 'scale'"):
    rl_cfg(dict(scael=1), loss="test_scaled_reinforce")


def test_registering_checks_names_options_and_signatures():
  with pytest.raises(ValueError, match="already registered"):
    register_loss("ppo_clip")(lambda inp, cfg: None)
  with pytest.raises(TypeError, match=r"does not take the declared option\(s\) \['beta'\]"):
    register_loss("test_bad_sig", schema.Float("beta", 1.0, ""))(lambda inp, cfg: None)
  with pytest.raises(ValueError, match="shared option name must keep its type and default"):
    register_loss("test_clash", schema.Float("dual_clip", 3.0, ""))(
        lambda inp, cfg, dual_clip: None)
  assert "test_bad_sig" not in registry.names("loss") and "test_clash" not in registry.names("loss")


@registry.register_advantage("test_raw_reward")
def _raw_reward(rewards, eps, weight=None):
  del eps, weight
  return rewards


def test_a_registered_advantage_is_configured_and_zero_on_uniform_groups():
  assert rl_cfg(advantage="test_raw_reward").advantage == "test_raw_reward"
  adv, _ = jax.jit(lambda r: adv_lib.compute("test_raw_reward", r, 1e-6, False))(
      jnp.array([[1.0, 1.0], [1.0, 0.0]]))
  np.testing.assert_array_equal(adv, [[0.0, 0.0], [1.0, 0.0]])   # the uniform group: exactly 0
