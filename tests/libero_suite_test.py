"""LIBERO-MJX suites: all 40 tasks build, reset (LIBERO's converted states and re-drawn training
layouts), step and render under jit in one scene per suite; the goal is false at every start;
training layouts never equal an evaluation state and stay in LIBERO's regions.

One compiled function per suite (reset_to + reset + 2 random steps + the goal on the warmed-up
starts' contacts), at the shipped renderer settings; the layout-draw tests compile only the draw
(no physics).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import registry
from envs.render import Renderer
from envs.tasks import libero_data
from envs.tasks.libero_suite import PARK_X, LiberoSuite

CAMS = ("agentview", "wrist")
H = 32


def test_data_covers_the_40_tasks():
  n = {s: len(libero_data.tasks(s)) for s in libero_data.SUITES}
  assert n == {s: 10 for s in libero_data.SUITES}
  langs = [t.language for s in libero_data.SUITES for t in libero_data.tasks(s)]
  assert langs[0] == "pick up the black bowl between the plate and the ramekin and place it on the plate"
  assert len(set(langs)) == 40
  for s in libero_data.SUITES:
    for t in libero_data.tasks(s):
      init = libero_data.init_states(t)
      assert init["pose"].shape == (50, len(init["entities"]), 7), t.name
      assert np.all(np.isfinite(init["pose"]))
      q = init["pose"][..., 3:]
      np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-3)
      assert t.max_steps_rl == 512 and t.num_steps_wait == 10


# libero_10 (the most crowded scenes, every fixture kind) runs in `make test`; each other suite is a
# separate 2-3 minute compile on the 2-core CI machine, so those run in `make test-slow`.
SUITE_PARAMS = ["libero_10", *[pytest.param(s, marks=pytest.mark.slow)
                               for s in libero_data.SUITES if s != "libero_10"]]


@pytest.fixture(scope="module", params=SUITE_PARAMS)
def suite_run(request):
  env = LiberoSuite(request.param, cameras=CAMS, image_size=(H, H))
  K = len(env.specs)

  @jax.jit
  def run(rng):
    k1, k2, k3 = jax.random.split(rng, 3)
    t = env._tables
    idx = (7 * jnp.arange(K)) % env.num_eval_states
    ev = (jnp.arange(K), jnp.asarray(t.qpos)[jnp.arange(K), idx], jnp.asarray(t.fpos)[jnp.arange(K), idx],
          jnp.asarray(t.fquat)[jnp.arange(K), idx], jax.random.split(k3, K))
    tr = jax.vmap(env.draw)(jax.random.split(k1, K))              # training layouts
    starts = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ev, tr)
    st = jax.vmap(env._start)(*starts)          # = reset_to for the first K, reset for the rest

    # the goal as the env evaluates it after a step: on the contacts of the warm-up's last substep
    start_goal = jax.vmap(lambda s: env._success(s, s.pipeline_state))(st)

    def body(s, key):
      a = jax.random.uniform(key, (2 * K, env.action_size), minval=-1.0, maxval=1.0)
      return jax.vmap(env.physics_step)(s, a), None
    stepped, _ = jax.lax.scan(body, st, jax.random.split(k2, 2))
    overflow = jax.vmap(lambda s: env.render_overflow(env.scene(s)))(
        jax.tree.map(lambda a, b: jnp.concatenate([a, b]), st, stepped))
    return st, start_goal, stepped, overflow

  return env, jax.device_get(run(jax.random.PRNGKey(0)))


def test_every_task_resets_steps_and_renders(suite_run):
  env, (st, start_goal, stepped, overflow) = suite_run
  K = len(env.specs)
  np.testing.assert_array_equal(st.obs["task_id"][:K], np.arange(K))
  for s in (st, stepped):
    assert np.all(np.isfinite(s.pipeline_state.qpos)) and np.all(np.isfinite(s.pipeline_state.qvel))
    assert not np.any(s.info["unstable"])
  for cam in CAMS:      # images of the started states (the stepped ones: the brute-force test)
    img = st.obs[f"image_{cam}"]
    assert img.shape == (2 * K, H, H, 3) and img.dtype == np.uint8
    assert np.all(img.reshape(2 * K, -1).std(axis=1) > 5)        # not blank
  assert np.all(overflow == 0)
  # the agentview images differ between tasks that have different scenes or layouts
  a = st.obs["image_agentview"][:K].reshape(K, -1).astype(np.int32)
  assert len({x.tobytes() for x in a}) == K


def test_goal_false_at_every_start(suite_run):
  """LIBERO: check_success() is False right after set_init_state (and the warm-up)."""
  env, (st, start_goal, _, _) = suite_run
  assert not np.any(start_goal), np.nonzero(start_goal)
  assert not np.any(st.info["success"])


def test_task_entities_on_the_table_and_parked_ones_pinned(suite_run):
  env, (st, _, stepped, _) = suite_run
  for s in (st, stepped):
    for j, o in enumerate(env._spec.objects):
      a = env._obj_qadr[o.name]
      pos = s.pipeline_state.qpos[:, a:a + 3]
      act = s.info["active"][:, j]
      # the task's own objects rest in the workspace after the warm-up (nothing fell or flew)
      assert np.all(np.abs(pos[act, :2]) < 0.9), (o.name, pos[act])
      assert np.all(pos[act, 2] > -0.05), (o.name, pos[act])
      # parked objects sit where they were parked
      np.testing.assert_allclose(pos[~act], env._park[a:a + 3][None].repeat((~act).sum(), 0), atol=1e-5)
      assert np.all(pos[~act, 0] == PARK_X)


def test_overflow_free_renderer_matches_brute_force(suite_run):
  """The suite's renderer (capacity planned on its evaluation states) equals brute force on the
  started and stepped states (segmentation, both cameras). Every suite's run above also checks
  that no tile overflowed, which makes the images exact by construction (render_test)."""
  env, (st, _, stepped, _) = suite_run
  r = env._renderer
  scenes = jax.tree.map(lambda a, b: np.concatenate([a, b]),
                        jax.vmap(r.scene_inputs)(st.pipeline_state),
                        jax.vmap(r.scene_inputs)(stepped.pipeline_state))
  brute = Renderer(env.mj_model, CAMS, H, H, cull=False)
  img = jax.jit(jax.vmap(r.render))(scenes)
  ref = jax.jit(jax.vmap(brute.render))(scenes)
  n = len(st.obs["task_id"])
  for cam in CAMS:   # the env's own path: the images its jitted reset rendered (render_scene)
    np.testing.assert_array_equal(st.obs[f"image_{cam}"], np.asarray(img[cam]["rgb"])[:n])
  for cam in CAMS:
    agree = float(np.mean(np.asarray(img[cam]["segmentation"]) == np.asarray(ref[cam]["segmentation"])))
    assert agree >= 0.999, (cam, agree)


@pytest.mark.parametrize("suite", libero_data.SUITES)
def test_training_layouts_never_equal_evaluation_states(suite):
  env = LiberoSuite(suite, cameras=())
  t = env._tables
  n = 400
  draw = jax.jit(jax.vmap(env.draw))
  k, qpos, fpos, fquat, _ = jax.device_get(draw(jax.random.split(jax.random.PRNGKey(5), n)))
  assert set(np.unique(k)) == set(range(len(env.specs)))                  # every task drawn
  pos = np.asarray(jax.vmap(env._entity_pose)(qpos, fpos, fquat)[0])        # [n, E, 3]
  ev_pos = np.stack([np.asarray(jax.vmap(env._entity_pose)(t.qpos[j], t.fpos[j], t.fquat[j])[0])
                     for j in range(len(env.specs))])                       # [K, 50, E, 3]
  for i in range(n):
    kk = k[i]
    placed = t.mode[kk] == 1
    assert placed.any()
    d = np.abs(ev_pos[kk][:, placed, :2] - pos[i][placed, :2]).max(axis=(1, 2))
    assert d.min() > 1e-4, f"training draw {i} equals evaluation state {d.argmin()} of task {kk}"
    # region-placed entities inside LIBERO's regions
    xy = pos[i][placed, :2]
    assert np.all(xy >= t.lo[kk][placed] - 1e-6) and np.all(xy <= t.hi[kk][placed] + 1e-6)
    # entities resting on another keep their offset to it
    for e in np.nonzero(t.mode[kk] == 2)[0]:
      p = t.parent[kk, e]
      rel_draw = np.linalg.norm(pos[i][e, :2] - pos[i][p, :2])
      rel_eval = np.linalg.norm(ev_pos[kk][:, e, :2] - ev_pos[kk][:, p, :2], axis=-1)
      assert np.min(np.abs(rel_eval - rel_draw)) < 1e-4
  # the reference protocol draws LIBERO's own states for training too
  ref = LiberoSuite(suite, cameras=(), protocol="reference")
  k2, q2, *_ = jax.device_get(jax.jit(jax.vmap(ref.draw))(jax.random.split(jax.random.PRNGKey(5), 50)))
  for i in range(50):
    assert np.min(np.abs(t.qpos[k2[i]] - q2[i]).max(-1)) == 0.0


def test_suites_are_registered_and_validate_arguments():
  for s in libero_data.SUITES:
    assert s in registry.names()
  with pytest.raises(ValueError, match="protocol"):
    LiberoSuite("libero_goal", cameras=(), protocol="same")
  with pytest.raises(ValueError, match="task_ids"):
    LiberoSuite("libero_goal", cameras=(), task_ids=[10])
  with pytest.raises(ValueError, match="unknown LIBERO suite"):
    libero_data.tasks("libero_90")
  env = LiberoSuite("libero_goal", cameras=(), task_ids=[3, 0])
  assert list(env.instructions) == [libero_data.tasks("libero_goal")[3].language,
                                    libero_data.tasks("libero_goal")[0].language]
