"""The fake pixel task honours the env contract and runs under brax's own training wrappers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.wrappers import training as brax_training

from envs import fake as fake_lib
from envs import registry
from envs.base import image_key
from envs.fake import COLOURS, FakeReach


def test_contract_reset_step_vmap_and_image_orientation():
  env = registry.make("fake_reach", image_size=16, cameras=("agentview",))
  assert env.observation_size == {"image_agentview": (16, 16, 3), "task_id": (), "proprio": (2,)}
  states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 5))
  assert states.obs[image_key("agentview")].dtype == jnp.uint8
  assert states.obs[image_key("agentview")].shape == (5, 16, 16, 3)
  nxt = jax.jit(jax.vmap(env.step))(states, jnp.ones((5, 2)))
  np.testing.assert_allclose(nxt.pipeline_state.pos, states.pipeline_state.pos + 0.1, atol=1e-6)
  # the red target sits at x = +0.3 (right of centre), y = 0: its pixels are in the right half
  img = np.asarray(env.draw(jax.tree_util.tree_map(lambda x: x[0], states.pipeline_state)))
  red = np.argwhere((img[..., 0] > 200) & (img[..., 1] < 80))
  assert red[:, 1].min() >= 8 and abs(red[:, 0].mean() - 7.5) < 1.0
  assert env.instructions[0] == f"reach the {COLOURS[0]} target"


def test_success_reward_done_and_expert_solves():
  env = FakeReach(image_size=8)
  s = env.reset(jax.random.PRNGKey(3))
  step = jax.jit(env.step)
  total = 0.0
  for _ in range(8):
    s = step(s, env.expert_action(s))
    total += float(s.reward)
  assert bool(s.info["success"]) and float(s.done) == 1.0 and total == 1.0


def test_nan_action_ends_only_that_episode_as_failure():
  env = FakeReach(image_size=8)
  s = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 3))
  a = jnp.zeros((3, 2)).at[1].set(jnp.nan)
  n = jax.vmap(env.step)(s, a)
  assert bool(n.info["unstable"][1]) and float(n.done[1]) == 1.0 and not bool(n.info["success"][1])
  assert np.all(np.isfinite(np.asarray(n.pipeline_state.pos)))
  np.testing.assert_array_equal(np.asarray(n.pipeline_state.pos)[[0, 2]], np.asarray(s.pipeline_state.pos)[[0, 2]])
  assert not bool(n.info["unstable"][0]) and not bool(n.info["unstable"][2])


def test_brax_training_wrappers_run_unchanged():
  env = brax_training.wrap(FakeReach(image_size=8), episode_length=5)
  s = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
  step = jax.jit(env.step)
  for _ in range(6):
    s = step(s, jnp.zeros((4, 2)))
  # the episode limit fired at step 5 and auto-reset restarted the count
  np.testing.assert_array_equal(s.info["steps"], 1)
  assert s.obs["image_agentview"].shape == (4, 8, 8, 3)


def test_default_layout_is_unchanged():
  # the slots fake_reach always had (right, left, up, down at 0.3), fixed unless shuffled
  env = FakeReach(image_size=8)
  old = np.array([[0.3, 0.0], [-0.3, 0.0], [0.0, 0.3], [0.0, -0.3]], np.float32)
  np.testing.assert_array_equal(np.asarray(env.slots), old)
  s = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
  np.testing.assert_array_equal(np.asarray(s.pipeline_state.targets), np.broadcast_to(old, (4, 4, 2)))


def _colour_mask(img, i):
  rgb = np.asarray(fake_lib._RGB[i]).astype(int)
  return np.all(np.asarray(img).astype(int) == rgb, axis=-1)


def test_slot_radius_angle_shuffle_and_distractors():
  env = FakeReach(image_size=32, slot_radius=0.85, slot_angle=45.0, radius=0.3, step_size=0.6,
                  shuffle_targets=True)
  slots = np.asarray(env.slots)
  np.testing.assert_allclose(np.linalg.norm(slots, axis=1), 0.85, rtol=1e-6)
  # turned 45 degrees counter-clockwise: right -> upper right, left -> lower left, up -> upper left
  np.testing.assert_allclose(np.sign(slots), [[1, 1], [-1, -1], [-1, 1], [1, -1]])
  assert np.min([np.linalg.norm(a - b) for i, a in enumerate(slots) for b in slots[i + 1:]]) > 2 * 0.3

  states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 64))
  targets = np.asarray(states.pipeline_state.targets)
  # every episode puts the four colours on the four slots, in an order drawn per episode
  slot_of = np.argmin(np.linalg.norm(targets[:, :, None] - slots[None, None], axis=-1), axis=-1)
  np.testing.assert_allclose(targets, slots[slot_of], atol=1e-6)
  assert all(sorted(row) == [0, 1, 2, 3] for row in slot_of.tolist())
  assert set(slot_of[:, 0].tolist()) == {0, 1, 2, 3}  # red turns up in every slot
  # the image shows each colour in its slot's quadrant (row 0 is the top, column 0 the left)
  img = np.asarray(states.obs[image_key("agentview")][0])
  for i in range(len(COLOURS)):
    rows, cols = np.nonzero(_colour_mask(img, i))
    assert rows.size > 0
    x, y = targets[0, i]
    assert np.all((cols >= 16) == (x > 0)) and np.all((rows < 16) == (y > 0))

  # distractors=False: only the named target is on the board and in the image; the rest are parked
  solo = FakeReach(image_size=32, slot_radius=0.85, slot_angle=45.0, radius=0.3, step_size=0.6,
                   shuffle_targets=True, distractors=False)
  s = jax.jit(jax.vmap(solo.reset))(jax.random.split(jax.random.PRNGKey(0), 64))
  np.testing.assert_array_equal(np.asarray(s.pipeline_state.pos), np.asarray(states.pipeline_state.pos))
  task = np.asarray(s.info["task_id"])
  t = np.asarray(s.pipeline_state.targets)
  named = np.arange(len(COLOURS))[None] == task[:, None]
  np.testing.assert_array_equal(t[named], targets[named])  # same draw as with distractors
  assert np.all(t[~named] == fake_lib.OFF_BOARD)
  for n in range(4):
    img = s.obs[image_key("agentview")][n]
    for i in range(len(COLOURS)):
      assert _colour_mask(img, i).any() == (i == task[n])
  # one expert step from the centre reaches the named target
  nxt = jax.vmap(solo.step)(s, jax.vmap(solo.expert_action)(s))
  assert np.all(np.asarray(nxt.info["success"]))


def test_slot_radius_must_be_on_the_board():
  for bad in (0.0, -0.3, 1.5):
    with pytest.raises(ValueError, match="slot_radius"):
      FakeReach(slot_radius=bad)


def test_blow_up_latches_unstable_and_done_under_jit():
  """envs/base.py: a physics blow-up ends the episode; a finite step after it must not clear
  `unstable` or `done` (it did: both were recomputed from the next, finite, state)."""
  env = FakeReach(image_size=8)
  step = jax.jit(jax.vmap(env.step))
  s = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 3))
  s = step(s, jnp.zeros((3, 2)).at[1].set(jnp.nan))
  pos = np.asarray(s.pipeline_state.pos)[1]
  for _ in range(2):
    s = step(s, jnp.full((3, 2), 0.5))   # finite actions
    assert bool(s.info["unstable"][1]) and float(s.done[1]) == 1.0
    assert not bool(s.info["success"][1]) and float(s.reward[1]) == 0.0
    np.testing.assert_array_equal(np.asarray(s.pipeline_state.pos)[1], pos)   # frozen
  assert not np.any(np.asarray(s.info["unstable"])[[0, 2]])


def test_success_latches_and_a_later_blow_up_does_not_undo_it():
  env = FakeReach(image_size=8)
  step = jax.jit(env.step)
  s = env.reset(jax.random.PRNGKey(3))
  while not bool(s.info["success"]):
    s = step(s, env.expert_action(s))
  for a in (-env.expert_action(s), jnp.full((2,), jnp.nan)):   # away from the target; NaN
    s = step(s, a)
    assert bool(s.info["success"]) and float(s.done) == 1.0 and not bool(s.info["unstable"])
    assert float(s.reward) == 0.0   # the reward came once


@pytest.mark.parametrize("kwargs, name, allowed", [
    (dict(radius=-1.0), "radius=-1.0", "> 0"),
    (dict(radius=0.45), "radius=0.45", "solves every episode before the policy acts"),
    (dict(step_size=float("nan")), "step_size=nan", "finite"),
    (dict(step_size=0.0), "step_size=0.0", "(0.0, 2.0]"),
    (dict(start_noise=1.5), "start_noise=1.5", "[0.0, 1.0]"),
    (dict(slot_angle=float("inf")), "slot_angle=inf", "finite"),
    (dict(distractors=1), "distractors=1", "True or False"),
    (dict(cameras=("wrist",)), "cameras=('wrist',)", "['agentview']"),
    (dict(image_size=0), "image_size=0", ">= 1"),
])
def test_constructor_and_registry_reject_bad_options(kwargs, name, allowed):
  for make in (lambda kw: FakeReach(**kw),
               lambda kw: registry.make("fake_reach", **{"image_size": 8, "cameras": ("agentview",), **kw})):
    with pytest.raises(ValueError) as e:
      make(kwargs)
    assert str(e.value).startswith(name) and allowed in str(e.value), str(e.value)
  with pytest.raises(ValueError, match=r"^radus=0.1: unknown option of env 'fake_reach'; did you mean 'radius'\?"):
    registry.make("fake_reach", image_size=8, cameras=("agentview",), radus=0.1)


def test_render_gives_a_trajectorys_frames():
  import numpy as np
  from envs.fake import FakeReach
  env = FakeReach(image_size=16)
  s = jax.jit(env.reset)(jax.random.PRNGKey(3))
  states = [s]
  for a in ([1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]):
    states.append(jax.jit(env.physics_step)(states[-1], jnp.array(a)))  # images left stale
  frames = env.render(states)
  want = np.stack([np.asarray(jax.jit(env.observe)(st).obs["image_agentview"]) for st in states])
  assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames, want)
  assert not np.array_equal(frames[0], frames[1])  # the agent moved between frames
  stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
  np.testing.assert_array_equal(env.render(stacked), want)
  with pytest.raises(ValueError, match=r"camera='wrist': this env renders \['agentview'\]"):
    env.render(states, camera="wrist")
