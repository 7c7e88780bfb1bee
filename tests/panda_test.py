"""Panda: MJCF kinematics = Franka's DH chain, the OSC controller = robosuite's formulas, MJX = C MuJoCo."""
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from envs.robots import panda


@pytest.fixture(scope="module")
def robot():
  m = mujoco.MjModel.from_xml_path(panda.XML_PATH)
  return m


def _rx(a):
  c, s = np.cos(a), np.sin(a)
  return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


def _rz(a):
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def _tr(x, y, z):
  m = np.eye(4)
  m[:3, 3] = (x, y, z)
  return m


def _dh_numpy(q):
  """Franka's modified-DH chain in plain numpy (independent of panda.dh_frames)."""
  t = np.eye(4)
  rows = list(zip(panda.DH_A, panda.DH_D, panda.DH_ALPHA, q)) + [(0.0, panda.FLANGE_D, 0.0, 0.0)]
  for a, d, alpha, theta in rows:
    t = t @ _rx(alpha) @ _tr(a, 0, 0) @ _rz(theta) @ _tr(0, 0, d)
  return t


def test_forward_kinematics_matches_dh(robot):
  d = mujoco.MjData(robot)
  rng = np.random.default_rng(0)
  qs = [np.zeros(7), panda.HOME_QPOS] + [rng.uniform(panda.JOINT_LOWER, panda.JOINT_UPPER) for _ in range(6)]
  flange = robot.site("flange").id
  tcp = robot.site("tcp").id
  for q in qs:
    d.qpos[:7] = q
    mujoco.mj_kinematics(robot, d)
    t = _dh_numpy(q)
    np.testing.assert_allclose(d.site_xpos[flange], t[:3, 3], atol=1e-3)
    np.testing.assert_allclose(d.site_xmat[flange].reshape(3, 3), t[:3, :3], atol=1e-3)
    # LIBERO's end-effector site: 0.097 m along the flange z, axes = flange turned by -pi/4 (the
    # hand) then -pi/2 (robosuite's gripper); the JAX DH (used by the controller) agrees too.
    np.testing.assert_allclose(d.site_xpos[tcp], t[:3, 3] + 0.097 * t[:3, 2], atol=1e-3)
    c, s_ = np.cos(-3 * np.pi / 4), np.sin(-3 * np.pi / 4)
    np.testing.assert_allclose(d.site_xmat[tcp].reshape(3, 3),
                               t[:3, :3] @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]), atol=1e-3)
    p, r = panda.tcp_pose(jnp.asarray(q, jnp.float32), jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(p), d.site_xpos[tcp], atol=1e-3)
    np.testing.assert_allclose(np.asarray(r), d.site_xmat[tcp].reshape(3, 3), atol=1e-3)


def test_joint_limits_and_gripper_stroke(robot):
  for i, name in enumerate(panda.ARM_JOINTS):
    np.testing.assert_allclose(robot.joint(name).range, [panda.JOINT_LOWER[i], panda.JOINT_UPPER[i]])
  for name in panda.FINGER_JOINTS:
    np.testing.assert_allclose(robot.joint(name).range, [0.0, 0.04])
  # only pads and palm are collision geoms, and they collide only through explicit pairs
  assert np.all(robot.geom_contype == 0) and np.all(robot.geom_conaffinity == 0)


def _osc_numpy(q, qd, mass, goal_pos, goal_mat, base):
  """robosuite's OSC_POSE run_controller in numpy (pinv, as robosuite), on the numpy DH chain."""
  t = np.eye(4); t[:3, 3] = base
  frames = []
  for a, d, alpha, theta in zip(panda.DH_A, panda.DH_D, panda.DH_ALPHA, q):
    t = t @ _rx(alpha) @ _tr(a, 0, 0) @ _rz(theta) @ _tr(0, 0, d)   # joint i's frame (axis z)
    frames.append(t)
  hand = t @ _tr(0, 0, panda.FLANGE_D) @ _rz(panda.HAND_YAW)
  p = hand[:3, 3] + hand[:3, 2] * panda.TCP_OFFSET
  r = hand[:3, :3] @ panda.EEF_ROT_HAND
  jp = np.stack([np.cross(f[:3, 2], p - f[:3, 3]) for f in frames], 1)
  jr = np.stack([f[:3, 2] for f in frames], 1)
  j = np.vstack([jp, jr])
  kp, kd = 150.0, 2 * np.sqrt(150.0)
  v = j @ qd
  err_o = 0.5 * sum(np.cross(r[:, i], goal_mat[:, i]) for i in range(3))
  f = kp * (goal_pos - p) - kd * v[:3]
  tq = kp * err_o - kd * v[3:]
  minv = np.linalg.inv(mass)
  lam = np.linalg.pinv(j @ minv @ j.T)
  tau = jp.T @ np.linalg.pinv(jp @ minv @ jp.T) @ f + jr.T @ np.linalg.pinv(jr @ minv @ jr.T) @ tq
  null = np.eye(7) - (minv @ j.T @ lam) @ j
  tau += null.T @ (mass @ (10.0 * (panda.HOME_QPOS - q) - 2 * np.sqrt(10.0) * qd))
  return np.clip(tau, -panda.TORQUE_LIMIT, panda.TORQUE_LIMIT), p, r


