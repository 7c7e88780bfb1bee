"""Advantages, dynamic sampling and every registered loss against values worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax.rl import advantages as adv_lib
from vla_rl_jax.rl.losses import LOSSES, LossInputs


def rl_cfg(**kw):
  c = get_config("variant=tiny")
  for k, v in kw.items():
    setattr(c.rl, k, v)
  return config_lib.resolve(c).rl


def test_registries_match_config_names():
  assert set(LOSSES) == set(config_lib.LOSS_NAMES)
  assert set(adv_lib.ADVANTAGES) == set(config_lib.ADVANTAGE_NAMES)


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
  """float64 numpy: the formulas of advantages.py's docstring."""
  mean = r.mean(-1, keepdims=True)
  if name == "grpo":
    return (r - mean) / (r.std(-1, ddof=1, keepdims=True) + eps)
  if name == "rloo":
    return r - (r.sum(-1, keepdims=True) - r) / (r.shape[-1] - 1)
  return r - mean


@pytest.mark.parametrize("name", sorted(adv_lib.ADVANTAGES))
def test_all_equal_groups_are_exactly_zero_under_jit(name):
  """With dynamic sampling off, any residue on an all-equal group is a spurious gradient."""
  f = jax.jit(lambda r: adv_lib.ADVANTAGES[name](r, 1e-6))
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
    np.testing.assert_allclose(a[4:], _reference(name, r[4:].astype(np.float64), 1e-6),
                               rtol=1e-5, atol=1e-5, err_msg=f"G={g}")


def test_rloo_and_dr_grpo_by_hand():
  r = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(adv_lib.rloo(r, 0.0), [[1.0, -1 / 3, -1 / 3, -1 / 3]], rtol=1e-6)
  np.testing.assert_allclose(adv_lib.dr_grpo(r, 0.0), [[0.75, -0.25, -0.25, -0.25]], rtol=1e-6)


def _inputs(logp, old, adv, mask, w):
  logp = jnp.asarray(logp, jnp.float32)
  return LossInputs(logp=logp, old_logp=jnp.asarray(old, jnp.float32),
                    advantages=jnp.asarray(adv, jnp.float32), token_mask=jnp.asarray(mask, jnp.float32),
                    traj_weight=jnp.asarray(w, jnp.float32), entropy=jnp.zeros_like(logp))


def test_ppo_clip_higher_is_asymmetric():
  cfg = rl_cfg(clip_low=0.2, clip_high=0.28)
  # ratio 1.5 with positive advantage: clipped at 1.28 (not 1.2)
  inp = _inputs([[np.log(1.5)]], [[0.0]], [1.0], [[1.0]], [1.0])
  loss, m = LOSSES["ppo_clip"](inp, cfg)
  np.testing.assert_allclose(loss, -1.28, rtol=1e-6)
  assert float(m["clip_frac"]) == 1.0
  # ratio 0.5 with negative advantage: min(0.5 * -1, 0.8 * -1) = -0.8 -> loss 0.8
  inp = _inputs([[np.log(0.5)]], [[0.0]], [-1.0], [[1.0]], [1.0])
  np.testing.assert_allclose(LOSSES["ppo_clip"](inp, cfg)[0], 0.8, rtol=1e-6)
  # ratio 1.25, A > 0: inside the higher bound, not clipped (symmetric 0.2 would clip)
  inp = _inputs([[np.log(1.25)]], [[0.0]], [2.0], [[1.0]], [1.0])
  loss, m = LOSSES["ppo_clip"](inp, cfg)
  np.testing.assert_allclose(loss, -2.5, rtol=1e-6)
  assert float(m["clip_frac"]) == 0.0
  # ratio 1.5, A < 0: the pessimistic min keeps the unclipped 1.5 * -1
  inp = _inputs([[np.log(1.5)]], [[0.0]], [-1.0], [[1.0]], [1.0])
  np.testing.assert_allclose(LOSSES["ppo_clip"](inp, cfg)[0], 1.5, rtol=1e-6)


def test_token_mask_and_trajectory_then_batch_mean():
  cfg = rl_cfg(clip_low=0.2, clip_high=0.28)
  # traj 0: 2 valid tokens of 4 at ratio 1 -> surrogate A0 = 1; traj 1: 1 valid token, A1 = -2;
  # traj 2 is dropped by dynamic sampling (weight 0) whatever its values.
  logp = [[0.0, 0.0, 5.0, 5.0], [0.0, 9.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0]]
  old = np.zeros((3, 4))
  mask = [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
  inp = _inputs(logp, old, [1.0, -2.0, 7.0], mask, [1.0, 1.0, 0.0])
  loss, _ = LOSSES["ppo_clip"](inp, cfg)
  # per-trajectory means: 1 and -2 -> batch mean over the 2 survivors: -0.5 -> loss +0.5
  np.testing.assert_allclose(loss, 0.5, rtol=1e-6)
  # DAPO-style token mean: (1 + 1 - 2) / 3 valid tokens = 0
  loss_tok, _ = LOSSES["ppo_clip_token_mean"](inp, cfg)
  np.testing.assert_allclose(loss_tok, 0.0, atol=1e-7)
  # reinforce: -(A * logp) = 0 at logp 0 for the masked-in tokens
  np.testing.assert_allclose(LOSSES["reinforce"](inp, cfg)[0], 0.0, atol=1e-7)


def test_all_groups_dropped_gives_zero_loss_not_nan():
  cfg = rl_cfg()
  inp = _inputs([[0.3, 0.1]], [[0.0, 0.0]], [0.0], [[1, 1]], [0.0])
  for name, fn in LOSSES.items():
    loss, m = fn(inp, cfg)
    assert float(loss) == 0.0, name
    assert all(np.isfinite(np.asarray(v)).all() for v in m.values()), name


def test_kl_and_entropy_terms():
  cfg = rl_cfg(kl_coef=0.5, entropy_coef=0.1)
  inp = _inputs([[0.0]], [[0.0]], [0.0], [[1.0]], [1.0]).replace(
      ref_logp=jnp.array([[np.log(2.0)]]), entropy=jnp.array([[3.0]]))
  loss, m = LOSSES["ppo_clip"](inp, cfg)
  k3 = 2.0 - np.log(2.0) - 1.0  # exp(r) - r - 1 with r = log 2
  np.testing.assert_allclose(m["kl_ref"], k3, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * k3 - 0.1 * 3.0, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_sign_raises_good_tokens(name):
  """Descending the loss makes positive-advantage tokens more likely and negative ones less."""
  import jax
  cfg = rl_cfg()
  def f(logp):
    inp = _inputs(logp, [[0.0, 0.0]], [1.0, -1.0], [[1, 1], [1, 1]], [1.0, 1.0])
    return LOSSES[name](inp.replace(old_logp=jnp.zeros((2, 2))), cfg)[0]
  g = jax.grad(f)(jnp.zeros((2, 2)))
  assert np.all(np.asarray(g[0]) < 0) and np.all(np.asarray(g[1]) > 0)
