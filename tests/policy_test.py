"""Action tokenisation, sampling and log-probs of the tiny VLA."""

import jax
import jax.numpy as jnp
import numpy as np

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax.builders import build_env, build_policy, dummy_obs
from vla_rl_jax.models import tokenizer


def test_action_bins_roundtrip_and_openvla_layout():
  a = jnp.linspace(-1, 1, 1001)
  bins = tokenizer.actions_to_bins(a)
  assert int(bins.min()) >= 0 and int(bins.max()) <= 255
  back = tokenizer.bins_to_actions(bins)
  assert float(jnp.max(jnp.abs(back - a))) <= 2.0 / 255 + 1e-6  # within one bin width
  # OpenVLA: larger actions get SMALLER token ids (token = V - digitize(a))
  assert int(tokenizer.actions_to_bins(jnp.array(0.9))) < int(tokenizer.actions_to_bins(jnp.array(-0.9)))
  assert int(tokenizer.bins_to_token_ids(jnp.array(255), 32000)) == 31999


def test_text_encoding_and_overflow():
  ids = tokenizer.encode("go", 8)
  np.testing.assert_array_equal(ids, [1, 3 + ord("g"), 3 + ord("o"), 2, 0, 0, 0, 0])
  try:
    tokenizer.encode("x" * 10, 8)
    raise AssertionError("expected overflow error")
  except ValueError as e:
    assert "max_text_len" in str(e)


def test_sample_and_log_prob_agree_and_greedy_is_argmax():
  cfg = config_lib.resolve(get_config("variant=tiny"))
  env = build_env(cfg)
  model, policy = build_policy(cfg, env)
  obs = dummy_obs(cfg, env, batch=3)
  obs = obs.replace(image=jax.random.randint(jax.random.PRNGKey(1), obs.image.shape, 0, 255).astype(jnp.uint8),
                    text=jnp.tile(jnp.asarray(tokenizer.encode("reach the red target", 32)), (3, 1)))
  params = model.init(jax.random.PRNGKey(0), obs)["params"]
  params = jax.tree_util.tree_map(lambda x: getattr(x, "value", x), params,
                                  is_leaf=lambda x: hasattr(x, "value"))
  actions, tokens, logp = policy.sample(params, obs, jax.random.PRNGKey(2), 1.6)
  k, d = cfg.policy.chunk_size, env.action_size
  assert actions.shape == (3, k, d) and tokens.shape == logp.shape == (3, k * d)
  lp, ent = policy.log_prob(params, obs, tokens, 1.6)
  np.testing.assert_array_equal(lp, logp)  # same function: the first PPO ratio is exactly 1
  assert np.all(np.asarray(ent) > 0) and np.all(np.asarray(ent) <= np.log(256) + 1e-4)
  np.testing.assert_allclose(actions.reshape(3, -1), tokenizer.bins_to_actions(tokens))
  # greedy decoding picks the argmax and is deterministic
  _, g1, _ = policy.sample(params, obs, jax.random.PRNGKey(3), 0.0)
  _, g2, _ = policy.sample(params, obs, jax.random.PRNGKey(4), 0.0)
  logits = model.apply({"params": params}, obs)
  np.testing.assert_array_equal(g1, g2)
  np.testing.assert_array_equal(g1, jnp.argmax(logits, -1))
  # temperature changes log-probs of the same tokens
  lp_t1, _ = policy.log_prob(params, obs, tokens, 1.0)
  assert not np.allclose(lp_t1, lp)


def _random_obs(cfg, env, n, seed):
  """n observations that differ in image, instruction and proprio."""
  k_img, k_prop, k_task = jax.random.split(jax.random.PRNGKey(seed), 3)
  obs = dummy_obs(cfg, env, batch=n)
  table = jnp.asarray(tokenizer.encode_all(env.instructions, cfg.model.max_text_len))
  task = jax.random.randint(k_task, (n,), 0, len(env.instructions))
  return obs.replace(
      image=jax.random.randint(k_img, obs.image.shape, 0, 256).astype(jnp.uint8),
      text=table[task], proprio=jax.random.uniform(k_prop, obs.proprio.shape, minval=-1, maxval=1))


def test_log_prob_of_sampled_tokens_in_another_batch():
  """Rollout log-probs come from one batch, update log-probs from another (minibatches, shards): an
  example's log-prob must not depend on which others share its batch, and must depend on its obs."""
  cfg = config_lib.resolve(get_config("variant=tiny"))
  env = build_env(cfg)
  model, policy = build_policy(cfg, env)
  obs5, other = _random_obs(cfg, env, 5, seed=1), _random_obs(cfg, env, 2, seed=7)
  params = jax.tree_util.tree_map(lambda x: getattr(x, "value", x),
                                  jax.jit(model.init)(jax.random.PRNGKey(0), obs5)["params"],
                                  is_leaf=lambda x: hasattr(x, "value"))
  sample = jax.jit(lambda p, o, k: policy.sample(p, o, k, 1.6))
  log_prob = jax.jit(lambda p, o, t: policy.log_prob(p, o, t, 1.6)[0])
  _, tokens, logp = sample(params, obs5, jax.random.PRNGKey(2))
  # a batch of 5: examples 3, 0, 4 of the sampled batch (permuted) interleaved with two others
  pick = jnp.array([3, 0, 4])
  cat = lambda a, b: jnp.concatenate([a[:1], b[:1], a[1:2], b[1:], a[2:]])
  mixed_obs = jax.tree_util.tree_map(lambda a, b: cat(a[pick], b), obs5, other)
  mixed_tokens = cat(tokens[pick], tokens[jnp.array([1, 2])])
  lp = np.asarray(log_prob(params, mixed_obs, mixed_tokens))[np.array([0, 2, 4])]
  # f32 log-probs ~ -5.5; a different batch shape may reorder XLA's reductions (~1e-6), while a
  # cross-example leak (batch statistics, a mis-broadcast mask) moves them by far more
  np.testing.assert_allclose(lp, np.asarray(logp)[np.asarray(pick)], rtol=0, atol=2e-5)
  # and the log-probs are a function of the observation: the same tokens scored on another
  # example's obs differ (by far more than the tolerance above)
  swapped = log_prob(params, jax.tree_util.tree_map(lambda x: jnp.roll(x, 1, 0), obs5), tokens)
  gaps = np.abs(np.asarray(swapped) - np.asarray(logp)).max(-1)
  assert np.all(gaps > 100 * 2e-5), gaps


def test_padding_text_is_ignored():
  """Changing only what sits in padded text positions' embeddings must not change the logits."""
  cfg = config_lib.resolve(get_config("variant=tiny"))
  env = build_env(cfg)
  model, _ = build_policy(cfg, env)
  obs = dummy_obs(cfg, env, batch=1).replace(
      text=jnp.asarray(tokenizer.encode("reach", 32))[None])
  params = jax.tree_util.tree_map(lambda x: getattr(x, "value", x),
                                  model.init(jax.random.PRNGKey(0), obs)["params"],
                                  is_leaf=lambda x: hasattr(x, "value"))
  base = model.apply({"params": params}, obs)
  emb = params["tok_embed"]["embedding"]
  params2 = dict(params, tok_embed={"embedding": emb.at[0].set(emb[0] + 5.0)})  # pad id 0
  # pos embeddings at padded slots also differ in effect only through attention, which is masked
  np.testing.assert_allclose(model.apply({"params": params2}, obs), base, atol=1e-5)