def test_osc_torque_matches_numpy_robosuite(robot):
  """panda.osc_torque (jitted, float32) = robosuite's OSC formulas written out in numpy (float64),
  with the model's own mass matrix, at random postures, velocities and goals."""
  m = robot
  d = mujoco.MjData(m)
  rng = np.random.default_rng(1)
  fn = jax.jit(panda.osc_torque)
  base = np.array([-0.66, 0.0, 0.012])
  for _ in range(6):
    q = panda.HOME_QPOS + rng.uniform(-0.4, 0.4, 7)
    qd = rng.normal(0, 0.3, 7)
    d.qpos[:7] = q
    mujoco.mj_forward(m, d)
    full = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, full)
    mass = full[:7, :7]
    _, p, r = _osc_numpy(q, np.zeros(7), mass, np.zeros(3), np.eye(3), base)
    goal_pos = p + rng.uniform(-0.01, 0.01, 3)
    goal_mat = np.asarray(panda.axis_angle_to_mat(jnp.asarray(rng.uniform(-0.05, 0.05, 3)))) @ r
    want, _, _ = _osc_numpy(q, qd, mass, goal_pos, goal_mat, base)
    got = fn(jnp.asarray(q, jnp.float32), jnp.asarray(qd, jnp.float32),
             jnp.asarray(mass, jnp.float32), jnp.asarray(goal_pos, jnp.float32),
             jnp.asarray(goal_mat, jnp.float32), jnp.asarray(base, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), want, atol=0.05 + 0.01 * np.abs(want).max())


def test_osc_goal_semantics():
  """set_goal: position = current + 0.05 m * a; rotation exp(0.5 rad * a) @ current; an action without
  rotation keeps the previous goal orientation (robosuite's rule)."""
  pos, mat = jnp.array([0.1, 0.2, 0.3]), jnp.asarray(panda.axis_angle_to_mat(jnp.array([0.1, -0.2, 0.3])))
  prev = jnp.array([0.0, 1.0, 0.0, 0.0])
  gp, gq = panda.osc_goal(jnp.array([1.0, -0.5, 2.0, 0, 0, 0, 1.0]), pos, mat, prev)
  np.testing.assert_allclose(gp, [0.15, 0.175, 0.35], atol=1e-6)   # clipped to [-1, 1]
  np.testing.assert_allclose(gq, prev)
  gp, gq = panda.osc_goal(jnp.array([0, 0, 0, 0, 0, 0.4, 0.0]), pos, mat, prev)
  want = np.asarray(panda.axis_angle_to_mat(jnp.array([0.0, 0.0, 0.2]))) @ np.asarray(mat)
  np.testing.assert_allclose(panda.quat_to_mat(gq), want, atol=1e-5)


def test_mjx_matches_c_mujoco(robot):
  """Same model, same controls, 100 steps (0.5 s) of a moving arm: joint positions agree to 1e-3 rad
  (float32 MJX vs float64 C; the difference is integration round-off, not a model mismatch)."""
  m = robot
  d = mujoco.MjData(m)
  d.qpos[:7] = panda.HOME_QPOS; d.qpos[7:9] = 0.02
  d.ctrl[:7] = [4.0, -3.0, 3.0, 4.0, -2.0, 1.5, 1.0]   # torques (motors)
  d.ctrl[7] = 0.0
  mujoco.mj_forward(m, d)
  mx = mjx.put_model(m, impl="jax")
  dx = mjx.put_data(m, d, impl="jax")
  n = 100

  @jax.jit
  def run(dx):
    def body(dd, _):
      dd = mjx.step(mx, dd)
      return dd, dd.qpos
    return jax.lax.scan(body, dx, None, length=n)[1]

  qs_mjx = np.asarray(run(dx))
  qs_c = []
  for _ in range(n):
    mujoco.mj_step(m, d)
    qs_c.append(d.qpos.copy())
  qs_c = np.array(qs_c)
  assert np.abs(qs_mjx - qs_c).max() < 1e-3, np.abs(qs_mjx - qs_c).max()
  assert np.abs(qs_c[-1, :7] - qs_c[0, :7]).max() > 0.1  # it did move
