"""rl.grad_accum="per_call": the same update as one value_and_grad, one policy call of one
micro-batch of activations at a time (vla_rl_jax.train_step.make_grad_fn)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax import sharding
from vla_rl_jax.builders import build
from vla_rl_jax.rollout import rollout
from vla_rl_jax.train_step import make_grad_fn, make_train_step

# Both modes compute the same sums in a different order (per call and micro-batch, then added):
# fp32 reduction noise, bounded relative to the gradient's largest entry.
RTOL, ATOL_REL = 1e-5, 1e-5


def tiny_config(num_devices=1, episode_length=16, **rl):
  """fake_reach, tiny model, fp32: C = episode_length / 4 calls; 8 trajectories in 2 blocks of 4;
  on 8 devices a (data 2, tensor 4) mesh: one block per batch shard, parameters split 4 ways."""
  c = get_config("variant=tiny")
  c.env.episode_length = episode_length
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 2, 4, 8
  c.rl.shuffle_blocks = 2
  c.train.eval_num_states = 8
  if num_devices == 8:
    c.mesh.data, c.mesh.tensor = 2, 4
  for k, v in rl.items():
    setattr(c.rl, k, v)
  return config_lib.resolve(c, num_devices)


def with_rl(b, **rl):
  """The built run with other rl fields (same model, env and parameters), re-validated."""
  d = config_lib.to_dict(b.cfg)
  d["rl"].update(rl)
  return dataclasses.replace(b, cfg=config_lib.resolve(d, len(b.mesh.devices.flat)))


@pytest.fixture(scope="module")
def setup():
  """A real rolled-out minibatch of 8 trajectories (4 calls), old log-probs moved off the current
  policy (so ratios differ from 1 and clipping is active), random advantages, trajectory 2 dropped
  and the last call reached by no one. Sharded as in the train step, on 8 devices (2 batch shards
  x 4 tensor-parallel)."""
  cfg = tiny_config(8)
  b = build(cfg, devices=jax.devices()[:8])
  state, _ = b.init_fn()
  traj, _ = jax.jit(lambda p, r: rollout(
      b.env, b.policy, p, r, text_table=b.text_table, num_prompts=2, group_size=4,
      num_calls=cfg.num_calls, temperature=1.6, camera=cfg.env.camera,
      store=cfg.rollout.store))(state.params, jax.random.PRNGKey(1))
  rng = np.random.default_rng(0)
  mask = np.array(traj.token_mask)
  mask[:, -1] = 0.0                       # call 3: unreached by every trajectory
  mask[5, 2:] = 0.0                       # trajectory 5 ended after 2 calls
  traj = traj.replace(token_mask=jnp.asarray(mask),
                      logp=traj.logp + jnp.asarray(rng.normal(size=traj.logp.shape) * 0.3,
                                                   jnp.float32))
  adv = jnp.asarray(rng.normal(size=8), jnp.float32)
  weights = jnp.asarray([1, 1, 0, 1, 1, 1, 1, 1], jnp.float32)
  # the reference policy for KL: other parameters than the current ones
  ref = jax.tree_util.tree_map(
      lambda x: x + 0.05 * jnp.asarray(rng.normal(size=x.shape), x.dtype), state.params)
  ref = jax.device_put(ref, b.state_shardings.params)
  traj, adv, weights = jax.device_put((traj, adv, weights), sharding.batch(b.mesh))
  return b, state.params, ref, traj, adv, weights


_COMPILED = {}


def grad_fn(b, **rl):
  """jit(make_grad_fn) of the run with these rl fields, compiled once per module."""
  key = tuple(sorted(rl.items()))
  if key not in _COMPILED:
    _COMPILED[key] = jax.jit(make_grad_fn(with_rl(b, **rl)))
  return _COMPILED[key]


def assert_same_grads(a, b):
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(a))
  assert scale > 0
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(
      np.asarray(y), np.asarray(x), rtol=RTOL, atol=ATOL_REL * scale), a, b)


# `make test`: GSPO (a sequence-level ratio, not linear in the tokens) and ppo_clip with the KL and
# entropy terms (which contains plain ppo_clip); the two token-mean variants in `make test-slow`.
LOSSES = [
    pytest.param(dict(loss="ppo_clip"), marks=pytest.mark.slow),
    pytest.param(dict(loss="ppo_clip_token_mean"), marks=pytest.mark.slow),
    dict(loss="gspo"),
    dict(loss="ppo_clip", kl_coef=0.1, entropy_coef=0.01),
]


def _loss_id(d):
  return "-".join(f"{k}={v}" for k, v in d.items())


@pytest.mark.parametrize("loss", LOSSES, ids=_loss_id)
def test_per_call_micro_batches_give_the_same_loss_metrics_and_gradients(setup, loss):
  b, params, ref, traj, adv, w = setup
  ref = ref if loss.get("kl_coef") else None
  (l0, m0), g0 = grad_fn(b, grad_accum="off", **loss)(params, traj, adv, w, ref)
  (l1, m1), g1 = grad_fn(b, grad_accum="per_call", micro_batch_size=2, **loss)(
      params, traj, adv, w, ref)
  assert m0.keys() == m1.keys()
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
  for k in m0:
    np.testing.assert_allclose(float(m1[k]), float(m0[k]), rtol=1e-6, atol=1e-7, err_msg=k)
  if loss["loss"] == "gspo":
    assert float(m0["clip_frac"]) > 0  # the sequence ratio is clipped for some trajectories
  assert_same_grads(g0, g1)


def test_remat_calls_gives_the_same_gradients(setup):
  b, params, _, traj, adv, w = setup
  (l0, _), g0 = grad_fn(b, grad_accum="off", loss="ppo_clip")(params, traj, adv, w, None)
  (l1, _), g1 = grad_fn(b, grad_accum="off", loss="ppo_clip", remat_calls=True)(
      params, traj, adv, w, None)
  assert float(l1) == float(l0)
  assert_same_grads(g0, g1)


def test_dropped_trajectories_and_unreached_calls_contribute_nothing(setup):
  """Garbage in a dropped trajectory (tokens, old log-probs, advantage, frames) and in tokens that
  never ran changes nothing, and NaN frames of a call nobody reached are never put through the
  model (lax.cond), forward or backward, in both modes; per_call also skips a call per
  micro-batch (micro-batch 0 = rows 0, 1, 4, 5 of the 2 blocks of 4)."""
  b, params, _, traj, adv, w = setup
  rng = np.random.default_rng(1)
  tokens = np.array(traj.tokens)
  logp = np.array(traj.logp)
  mask = np.array(traj.token_mask)
  garbage_tokens = rng.integers(0, 256, size=tokens.shape)
  garbage_logp = rng.normal(size=logp.shape) * 5.0
  dead = mask == 0
  dead[2] = True                                        # every token of the dropped trajectory
  tokens[dead], logp[dead] = garbage_tokens[dead], garbage_logp[dead]
  adv_bad = np.array(adv)
  adv_bad[2] = 100.0

  def poison(tree, rows, calls, value):
    def f(x):
      x = np.array(x)
      sel = x[rows][:, calls]
      x[np.ix_(rows, calls)] = value(sel)
      return jnp.asarray(x)
    return jax.tree_util.tree_map(f, tree)

  noise = lambda s: s + rng.normal(size=s.shape) * 3.0
  nan = lambda s: np.full_like(s, np.nan)
  frames, proprio = poison((traj.frames, traj.proprio), [2], [0, 1, 2], noise)
  frames, proprio = poison((frames, proprio), list(range(8)), [3], nan)
  on_batch = lambda t: jax.device_put(t, sharding.batch(b.mesh))  # as compiled: no recompile
  bad = on_batch(traj.replace(tokens=jnp.asarray(tokens), logp=jnp.asarray(logp), frames=frames,
                              proprio=proprio))
  adv_bad = on_batch(jnp.asarray(adv_bad))
  for rl in (dict(grad_accum="off"), dict(grad_accum="per_call", micro_batch_size=2)):
    fn = grad_fn(b, loss="ppo_clip", **rl)
    (l0, m0), g0 = fn(params, traj, adv, w, None)
    (l1, m1), g1 = fn(params, bad, adv_bad, w, None)
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6, err_msg=str(rl))
    assert_same_grads(g0, g1)

  # per micro-batch: call 2 unreached by micro-batch 0 only (rows 0, 1, 4, 5; 2 is dropped)
  mask2 = np.array(traj.token_mask)
  mask2[[0, 1, 4, 5], 2] = 0.0
  base = on_batch(traj.replace(token_mask=jnp.asarray(mask2)))
  frames, proprio = poison((base.frames, base.proprio), [0, 1, 4, 5], [2], nan)
  nan2 = on_batch(base.replace(frames=frames, proprio=proprio))
  fn = grad_fn(b, loss="ppo_clip", grad_accum="per_call", micro_batch_size=2)
  (l0, _), g0 = fn(params, base, adv, w, None)
  (l1, _), g1 = fn(params, nan2, adv, w, None)
  assert np.isfinite(float(l1))
  assert_same_grads(g0, g1)
  (l_off, _), g_off = grad_fn(b, loss="ppo_clip", grad_accum="off")(params, base, adv, w, None)
  np.testing.assert_allclose(float(l0), float(l_off), rtol=1e-6)
  assert_same_grads(g_off, g0)


def _mean_abs(tree):
  leaves = jax.tree_util.tree_leaves(tree)
  return sum(float(jnp.sum(jnp.abs(x))) for x in leaves) / sum(x.size for x in leaves)


@pytest.mark.slow  # two fused steps compiled on 8 devices: about 100 s on the 2-core CPU
def test_train_step_on_8_devices_same_update_as_one_value_and_grad():
  """The real fused step (rollout, 2 epochs of 1 minibatch) on 8 fake devices (2 batch shards x 4
  tensor-parallel: the accumulator is sharded as the parameters are), 4 trajectories per batch
  shard in micro-batches of 2, KL and entropy terms on."""
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 2, 4, 8
  c.mesh.data, c.mesh.tensor = 2, 4
  c.train.eval_num_states = 8
  c.rl.num_epochs, c.rl.kl_coef, c.rl.entropy_coef = 2, 0.1, 0.01
  c.rl.dynamic_sampling = False  # every trajectory counts: the update is never skipped
  cfg = config_lib.resolve(c, 8)
  b = build(cfg, devices=jax.devices()[:8])
  out = {}
  for name, rl in (("off", dict(grad_accum="off")),
                   ("per_call", dict(grad_accum="per_call", micro_batch_size=2))):
    bb = with_rl(b, **rl)
    state, stats = b.init_fn()
    before = jax.device_get(state.params)
    state, _, m = make_train_step(bb)(state, stats)
    out[name] = (jax.device_get(state.params), jax.device_get(m))
  (p0, m0), (p1, m1) = out["off"], out["per_call"]
  assert m0.keys() == m1.keys() and float(m0["updates_applied"]) == 2
  for k in m0:
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # the update itself (new - old); AdamW moves every entry by up to ~lr = 3e-3 whatever its
  # gradient's size, so reduction noise in a small gradient entry shows at a fraction of lr (seen:
  # 5e-3 lr in the second epoch); a missing or doubled call moves entries by ~lr. A gradient that
  # is 0 in exact arithmetic (the attention key bias: softmax ignores it) is reduction noise that
  # Adam scales up to ~lr in either mode, so those entries are compared at lr's scale
  lr = cfg.optim.learning_rate
  d0 = jax.tree_util.tree_map(lambda a, x: a - x, p0, before)
  d1 = jax.tree_util.tree_map(lambda a, x: a - x, p1, before)
  assert _mean_abs(d0) > 0.1 * lr  # the parameters moved
  flat0 = jax.tree_util.tree_flatten_with_path(d0)[0]
  flat1 = jax.tree_util.tree_leaves(d1)
  for (path, x), y in zip(flat0, flat1):
    key_bias = "key" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path)
    atol = 2 * lr if key_bias else 1e-2 * lr
    np.testing.assert_allclose(y, x, rtol=1e-3, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_per_call_peak_memory_is_several_times_smaller():
  """XLA's own plan for the update of a minibatch with C = 16 calls: temporaries of one
  value_and_grad over every call vs per-call accumulation (one call of one micro-batch alive)."""
  cfg = tiny_config(episode_length=64)  # 16 calls of 4 actions
  b = build(cfg, devices=jax.devices()[:1])
  params, _ = jax.eval_shape(b.init_fn)
  params = params.params
  m, c, l = cfg.rl.minibatch_size, cfg.num_calls, cfg.policy.chunk_size * b.env.action_size
  traj, _ = jax.eval_shape(lambda p, r: rollout(
      b.env, b.policy, p, r, text_table=b.text_table, num_prompts=2, group_size=4,
      num_calls=c, temperature=1.6, camera=cfg.env.camera, store="images"), params,
      jax.random.PRNGKey(0))
  assert traj.tokens.shape == (m, c, l)
  vec = jax.ShapeDtypeStruct((m,), jnp.float32)
  temp = {}
  for name, rl in (("off", dict(grad_accum="off")),
                   ("remat", dict(grad_accum="off", remat_calls=True)),
                   ("per_call", dict(grad_accum="per_call", micro_batch_size=1))):
    fn = make_grad_fn(with_rl(b, **rl))
    compiled = jax.jit(fn).lower(params, traj, vec, vec, None).compile()
    temp[name] = compiled.memory_analysis().temp_size_in_bytes
  # measured on the 2-core CPU (jax 0.12): off 131.5 MB, remat 7.5 MB, per_call 2.4 MB (54x, 17x)
  assert temp["off"] > 20 * temp["per_call"], temp
  assert temp["off"] > 6 * temp["remat"], temp
