"""Panda: MJCF kinematics = Franka's DH chain, delta-EE control moves the TCP as commanded, MJX = C MuJoCo."""
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


def _dh_numpy(q):
  """Franka's modified-DH chain in plain numpy (independent of panda.dh_frames)."""
  t = np.eye(4)
  def rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])
  def rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
  def tr(x, y, z):
    m = np.eye(4); m[:3, 3] = (x, y, z); return m
  rows = list(zip(panda.DH_A, panda.DH_D, panda.DH_ALPHA, q)) + [(0.0, panda.FLANGE_D, 0.0, 0.0)]
  for a, d, alpha, theta in rows:
    t = t @ rx(alpha) @ tr(a, 0, 0) @ rz(theta) @ tr(0, 0, d)
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
    # TCP 0.1034 m along the flange z; the JAX DH (used by the controller) agrees too.
    np.testing.assert_allclose(d.site_xpos[tcp], t[:3, 3] + 0.1034 * t[:3, 2], atol=1e-3)
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


@pytest.mark.parametrize("delta", [(0.6, 0, 0), (0, -0.6, 0), (0, 0, 0.6), (0.4, 0.4, -0.4)])
def test_delta_ee_command_moves_tcp(robot, delta):
  """One control step of action `delta` moves the TCP by delta * 0.05 m (within 10%) once settled."""
  m = robot
  d = mujoco.MjData(m)
  d.qpos[:7] = panda.HOME_QPOS; d.ctrl[:7] = panda.HOME_QPOS; d.ctrl[7] = 0.04
  mujoco.mj_forward(m, d)
  tcp_id = m.site("tcp").id
  base = jnp.zeros(3)
  p0, r0 = panda.tcp_pose(jnp.asarray(panda.HOME_QPOS, jnp.float32), base)
  quat0 = panda.mat_to_quat(r0)
  cmd_fn = jax.jit(lambda a, p, q, qt, tcp: panda.delta_ee_command(
      a, p, q, qt, tcp, base, jnp.array([-1.0, -1, -1]), jnp.array([1.0, 1, 1])))
  start = d.site_xpos[tcp_id].copy()
  pos, quat, qt = p0, quat0, jnp.asarray(panda.HOME_QPOS, jnp.float32)
  for t in range(20):
    a = jnp.array(list(delta) + [0, 0, 0, -1.0], jnp.float32) if t == 0 else jnp.array([0, 0, 0, 0, 0, 0, -1.0])
    cmd = cmd_fn(a, pos, quat, qt, jnp.asarray(d.site_xpos[tcp_id], jnp.float32))
    pos, quat, qt = cmd.target_pos, cmd.target_quat, cmd.q_target
    q0 = d.ctrl[:7].copy()
    for k in range(10):
      d.ctrl[:7] = q0 + (k + 1) / 10 * (np.asarray(qt) - q0)
      mujoco.mj_step(m, d)
  moved = d.site_xpos[tcp_id] - start
  expected = np.asarray(delta) * panda.POS_SCALE
  assert np.linalg.norm(moved - expected) <= 0.1 * np.linalg.norm(expected), (moved, expected)
  # orientation held
  assert np.abs(d.site_xmat[tcp_id].reshape(3, 3) - np.asarray(r0)).max() < 0.02


def test_mjx_matches_c_mujoco(robot):
  """Same model, same controls, 100 steps (0.5 s) of a moving arm: joint positions agree to 1e-3 rad
  (float32 MJX vs float64 C; the difference is integration round-off, not a model mismatch)."""
  m = robot
  d = mujoco.MjData(m)
  d.qpos[:7] = panda.HOME_QPOS; d.qpos[7:9] = 0.02
  target = panda.HOME_QPOS + np.array([0.3, -0.2, 0.2, 0.3, -0.3, 0.2, 0.4])
  d.ctrl[:7] = target; d.ctrl[7] = 0.0
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
