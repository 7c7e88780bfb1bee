"""Franka Panda as LIBERO drives it: its MJCF, DH kinematics in JAX, and robosuite's OSC_POSE
controller (operational-space torque control) with LIBERO's gripper semantics.

Every constant that copies LIBERO comes from envs/robots/data/libero_robot.json, measured in LIBERO's
own environment by tools/probe_libero_robot.py (robosuite 1.4, MountedPanda).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

XML_PATH = os.path.join(os.path.dirname(__file__), "panda.xml")
DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


@functools.lru_cache(maxsize=None)
def libero_facts() -> dict:
  """The measured LIBERO robot facts (envs/robots/data/libero_robot.json)."""
  with open(os.path.join(DATA_DIR, "libero_robot.json")) as f:
    return json.load(f)


# Franka's published modified-DH parameters (a_{i-1}, d_i, alpha_{i-1}) for joints 1..7, then the
# flange (a, d, alpha of the fixed last frame).
DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088])
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0])
DH_ALPHA = np.array([0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2])
FLANGE_D = 0.107
HAND_YAW = -np.pi / 4          # hand frame = flange rotated about z (robosuite's `right_hand`)
FINGER_STROKE = 0.04           # per finger (m)

_ROBOT = libero_facts()["robot"]
# LIBERO's end-effector site (`gripper0_grip_site`) in the hand frame: 97 mm along the tool axis,
# its axes turned 90 degrees about it from the hand's. This is the "tcp" site the controller steers
# and the proprio reports.
TCP_OFFSET = float(_ROBOT["eef_pos_hand"][2])
EEF_ROT_HAND = np.round(np.array(_ROBOT["eef_xmat_hand"]), 9)

JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
# LIBERO's MountedPanda start posture (robosuite's default Panda posture differs).
HOME_QPOS = np.array(_ROBOT["home_qpos"])
TORQUE_LIMIT = np.array(_ROBOT["torque_limits"][1])

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
ARM_ACTUATORS = tuple(f"panda_act{i}" for i in range(1, 8))
GRIPPER_ACTUATOR = "panda_gripper"
GRIPPER_OPEN_CTRL = 0.04
GRIPPER_CLOSED_CTRL = -0.01

# LIBERO / robosuite OSC_POSE delta scales: 7-D action in [-1, 1].
POS_SCALE = float(_ROBOT["osc"]["output_max"][0])   # 0.05 m: the goal's offset from the current pose
ROT_SCALE = float(_ROBOT["osc"]["output_max"][3])   # 0.5 rad


def load_xml() -> str:
  with open(XML_PATH) as f:
    return f.read()


# ----------------------------------------------------------------------------------------------
# Small rotation helpers (JAX; quaternions are MuJoCo's w, x, y, z).


def rot_x(a):
  c, s = jnp.cos(a), jnp.sin(a)
  return jnp.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_z(a):
  c, s = jnp.cos(a), jnp.sin(a)
  return jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_to_mat(q: jax.Array) -> jax.Array:
  w, x, y, z = q[0], q[1], q[2], q[3]
  return jnp.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
  ])


def mat_to_quat(r: jax.Array) -> jax.Array:
  """Rotation matrix -> unit quaternion (w >= 0), branch-free enough for jit (Shepperd's method)."""
  tr = jnp.trace(r)
  cands = jnp.stack([
      jnp.array([1 + tr, r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]),
      jnp.array([r[2, 1] - r[1, 2], 1 + r[0, 0] - r[1, 1] - r[2, 2], r[0, 1] + r[1, 0],
                 r[0, 2] + r[2, 0]]),
      jnp.array([r[0, 2] - r[2, 0], r[0, 1] + r[1, 0], 1 - r[0, 0] + r[1, 1] - r[2, 2],
                 r[1, 2] + r[2, 1]]),
      jnp.array([r[1, 0] - r[0, 1], r[0, 2] + r[2, 0], r[1, 2] + r[2, 1],
                 1 - r[0, 0] - r[1, 1] + r[2, 2]]),
  ])
  idx = jnp.argmax(jnp.array([tr, r[0, 0], r[1, 1], r[2, 2]]))
  q = cands[idx]
  q = q / jnp.linalg.norm(q)
  return q * jnp.where(q[0] < 0, -1.0, 1.0)


def axis_angle_to_mat(v: jax.Array) -> jax.Array:
  """Rodrigues' formula, safe at zero angle."""
  theta = jnp.sqrt(jnp.sum(v * v) + 1e-20)
  k = v / theta
  kx = jnp.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
  return jnp.eye(3) + jnp.sin(theta) * kx + (1 - jnp.cos(theta)) * (kx @ kx)


def rot_error(r_target: jax.Array, r: jax.Array) -> jax.Array:
  """Axis-angle vector w (world frame) with exp(w) @ r = r_target (small-angle accurate, bounded)."""
  re = r_target @ r.T
  v = 0.5 * jnp.array([re[2, 1] - re[1, 2], re[0, 2] - re[2, 0], re[1, 0] - re[0, 1]])
  s = jnp.linalg.norm(v)
  c = 0.5 * (jnp.trace(re) - 1.0)
  angle = jnp.arctan2(s, c)
  return v * jnp.where(s > 1e-9, angle / jnp.maximum(s, 1e-9), 1.0)


# ----------------------------------------------------------------------------------------------
# DH kinematics.


def dh_frames(q: jax.Array) -> tuple[jax.Array, jax.Array]:
  """World-free frames of joints 1..7 and the flange: (R[8,3,3], p[8,3]) in the base (link0) frame."""
  r = jnp.eye(3)
  p = jnp.zeros(3)
  rs, ps = [], []
  for i in range(7):
    rx = rot_x(DH_ALPHA[i])
    p = p + r @ (rx @ jnp.array([DH_A[i], 0.0, 0.0]))
    r = r @ rx
    p = p + r @ jnp.array([0.0, 0.0, DH_D[i]])
    r = r @ rot_z(q[i])
    rs.append(r)
    ps.append(p)
  p = p + r @ jnp.array([0.0, 0.0, FLANGE_D])
  rs.append(r)
  ps.append(p)
  return jnp.stack(rs), jnp.stack(ps)


def tcp_pose(q: jax.Array, base_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
  """End-effector site position (world) and rotation (the site's axes as columns)."""
  rs, ps = dh_frames(q)
  r_hand = rs[-1] @ rot_z(HAND_YAW)
  return base_pos + ps[-1] + r_hand[:, 2] * TCP_OFFSET, r_hand @ jnp.asarray(EEF_ROT_HAND, q.dtype)


def tcp_jacobian(q: jax.Array, base_pos: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Geometric Jacobian (6x7: linear; angular) of the end-effector site, and its pose."""
  rs, ps = dh_frames(q)
  r_hand = rs[-1] @ rot_z(HAND_YAW)
  p_tcp = ps[-1] + r_hand[:, 2] * TCP_OFFSET
  z = rs[:7, :, 2]                       # joint axes (each joint rotates about its frame's z)
  jv = jnp.cross(z, p_tcp[None, :] - ps[:7])
  return (jnp.concatenate([jv.T, z.T], axis=0), base_pos + p_tcp,
          r_hand @ jnp.asarray(EEF_ROT_HAND, q.dtype))


@dataclasses.dataclass(frozen=True)
class OSCConfig:
  """robosuite's OSC_POSE as LIBERO configures it (fixed impedance, critically damped, position and
  orientation decoupled, no interpolator, nullspace pull toward the home posture)."""
  kp: float = float(_ROBOT["osc"]["kp"][0])
  damping_ratio: float = 1.0
  nullspace_kp: float = float(_ROBOT["osc"]["nullspace_kp"])
  pos_scale: float = POS_SCALE
  rot_scale: float = ROT_SCALE
  gripper_rate: float = float(_ROBOT["gripper"]["speed_per_substep"]) / float(_ROBOT["timestep"])

  @property
  def kd(self) -> float:
    return 2.0 * np.sqrt(self.kp) * self.damping_ratio


def orientation_error(desired: jax.Array, current: jax.Array) -> jax.Array:
  """robosuite's orientation error: 0.5 * sum_i current[:, i] x desired[:, i] (world frame)."""
  return 0.5 * jnp.sum(jnp.cross(current.T, desired.T), axis=0)


def osc_goal(action: jax.Array, eef_pos: jax.Array, eef_mat: jax.Array, prev_goal_quat: jax.Array,
             cfg: OSCConfig = OSCConfig()) -> tuple[jax.Array, jax.Array]:
  """OSC_POSE's set_goal: the goal pose of one control step from a 7-D action in [-1, 1].

  The goal is re-targeted from the CURRENT end-effector pose (not integrated from the last goal):
  position + 0.05 m * a[:3]; orientation = exp(0.5 rad * a[3:6]) @ current (world-frame axis-angle
  on the left). As in robosuite, an action with no rotation keeps the previous goal orientation.
  """
  a = jnp.clip(action[:6], -1.0, 1.0)
  pos = eef_pos + cfg.pos_scale * a[:3]
  rot = axis_angle_to_mat(cfg.rot_scale * a[3:6]) @ eef_mat
  turn = jnp.any(a[3:6] != 0)
  quat = jnp.where(turn, mat_to_quat(rot), prev_goal_quat)
  return pos, quat


def osc_torque(q: jax.Array, qd: jax.Array, mass: jax.Array, goal_pos: jax.Array,
               goal_mat: jax.Array, base_pos: jax.Array, cfg: OSCConfig = OSCConfig()) -> jax.Array:
  """OSC_POSE's run_controller: arm joint torques (gravity is compensated by the model) that pull
  the end-effector site to the goal as a unit-mass critically damped spring in task space.

  `mass` is the arm's 7x7 joint-space inertia (armature included). Clipped to the torque limits.
  """
  jac, p, r = tcp_jacobian(q, base_pos)
  v = jac @ qd
  force = cfg.kp * (goal_pos - p) - cfg.kd * v[:3]
  torque = cfg.kp * orientation_error(goal_mat, r) - cfg.kd * v[3:]
  eye7 = jnp.eye(7, dtype=q.dtype)
  minv = jnp.linalg.solve(mass, eye7)
  jp, jr = jac[:3], jac[3:]
  lam_pos = jnp.linalg.inv(jp @ minv @ jp.T)
  lam_ori = jnp.linalg.inv(jr @ minv @ jr.T)
  lam = jnp.linalg.inv(jac @ minv @ jac.T)
  tau = jp.T @ (lam_pos @ force) + jr.T @ (lam_ori @ torque)
  jbar = minv @ jac.T @ lam
  null = eye7 - jbar @ jac
  kn = cfg.nullspace_kp
  home = jnp.asarray(HOME_QPOS, q.dtype)
  tau = tau + null.T @ (mass @ (kn * (home - q) - 2.0 * np.sqrt(kn) * qd))
  lim = jnp.asarray(TORQUE_LIMIT, q.dtype)
  return jnp.clip(tau, -lim, lim)


def gripper_ctrl(level: jax.Array) -> jax.Array:
  """LIBERO's gripper command level (-1 open .. +1 closed; 0 = half open, where it starts) -> our
  gripper actuator's target (mean finger travel). LIBERO's finger target is 0.02 - 0.02 * level;
  ours goes on past closed (to -0.01 at level 1) so that a pinch of a thin wall still squeezes
  (LIBERO's fingers are 1000 N/m position servos, ours the same through one tendon)."""
  level = jnp.asarray(level)
  return jnp.clip(0.02 - 0.02 * level - 0.01 * jnp.maximum(level, 0.0), GRIPPER_CLOSED_CTRL,
                  GRIPPER_OPEN_CTRL)
