"""Scripted experts: pure JAX functions (env, State) -> 7-D LIBERO action, no memory.

The phase is read off the state (is the bowl lifted, are the fingers closed, where is the TCP), so the
expert is a plain function of the state: vmappable, usable inside the env's own lax.scan rollouts and
for making demonstrations. Actions are LIBERO's OSC_POSE deltas: each one sets the controller's goal
relative to the CURRENT end-effector pose, so the expert commands (waypoint - pose), speed-limited.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.robots import panda

# Gripper pointing straight down, fingers opening along world y (LIBERO's start is ~3 deg off this),
# as the end-effector site's axes (LIBERO's grip site: the hand's turned -pi/2 about the tool axis).
R_DOWN_HAND = jnp.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
R_DOWN = R_DOWN_HAND @ panda.EEF_ROT_HAND


def _yaw(quat):
  w, x, y, z = quat
  return jnp.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _wrap(a):
  return (a + jnp.pi) % (2 * jnp.pi) - jnp.pi


def move_action(env, data, goal_pos: jax.Array, r_goal: jax.Array, max_speed: float = 1.0,
                gain: float = 1.0) -> jax.Array:
  """The 6-D arm part of a LIBERO action that pulls the end effector to (goal_pos, r_goal): the
  OSC goal is set `gain` x the remaining error away, at most `max_speed` x 5 cm (the controller then
  moves about 1.5 cm per step at full speed)."""
  err = goal_pos - env.tcp_pos(data)
  dist = jnp.linalg.norm(err) + 1e-9
  reach = jnp.minimum(max_speed * panda.POS_SCALE, gain * dist)
  dpos = err * (reach / dist) / panda.POS_SCALE
  drot = panda.rot_error(r_goal, env.tcp_mat(data)) / panda.ROT_SCALE
  return jnp.concatenate([dpos, jnp.clip(drot, -0.5, 0.5)])


def pick_place_bowl(env, state, bowl: str = "akita_black_bowl_1", target: str = "plate_1",
                    max_speed: float = 1.0, approach_height: float = 0.10,
                    carry_height: float = 0.14) -> jax.Array:
  """Expert for 'pick up the bowl and place it on the plate': pinch one wall stave, lift, carry,
  lower over the plate, release.  Returns float32[7] in [-1, 1]."""
  d = state.pipeline_state
  p = env.built.objects[bowl].params
  tp = env.built.objects[target].params
  tcp = env.tcp_pos(d)
  bowl_pos, bowl_quat = env.object_pos(d, bowl), env.object_quat(d, bowl)
  plate_pos = env.object_pos(d, target)
  opening = env.gripper_opening(d)

  # Grasp the stave whose direction is nearest +y (towards the table centre line); rotate the hand
  # about z so the fingers close across that stave.
  n = p["n_staves"]
  (r0, z0), (r1, z1) = p["stave_bottom"], p["stave_top"]
  yaw = _yaw(bowl_quat)
  step = 2 * jnp.pi / n
  k = jnp.round(_wrap(jnp.pi / 2 - yaw) / step)
  theta = yaw + k * step
  # TCP height so both pads of each finger (tip pad 4.4 mm below the end-effector site, upper pad
  # 1.8 cm above it) lie on the stave; radius of the stave at the pads' mid height.
  zg_local = 0.0224
  zmid = zg_local + 0.0046
  rg = r0 + (zmid - z0) / (z1 - z0) * (r1 - r0)
  grasp = bowl_pos + jnp.array([rg * jnp.cos(theta), rg * jnp.sin(theta), zg_local])
  hand_yaw = _wrap(theta - jnp.pi / 2)
  # fingers are symmetric: choose the equivalent yaw nearest zero
  hand_yaw = jnp.where(hand_yaw > jnp.pi / 2, hand_yaw - jnp.pi, hand_yaw)
  hand_yaw = jnp.where(hand_yaw < -jnp.pi / 2, hand_yaw + jnp.pi, hand_yaw)

  dxy = jnp.linalg.norm(tcp[:2] - grasp[:2])
  lifted = bowl_pos[2] > 0.02
  closed = opening < 0.010
  empty = opening < 0.0015
  holding = lifted & closed & ~empty

  # Phase A: reach, descend, close, lift.
  above = jnp.concatenate([grasp[:2], jnp.array([grasp[2] + approach_height])])
  high_enough = tcp[2] > grasp[2] + approach_height - 0.03
  a_xy = jnp.where(high_enough | (dxy < 0.02), grasp[:2], tcp[:2])
  aligned = dxy < 0.012
  near = jnp.linalg.norm(tcp[:2] - bowl_pos[:2]) < p["radius"] + 0.02
  at_bottom = (tcp[2] < grasp[2] + 0.008) & aligned
  closing = (opening < 0.036) & near & (tcp[2] < grasp[2] + 0.015)
  pinching = closed & ~empty & near
  a_z = jnp.where(aligned, grasp[2], above[2])
  a_z = jnp.where(pinching | empty, above[2], a_z)                 # closed on the stave: lift
  a_xy = jnp.where(pinching, tcp[:2], a_xy)
  a_close = (at_bottom | pinching | closing) & ~empty
  a_z = jnp.where(closing & ~pinching & ~empty, grasp[2], a_z)    # hold height while closing
  goal_a = jnp.concatenate([a_xy, a_z[None]])

  # Phase B: carry over the plate, lower, release.
  offset = tcp - bowl_pos
  place_xy = plate_pos[:2] + offset[:2]
  dplace = jnp.linalg.norm(bowl_pos[:2] - plate_pos[:2])
  carry_z = carry_height
  b_xy = jnp.where((tcp[2] > carry_z - 0.04) | (dplace < 0.03), place_xy, tcp[:2])
  release_z = plate_pos[2] + tp["top"] + 0.012 + offset[2]
  low = bowl_pos[2] < plate_pos[2] + tp["top"] + 0.04
  b_z = jnp.where((dplace < 0.012) | (low & (dplace < 0.025)), release_z, carry_z)
  release = (dplace < 0.02) & (bowl_pos[2] < plate_pos[2] + tp["top"] + 0.02)
  goal_b = jnp.concatenate([b_xy, b_z[None]])

  goal = jnp.where(holding, goal_b, goal_a)
  close = jnp.where(holding, ~release, a_close)

  # tilt the fingers parallel to the flared wall (about the hand's x axis, the wall's tangent), so
  # that both pads of each finger lie on the stave: four contacts, a grasp that cannot roll
  flare = jnp.arctan2(r1 - r0, z1 - z0)
  r_hand = panda.rot_z(hand_yaw) @ R_DOWN_HAND
  radial = jnp.array([jnp.cos(theta), jnp.sin(theta), 0.0])
  inward = jnp.dot(r_hand[:, 1], radial) < 0          # hand +y points to the bowl's centre
  r_goal = r_hand @ panda.rot_x(jnp.where(inward, -flare, flare)) @ panda.EEF_ROT_HAND
  r_goal = jnp.where(holding, env.tcp_mat(d), r_goal)   # carrying: keep the hand's orientation
  arm = move_action(env, d, goal, r_goal, max_speed)
  grip = jnp.where(close, 1.0, -1.0)
  return jnp.clip(jnp.concatenate([arm, grip[None]]), -1.0, 1.0).astype(jnp.float32)
