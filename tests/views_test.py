"""Two camera views (env.camera="agentview,wrist", OpenVLA-OFT's LIBERO input): config checks, the
OFT towers run each view on its own with shared position embeddings, and a jitted LIBERO rollout
hands the policy both cameras' renders side by side, from stored scenes as from images."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from envs.base import image_key, policy_image, views
from tests.models_test import init, make_obs, model_of, tiny_cfg
from vla_rl_jax import config as config_lib
from vla_rl_jax.builders import build, dummy_obs
from vla_rl_jax.rollout import (call_obs, frame_record, rollout, scene_bytes,
                                stored_bytes_per_call)


def test_config_checks_each_view():
  c = get_config("variant=tiny,env=libero_spatial")
  c.env.camera = "agentview,wrist"
  assert views(config_lib.resolve(c, 1).env.camera) == ("agentview", "wrist")
  for bad, match in (("agentview,agentview", "different ones separated by commas"),
                     ("agentview,", "different ones separated by commas"),
                     ("agentview,wirst", r"has cameras \['agentview', 'wrist'\]; did you mean "
                                         r"'wrist'\?")):
    c.env.camera = bad
    with pytest.raises(config_lib.ConfigError, match=rf"config.env.camera=.{bad}.: .*{match}"):
      config_lib.resolve(c, 1)


def test_policy_image_side_by_side():
  a = np.zeros((2, 4, 4, 3), np.uint8)
  b = np.full((2, 4, 4, 3), 7, np.uint8)
  img = policy_image({"image_agentview": a, "image_wrist": b}, "agentview,wrist")
  assert isinstance(img, np.ndarray) and img.shape == (2, 4, 8, 3)
  np.testing.assert_array_equal(img[:, :, 4:], b)
  assert policy_image({"image_agentview": a}, "agentview") is a


def test_oft_runs_each_view_through_the_towers_on_its_own():
  cfg = tiny_cfg()
  model = model_of(cfg)
  obs1 = make_obs(batch=2)                        # one 32x32 view
  params = init(model, obs1)                      # the parameters do not depend on the views
  rng = np.random.default_rng(3)
  wrist = jnp.asarray(rng.integers(0, 256, obs1.image.shape, dtype=np.uint8))
  obs2 = dataclasses.replace(obs1, image=jnp.concatenate([obs1.image, wrist], axis=2))

  def towers(obs):
    _, inter = jax.jit(lambda p, o: model.apply({"params": p}, o, capture_intermediates=lambda m, n: (
        n == "__call__" and m.name in ("siglip", "dinov2"))))(params, obs)
    return {k: np.asarray(v["__call__"][0]) for k, v in inter["intermediates"].items()}

  two = towers(obs2)
  one_a, one_b = towers(obs1), towers(dataclasses.replace(obs1, image=wrist))
  for t in ("siglip", "dinov2"):
    n = one_a[t].shape[1]
    assert two[t].shape == (4, n, one_a[t].shape[2])         # [B * views, patches, width]
    np.testing.assert_allclose(two[t][0::2], one_a[t], rtol=1e-5, atol=1e-5)   # view 0 = alone
    np.testing.assert_allclose(two[t][1::2], one_b[t], rtol=1e-5, atol=1e-5)   # view 1 = alone
  out1 = model.apply({"params": params}, obs2)
  swapped = dataclasses.replace(obs2, image=jnp.concatenate([wrist, obs1.image], axis=2))
  out2 = model.apply({"params": params}, swapped)
  assert out1.shape == out2.shape and not np.allclose(out1, out2)   # the views' order is seen
  with pytest.raises(ValueError, match="views must be 32x32 squares"):
    model.apply({"params": params}, dataclasses.replace(obs1, image=obs2.image[:, :, :48]))


def _libero_two_views():
  c = get_config("variant=tiny,env=libero_bowl_on_plate")
  c.env.camera = "agentview,wrist"
  c.env.episode_length = 2 * c.policy.chunk_size
  cfg = config_lib.resolve(c, 1)
  return cfg, build(cfg, devices=jax.devices()[:1])


def _side_by_side_of(img, s0, h):
  """img [N, H, 2H, 3] against the env's own renders of (agentview, wrist), side by side. Another
  compiled function may round a few edge pixels differently (measured: 9 of 6,144 values, by at
  most 3 levels); swapped or missing views differ almost everywhere."""
  for part, cam in ((img[:, :, :h], "agentview"), (img[:, :, h:], "wrist")):
    want = np.asarray(s0.obs[image_key(cam)])
    assert np.mean(part != want) < 0.01 and np.abs(part.astype(int) - want).max() <= 8, cam
  assert np.mean(img[:, :, :h] != img[:, :, h:]) > 0.5


def test_libero_policy_sees_both_cameras_from_scenes_and_images():
  """frame_record / call_obs (what the rollout stores and re-renders) under jit, both stores."""
  cfg, b = _libero_two_views()
  assert b.env.cameras == ("agentview", "wrist")
  h = cfg.env.image_size
  assert dummy_obs(cfg, b.env).image.shape == (1, h, 2 * h, 3)
  assert stored_bytes_per_call(b.env, b.policy, "images") - stored_bytes_per_call(
      b.env, b.policy, "scene") == 2 * h * h * 3 - scene_bytes(b.env)
  s0 = jax.jit(jax.vmap(b.env.reset))(jax.random.split(jax.random.PRNGKey(0), 2))
  for store in ("scene", "images"):
    obs = jax.jit(lambda s: call_obs(b.env, jax.vmap(lambda x: frame_record(
        b.env, x, cfg.env.camera, store))(s), s.obs["proprio"], b.text_table[s.obs["task_id"]],
        cfg.env.camera))(s0)
    _side_by_side_of(np.asarray(obs.image), s0, h)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["scene", "images"])
def test_libero_rollout_sees_both_cameras(store):
  """The whole jitted rollout (slow: about 150 s per store on 2 cores)."""
  cfg, b = _libero_two_views()
  h = cfg.env.image_size
  state, _ = b.init_fn()
  fn = jax.jit(lambda p, k: rollout(b.env, b.policy, p, k, text_table=b.text_table, num_prompts=2,
                                    group_size=1, num_calls=2, temperature=1.0,
                                    camera=cfg.env.camera, store=store))
  traj, _ = fn(state.params, jax.random.PRNGKey(0))
  first = jax.tree_util.tree_map(lambda x: x[:, 0], traj.frames)
  img = np.asarray(call_obs(b.env, first, traj.proprio[:, 0], b.text_table[traj.task_id],
                            cfg.env.camera).image)
  assert img.shape == (2, h, 2 * h, 3)
  # the oracle: the env's own reset renders of the two cameras, side by side
  keys = jax.random.split(jax.random.split(jax.random.PRNGKey(0))[0], 2)
  s0 = jax.jit(jax.vmap(b.env.reset))(keys)
  _side_by_side_of(img, s0, h)
