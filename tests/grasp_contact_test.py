"""Physics a policy cannot cheat: the arm's links and palm push objects instead of passing through
them, a grasped bowl held still does not turn in the hand, and a shaken grasp holds. All through
the env's jitted step (LIBERO's controller, shipped physics), the expert making the grasp."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.tasks import experts, libero_data, libero_suite
from envs.tasks.libero_env import LiberoTask
from envs.tasks.spec import BOWL_ON_PLATE, In, ObjectSpec, On, Region

N_TRIALS = 20
BOWL = "akita_black_bowl_1"


def _rel_rot(r_hand, r_obj):
  """The object's rotation in the hand frame, as a matrix."""
  return np.einsum("...ji,...jk->...ik", r_hand, r_obj)


def _angle(r):
  return np.degrees(np.arccos(np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def _quat_mat(q):
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


T_TOTAL, T_HOLD, T_SETTLE = 110, 40, 4


@pytest.fixture(scope="module")
def grasp_runs():
  """20 layouts: the expert grasps and lifts the bowl; from the step it is 6 cm up (plus 4 steps to
  settle), 40 control steps (2 s) of holding still, or of shaking the gripper +-2 cm along x at
  2 Hz. Per step: gripper position and rotation, bowl position and quaternion; the hold's start."""
  env = LiberoTask(cameras=())
  dt = env.dt

  def run(rng, shake):
    s = env.reset(rng)

    def body(carry, t):
      s, t_up, centre = carry
      d = s.pipeline_state
      up = (env.object_pos(d, BOWL)[2] > 0.06) & (t_up < 0)
      t_up = jnp.where(up, t, t_up)
      centre = jnp.where(up, env.tcp_pos(d), centre)
      k = (t - t_up - T_SETTLE).astype(jnp.float32)          # steps into the hold
      # OSC lags a 2 Hz target (about a third of the amplitude is lost): the goal swings +-6 cm
      # so that the gripper itself swings about +-2 cm (measured below)
      target = centre + shake * (k >= 0) * jnp.array([0.06, 0.0, 0.0]) * jnp.sin(
          2 * jnp.pi * 2.0 * (k + 1) * dt)
      arm = experts.move_action(env, d, target, env.tcp_mat(d), max_speed=1.0)
      hold = jnp.concatenate([arm, jnp.ones(1)])
      a = jnp.where(t_up >= 0, hold, experts.pick_place_bowl(env, s))
      s = env.step(s, a)
      d = s.pipeline_state
      return (s, t_up, centre), (env.tcp_pos(d), env.tcp_mat(d), env.object_pos(d, BOWL),
                                 env.object_quat(d, BOWL))
    (s, t_up, _), trace = jax.lax.scan(body, (s, jnp.asarray(-1), jnp.zeros(3)),
                                       jnp.arange(T_TOTAL))
    return t_up, trace

  f = jax.jit(jax.vmap(run, in_axes=(0, None)))
  rngs = jax.random.split(jax.random.PRNGKey(7), N_TRIALS)
  return {"still": jax.device_get(f(rngs, 0.0)), "shake": jax.device_get(f(rngs, 1.0))}


def _window(run):
  """Per trial: lifted in time, and the trace rows at the start and end of the 2 s hold."""
  t_up, (p, r, b, q) = run
  ok = (t_up >= 0) & (t_up + T_SETTLE + T_HOLD < T_TOTAL)
  i0 = np.clip(t_up + T_SETTLE, 0, T_TOTAL - 1)
  i1 = np.clip(i0 + T_HOLD, 0, T_TOTAL - 1)
  n = np.arange(len(t_up))
  return ok, (p[n, i0], r[n, i0], b[n, i0], q[n, i0]), (p[n, i1], r[n, i1], b[n, i1], q[n, i1]), (i0, i1)


def _held(start, end):
  """The bowl still hangs where it hung: within 2 cm of its start offset from the gripper, above the
  table."""
  (p0, _, b0, _), (p1, _, b1, _) = start, end
  return (np.linalg.norm((b1 - p1) - (b0 - p0), axis=1) < 0.02) & (b1[:, 2] > 0.03)


def test_grasp_held_still_turns_less_than_5_degrees(grasp_runs):
  """Measured 0.1-1.8 degrees (median 0.4) with the pads' rolling friction at 0.03; 0-20 (median 7)
  at 0.01."""
  ok, start, end, _ = _window(grasp_runs["still"])
  assert ok.sum() >= 19, ok                 # the expert's grasp lifts the bowl
  rel0 = _rel_rot(start[1], _quat_mat(start[3]))
  rel1 = _rel_rot(end[1], _quat_mat(end[3]))
  turn = _angle(np.einsum("nij,nkj->nik", rel1, rel0))
  print("turn in hand over 2 s (deg):", np.round(turn[ok], 2))
  assert np.all(turn[ok] < 5.0), turn[ok]
  assert np.all(_held(start, end)[ok])


def test_grasp_shaken_2cm_2hz_holds_19_of_20(grasp_runs):
  run = grasp_runs["shake"]
  ok, start, end, (i0, i1) = _window(run)
  held = ok & _held(start, end)
  x = run[1][0][:, :, 0]
  amp = np.array([0.5 * np.ptp(x[n, a:b]) for n, (a, b) in enumerate(zip(i0, i1))])
  print("gripper swing (cm):", np.round(amp[ok] * 100, 2), "held:", int(held.sum()), "/", N_TRIALS)
  # it really shook +-2 cm (OSC's lag varies a little with the posture)
  assert 0.018 < np.median(amp[ok]) < 0.026 and np.all(amp[ok] > 0.015), amp[ok]
  assert ok.sum() >= 19 and held.sum() >= 19


# ------------------------------------------------------------------------------------------------
# The arm cannot pass through objects.

TALL = ObjectSpec("tall_box_1", "box", (0.8, 0.2, 0.2, 1.0),
                  params=(("half", (0.03, 0.03, 0.16)),))


def _tall_box_task():
  """A 32 cm tall box in the gripper's path, taller than the whole hand."""
  plate = BOWL_ON_PLATE.object("plate_1")
  return dataclasses.replace(
      BOWL_ON_PLATE, name="tall_box_sweep", objects=(TALL, plate),
      regions=(Region("box_region", 0.0, 0.0, 0.0, 0.0), BOWL_ON_PLATE.region("plate_region")),
      init=(On(TALL.name, "box_region"), On("plate_1", "plate_region")),
      goal=(On(TALL.name, "plate_1"),))


def test_links_and_palm_push_objects():
  """The gripper sweeps at 12 cm across a 32 cm box: the palm and wrist link touch the box's hull
  and push the box (it moves and stays out of the arm), never pass through it. The push knocks the
  box over, and it lies on the table: no point of it sinks 2.5 cm into the table while it tips, and
  at rest its side is on the table (its feet only reach the table while it stands; lying, its side
  capsule carries it)."""
  env = LiberoTask(_tall_box_task(), cameras=())
  m = env.mj_model
  hull = m.geom("tall_box_1_hull").id
  reach = {m.geom(g).id for g in ("link6_collision", "link7_collision", "hand_collision")}

  def run(rng):
    s = env.reset(rng)
    # start 25 cm behind the box (x), at 12 cm pad height, then sweep through it along +x
    def body(s, t):
      d = s.pipeline_state
      goal = jnp.where(t < 50, jnp.array([-0.25, 0.0, 0.12]), jnp.array([0.25, 0.0, 0.12]))
      arm = experts.move_action(env, d, goal, env.tcp_mat(d), max_speed=0.5)
      s = env.step(s, jnp.concatenate([arm, -jnp.ones(1)]))
      d = s.pipeline_state
      return s, (env.object_pos(d, TALL.name), env.object_quat(d, TALL.name), env.tcp_pos(d),
                 d._impl.contact.dist)
    s, out = jax.lax.scan(body, s, jnp.arange(110))
    return s, out, s.pipeline_state._impl.contact.geom

  s, (box, quat, tcp, dist), cgeom = jax.device_get(jax.jit(run)(jax.random.PRNGKey(0)))
  assert not bool(s.info["unstable"])
  # MJX's contact slots are static: the ones between the box's hull and the wrist / palm
  slots = [i for i, (a, b) in enumerate(cgeom) if {a, b} & {hull} and ({a, b} - {hull}) <= reach]
  assert len(slots) >= 3
  assert dist[:, slots].min() < 0.0                         # they touched
  assert tcp[-1, 0] > 0.05                                  # the gripper did sweep past the box's spot
  r = _quat_mat(quat)                                       # [T, 3, 3]
  half = np.asarray(dict(TALL.params)["half"])
  centre = box + r[:, :, 2] * half[2]                       # the box's centre (origin: its bottom)
  moved = np.linalg.norm(centre[-1, :2] - centre[0, :2])
  assert moved > 0.05, moved                                # pushed away, not passed through
  assert dist[:, slots].min() > -0.01                       # never deeper than 1 cm inside it
  # knocked over, it lies on the table: its bottom edge dips while it tips (the side capsule's
  # round end does not reach the box's corners: 1.9 cm here), never by its own half width (it
  # fell through the table, tumbling, before the side capsule); at rest its side is on the table
  lowest = centre[:, 2] - np.abs(r[:, 2, :]) @ half
  tilt = np.degrees(np.arccos(np.clip(r[-1, 2, 2], -1.0, 1.0)))
  assert tilt > 60.0, tilt                                  # the sweep did knock it over
  assert lowest.min() > -0.025, lowest.min()
  assert abs(lowest[-1]) < 0.003, lowest[-1]
  assert abs(box[-1, 2] - half[0]) < 0.01, box[-1]         # at rest on its side


def _can_in_basket_task():
  """libero_10 task 0's alphabet soup can and basket, alone, related as the suite relates them (so
  the builder pairs them as there)."""
  t = libero_data.tasks("libero_10")[0]
  keep = ("alphabet_soup_1", "basket_1")
  return dataclasses.replace(
      t, name="can_tips_in_basket", objects=tuple(t.object(n) for n in keep),
      regions=tuple(dataclasses.replace(r, yaw=(0.0, 0.0)) for r in t.regions
                    if any(n.split("_1")[0] in r.name for n in keep)),
      init=tuple(p for p in t.init if p.args[0] in keep),
      goal=(In("alphabet_soup_1", "basket_1_contain_region"),),
      # as a suite relates them (libero_suite.union_spec): the goal puts the can in the basket
      relations=(("alphabet_soup_1", "basket_1"),))


@pytest.mark.slow  # about 2 minutes on the 2-core CI machine
def test_a_can_tipping_over_in_the_basket_stays_in_it():
  """A can that tips over as it drops into the basket (the expert's pinch lets go of it 3-8 cm over
  the floor in libero_10 task 0) stays in it: thrown in tilted, spinning over and sliding toward a
  wall, it leaves its feet and rests on its side capsule on the basket's floor, its centre inside
  the walls, and LIBERO's `In` holds at the end. Its feet meet the floor only while it stands;
  before the side capsule was paired with the basket's floor and walls, it fell through the floor
  to the table (and slid out under a wall): red then, by the centre's height, also with the walls
  alone left out."""
  spec = _can_in_basket_task()
  env = LiberoTask(spec, cameras=())
  m = env.mj_model
  can = env._obj_body["alphabet_soup_1"]
  qa = m.jnt_qposadr[m.body_jntadr[can]]
  va = m.jnt_dofadr[m.body_jntadr[can]]
  cyl = m.geom("alphabet_soup_1_body").id
  floor = m.geom("basket_1_bottom").id
  r, h = m.geom_size[cyl, :2]
  tilt_q = np.array([np.cos(0.45), np.sin(0.45), 0.0, 0.0])   # 52 degrees about world x

  def run(rng):
    s = env.reset(rng)
    d = s.pipeline_state
    basket = d.geom_xpos[floor]
    top = basket[2] + m.geom_size[floor, 2]
    q = libero_suite._quat_mul(jnp.asarray(tilt_q), d.qpos[qa + 3:qa + 7])  # noqa: SLF001
    pos = jnp.array([basket[0] - 0.02, basket[1], top + 0.04])
    qpos = d.qpos.at[qa:qa + 3].set(pos).at[qa + 3:qa + 7].set(q)
    qvel = d.qvel.at[va:va + 6].set(jnp.array([1.0, 0.3, 0.0, 8.0, 0.0, 0.0]))
    d = d.replace(qpos=qpos, qvel=qvel)
    def body(d, _):            # the env's physics and controller, the arm holding its pose
      d = env.physics_steps(d, env._substeps)  # noqa: SLF001
      axis = d.geom_xmat[cyl].reshape(3, 3)[:, 2]
      return d, (d.geom_xpos[cyl, 2] - top, jnp.abs(axis[2]),
                 d.geom_xpos[cyl, :2] - d.geom_xpos[floor, :2])
    d, out = jax.lax.scan(body, d, None, length=40)
    return d, out, env._goal(d)

  d, (height, upright, rel), inside = jax.device_get(jax.jit(run)(jax.random.PRNGKey(0)))
  assert np.all(np.isfinite(d.qpos))
  # on the floor, not through it: the centre of a can lying (or leaning) on its side capsule stays
  # a radius over the floor (less the capsule's 3 mm lift and a few mm of contact give); through
  # the floor it lies on the table, 2.2 cm lower
  assert height.min() > r - 0.008, (height.min(), r)
  assert upright[20:].max() < 0.9, upright                  # it tipped off its feet
  wall = dict(spec.object("basket_1").params)["wall"]
  inner = m.geom_size[floor, :2] - wall                     # the walls' inner faces
  assert np.all(np.abs(rel) < inner), (np.abs(rel).max(0), inner)
  assert bool(inside)                                       # In(can, basket): LIBERO's predicate
