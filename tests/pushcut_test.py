"""Grasped vs pushed successes ("pushcut", issue 8 item 7): LIBERO-MJX's info["held"/"grasped"] from
the finger-pad contacts, through evaluation.run_episodes and report. One compiled episode batch:
the scripted expert grasps the bowl and places it on the plate; the same task with the bowl dropped
onto the plate while the open gripper stays at home succeeds without a grasp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.tasks import experts, predicates
from envs.tasks.libero_env import LiberoTask
from envs.tasks.spec import BOWL_ON_PLATE
from vla_rl_jax import evaluation

BOWL, PLATE = "akita_black_bowl_1", "plate_1"
HORIZON = 128
# (layout seed, dropped): two expert episodes, two drops
STARTS = np.array([(0, 0), (1, 0), (0, 1), (1, 1)], np.int32)


@pytest.fixture(scope="module")
def episodes():
  env = LiberoTask(cameras=())
  adr = env._obj_qadr[BOWL]  # noqa: SLF001

  def reset(start):
    s = env.reset(jax.random.PRNGKey(start[0]))
    d = s.pipeline_state
    # the bowl 4 cm above the plate's origin, its pose otherwise kept: it falls onto the plate
    above = env.object_pos(d, PLATE) + jnp.array([0.0, 0.0, 0.04])
    qpos = jnp.where(start[1] > 0, d.qpos.at[adr:adr + 3].set(above), d.qpos)
    return s.replace(pipeline_state=d.replace(qpos=qpos), info={**s.info, "dropped": start[1] > 0})

  noop = jnp.zeros(7).at[6].set(-1.0)            # hold the arm, gripper open

  def actor(s, key):
    del key
    return jnp.where(s.info["dropped"], noop, experts.pick_place_bowl(env, s))[None]

  out = evaluation.run_episodes(env, actor, STARTS, HORIZON, reset_fn=reset)
  return env, out


def test_goal_targets_are_the_placed_objects():
  assert predicates.goal_targets(BOWL_ON_PLATE) == (BOWL,)
  opened = BOWL_ON_PLATE.__class__(**{**BOWL_ON_PLATE.__dict__, "goal": ()})
  assert predicates.goal_targets(opened) == ()


def test_expert_is_grasped_and_a_drop_is_pushed(episodes):
  env, out = episodes
  print("success", out["success"], "grasped", out["grasped"], "length", out["length"])
  assert out["success"].all() and not out["unstable"].any()
  assert out["grasped"].tolist() == [True, True, False, False]
  rep = evaluation.report(env, np.stack([np.zeros(4, np.int32), np.arange(4)], 1), out["success"],
                          out["length"], suite="bowl", grasped=out["grasped"])
  row, suite = rep["tasks"][0], rep["suites"]["bowl"]
  for r in (row, suite):
    assert (r["successes_grasped"], r["successes_pushed"], r["pushed_fraction"]) == (2, 2, 0.5)
  # without grasps (an env that reports none) the report is as before
  plain = evaluation.report(env, np.zeros((4, 2), np.int32), out["success"], suite="bowl")
  assert "pushed_fraction" not in plain["tasks"][0] and "successes_pushed" not in plain["suites"]["bowl"]
