"""Franka Panda: its MJCF, DH kinematics in JAX, and LIBERO's delta end-effector controller (DLS IK)."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

XML_PATH = os.path.join(os.path.dirname(__file__), "panda.xml")

# Franka's published modified-DH parameters (a_{i-1}, d_i, alpha_{i-1}) for joints 1..7, then the
# flange (a, d, alpha of the fixed last frame).
DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088])
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0])
DH_ALPHA = np.array([0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2])
FLANGE_D = 0.107
HAND_YAW = -np.pi / 4          # hand frame = flange rotated about z
TCP_OFFSET = 0.1034            # tool centre point along the hand's z, from the flange
FINGER_STROKE = 0.04           # per finger (m)

JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
# robosuite's Panda init_qpos (LIBERO's start posture): gripper above the table, pointing down.
HOME_QPOS = np.array([0.0, np.pi / 16, 0.0, -np.pi / 2 - np.pi / 3, 0.0, np.pi - 0.2, np.pi / 4])

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
ARM_ACTUATORS = tuple(f"panda_act{i}" for i in range(1, 8))
GRIPPER_ACTUATOR = "panda_gripper"
GRIPPER_OPEN_CTRL = 0.04
GRIPPER_CLOSED_CTRL = -0.02

# LIBERO / robosuite OSC_POSE delta scales: 7-D action in [-1, 1].
POS_SCALE = 0.05   # m per control step
ROT_SCALE = 0.5    # rad per control step


def load_xml() -> str:
  with open(XML_PATH) as f:
    return f.read()


# ----------------------------------------------------------------------------------------------
# Small rotation helpers (JAX; quaternions are MuJoCo's w, x, y, z).


def _rot_x(a):
  c, s = jnp.cos(a), jnp.sin(a)
  return jnp.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a):
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
    rx = _rot_x(DH_ALPHA[i])
    p = p + r @ (rx @ jnp.array([DH_A[i], 0.0, 0.0]))
    r = r @ rx
    p = p + r @ jnp.array([0.0, 0.0, DH_D[i]])
    r = r @ _rot_z(q[i])
    rs.append(r)
    ps.append(p)
  p = p + r @ jnp.array([0.0, 0.0, FLANGE_D])
  rs.append(r)
  ps.append(p)
  return jnp.stack(rs), jnp.stack(ps)


def tcp_pose(q: jax.Array, base_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Tool-centre-point position (world) and rotation (hand frame axes as columns)."""
  rs, ps = dh_frames(q)
  r_hand = rs[-1] @ _rot_z(HAND_YAW)
  return base_pos + ps[-1] + r_hand[:, 2] * TCP_OFFSET, r_hand


def tcp_jacobian(q: jax.Array, base_pos: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Geometric Jacobian (6x7: linear; angular) of the tool centre point, and its pose."""
  rs, ps = dh_frames(q)
  r_hand = rs[-1] @ _rot_z(HAND_YAW)
  p_tcp = ps[-1] + r_hand[:, 2] * TCP_OFFSET
  z = rs[:7, :, 2]                       # joint axes (each joint rotates about its frame's z)
  jv = jnp.cross(z, p_tcp[None, :] - ps[:7])
  return jnp.concatenate([jv.T, z.T], axis=0), base_pos + p_tcp, r_hand


@dataclasses.dataclass(frozen=True)
class IKConfig:
  iterations: int = 2          # DLS iterations per control step, warm-started from the last target
  damping: float = 0.01        # lambda of (J J^T + lambda^2 I); small: no steady-state bias
  nullspace_gain: float = 0.2  # pull of the redundant DoF toward HOME_QPOS
  max_dq: float = 0.5          # rad per iteration (keeps IK well-behaved far from the target)


def ik(q0: jax.Array, target_pos: jax.Array, target_rot: jax.Array, base_pos: jax.Array,
       cfg: IKConfig = IKConfig()) -> jax.Array:
  """Damped-least-squares IK: joint positions whose TCP pose approaches (target_pos, target_rot)."""
  home = jnp.asarray(HOME_QPOS, q0.dtype)
  lo, hi = jnp.asarray(JOINT_LOWER, q0.dtype), jnp.asarray(JOINT_UPPER, q0.dtype)

  def body(q, _):
    jac, p, r = tcp_jacobian(q, base_pos)
    err = jnp.concatenate([target_pos - p, rot_error(target_rot, r)])
    jjt = jac @ jac.T + (cfg.damping ** 2) * jnp.eye(6, dtype=q.dtype)
    jpinv = jac.T @ jnp.linalg.solve(jjt, jnp.eye(6, dtype=q.dtype))
    dq = jpinv @ err
    null = jnp.eye(7, dtype=q.dtype) - jpinv @ jac
    dq = dq + cfg.nullspace_gain * (null @ (home - q))
    dq = jnp.clip(dq, -cfg.max_dq, cfg.max_dq)
    return jnp.clip(q + dq, lo, hi), None

  q, _ = jax.lax.scan(body, q0, None, length=cfg.iterations)
  return q


class ArmCommand(NamedTuple):
  target_pos: jax.Array   # f32[3] world
  target_quat: jax.Array  # f32[4]
  q_target: jax.Array     # f32[7]
  gripper_ctrl: jax.Array  # f32[]


def delta_ee_command(action: jax.Array, prev_pos: jax.Array, prev_quat: jax.Array,
                     prev_q_target: jax.Array, tcp_pos: jax.Array, base_pos: jax.Array,
                     workspace_lo: jax.Array, workspace_hi: jax.Array, max_lag: float = 0.08,
                     cfg: IKConfig = IKConfig()) -> ArmCommand:
  """LIBERO's 7-D action -> new end-effector target and joint targets.

  action in [-1, 1]: [dx dy dz] * 0.05 m, [axis-angle] * 0.5 rad (world frame, applied on the left as
  robosuite's OSC does), gripper (-1 open, +1 close). The target integrates the deltas from the
  previous TARGET (no drift from tracking error) but is kept within `max_lag` of the actual TCP so a
  blocked arm does not wind up, and inside the workspace box.
  """
  a = jnp.clip(action, -1.0, 1.0)
  pos = prev_pos + POS_SCALE * a[:3]
  pos = tcp_pos + jnp.clip(pos - tcp_pos, -max_lag, max_lag)
  pos = jnp.clip(pos, workspace_lo, workspace_hi)
  rot = axis_angle_to_mat(ROT_SCALE * a[3:6]) @ quat_to_mat(prev_quat)
  quat = mat_to_quat(rot)
  q_target = ik(prev_q_target, pos, quat_to_mat(quat), base_pos, cfg)
  grip = GRIPPER_OPEN_CTRL + (GRIPPER_CLOSED_CTRL - GRIPPER_OPEN_CTRL) * 0.5 * (a[6] + 1.0)
  return ArmCommand(pos, quat, q_target, grip)
