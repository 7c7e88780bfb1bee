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
from envs.tasks import predicates
from envs.tasks.spec import Predicate

# Gripper pointing straight down, fingers opening along world y (LIBERO's start is ~3 deg off this),
# as the end-effector site's axes (LIBERO's grip site: the hand's turned -pi/2 about the tool axis).
R_DOWN_HAND = jnp.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
R_DOWN = R_DOWN_HAND @ panda.EEF_ROT_HAND
# Pointing down, the palm's long axis (and the fingers' opening) along world x.
R_PUSH = panda.rot_z(jnp.pi / 2) @ R_DOWN_HAND @ panda.EEF_ROT_HAND


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


def pick_place_bowl(env, state, bowl: str = "akita_black_bowl_1", target="plate_1",
                    max_speed: float = 1.0, approach_height: float = 0.10,
                    carry_height: float = 0.14, with_holding: bool = False,
                    side: float = jnp.pi / 2, neighbours: "_Neighbours | None" = None):
  """Expert for 'pick up the bowl and place it on the plate': pinch one wall stave (the one
  nearest the world direction at angle `side`), lift, carry, lower over the target (an object's
  name, or a `_Target`), release.  Returns float32[7] in [-1, 1] (and whether the hand holds the
  bowl, with `with_holding`)."""
  d = state.pipeline_state
  p = env.built.objects[bowl].params
  bowl_pos, bowl_quat = env.object_pos(d, bowl), env.object_quat(d, bowl)
  # Grasp the stave whose direction is nearest `side` (+y: towards the table centre line).
  n = p["n_staves"]
  (r0, z0), (r1, z1) = p["stave_bottom"], p["stave_top"]
  yaw = _yaw(bowl_quat)
  step = 2 * jnp.pi / n
  k = jnp.round(_wrap(side - yaw) / step)
  theta = yaw + k * step
  # TCP height so both pads of each finger (tip pad 4.4 mm below the end-effector site, upper pad
  # 1.8 cm above it) lie on the stave; radius of the stave at the pads' mid height.
  zg_local = 0.0224
  zmid = zg_local + 0.0046
  rg = r0 + (zmid - z0) / (z1 - z0) * (r1 - r0)
  grasp = bowl_pos + jnp.array([rg * jnp.cos(theta), rg * jnp.sin(theta), zg_local])
  return _pinch_stave(env, state, target, bowl_pos, grasp, theta, jnp.arctan2(r1 - r0, z1 - z0),
                      p["radius"], max_speed, approach_height, carry_height, with_holding,
                      neighbours=neighbours)


class _Mug:
  """A mug's wall staves, base and handle (geom ids), for pinching its wall from above."""

  def __init__(self, env, name: str):
    import numpy as np  # noqa: PLC0415
    m = env.mj_model
    ids = [i for i in range(m.ngeom) if (m.geom(i).name or "").startswith(f"{name}_stave")]
    self.staves = jnp.asarray(np.asarray(ids, np.int32))
    self.half_len = float(m.geom_size[ids[0]][1])       # capsule half length
    self.base = m.geom(f"{name}_base").id
    self.handle = m.geom(f"{name}_handle_bar").id
    self.radius = float(env.built.objects[name].params["radius"])

  def footprint(self, d):
    """(the body's centre xy, its radius): the mug seen from above without its handle."""
    return jnp.mean(d.geom_xpos[self.staves][:, :2], 0), jnp.float32(self.radius)


def pick_place_mug(env, state, mug: "_Mug", target: "_Target", max_speed: float = 1.0,
                   approach_height: float = 0.08, carry_height: float = 0.16,
                   with_holding: bool = False, neighbours: "_Neighbours | None" = None):
  """Pinch a mug's wall near its rim, on the stave nearest +y that is at least 70 degrees from
  the handle, lift, carry over the target, lower and release (as `pick_place_bowl`, with the
  staves read from the mug's geoms, whose kind frame may be turned inside LIBERO's body)."""
  d = state.pipeline_state
  up = d.geom_xmat[mug.base].reshape(3, 3)[:, 2]
  bottom = d.geom_xpos[mug.base] - 0.008 * up              # the base disc sits 8 mm up
  tops = d.geom_xpos[mug.staves] + mug.half_len * up      # the staves' upper segment ends
  centre = jnp.mean(d.geom_xpos[mug.staves], 0)
  rel = d.geom_xpos[mug.staves][:, :2] - centre[:2]
  ang = jnp.arctan2(rel[:, 1], rel[:, 0])
  hrel = d.geom_xpos[mug.handle][:2] - centre[:2]
  handle_ang = jnp.arctan2(hrel[1], hrel[0])
  off_handle = jnp.abs(_wrap(ang - handle_ang)) > jnp.deg2rad(70.0)
  cost = jnp.abs(_wrap(ang - jnp.pi / 2)) + jnp.where(off_handle, 0.0, 10.0)
  k = jnp.argmin(cost)
  theta = ang[k]
  # the TCP 2.6 cm under the stave's top end: both finger pads on the stave, under the rim
  grasp = tops[k] - jnp.array([0.0, 0.0, 0.026])
  # a tall mug tips when dropped from the bowl's release height: lowered 1 cm further
  return _pinch_stave(env, state, target, bottom, grasp, theta, 0.0, mug.radius, max_speed,
                      approach_height, carry_height, with_holding, lower=0.01, up=up,
                      neighbours=neighbours)


def _pinch_stave(env, state, target, ref, grasp, theta, flare, radius, max_speed, approach_height,
                 carry_height, with_holding, lower=0.0, up=None, neighbours=None):
  """Reach `grasp` (a point on a vertical-ish wall stave at angle `theta` round the object),
  close across the stave, lift; carry the object's bottom centre `ref` over the target, lower,
  release (`lower`: that much below the target's release height). `flare`: the wall's lean out
  from vertical (the fingers tilt to match it). `up`: the object's axis; given, the carrying hand
  turns to keep it vertical (a mug pinched by its wall swings about the pinch as it is carried).
  `neighbours` (the task's other objects): on the way to the grasp the hand keeps above them, its
  palm as tilted now (the hand turns a quarter or more on the way, and tilts as it turns)."""
  d = state.pipeline_state
  if isinstance(target, str):
    target = _Target(env, "on", target)
  tcp = env.tcp_pos(d)
  opening = env.gripper_opening(d)
  # rotate the hand about z so the fingers close across the stave
  hand_yaw = _wrap(theta - jnp.pi / 2)
  # fingers are symmetric: choose the equivalent yaw nearest zero
  hand_yaw = jnp.where(hand_yaw > jnp.pi / 2, hand_yaw - jnp.pi, hand_yaw)
  hand_yaw = jnp.where(hand_yaw < -jnp.pi / 2, hand_yaw + jnp.pi, hand_yaw)

  dxy = jnp.linalg.norm(tcp[:2] - grasp[:2])
  lifted = ref[2] > 0.02
  closed = opening < 0.010
  empty = opening < 0.0015
  near = jnp.linalg.norm(tcp[:2] - ref[:2]) < radius + 0.02
  # (near: closed fingers elsewhere -- pushing a drawer shut with the bowl in it -- hold nothing)
  holding = lifted & closed & ~empty & near

  # Phase A: reach, descend, close, lift.
  above = jnp.concatenate([grasp[:2], (grasp[2] + approach_height)[None]])
  high_enough = tcp[2] > grasp[2] + approach_height - 0.03
  a_xy = jnp.where(high_enough | (dxy < 0.02), grasp[:2], tcp[:2])
  aligned = dxy < 0.012
  at_bottom = (tcp[2] < grasp[2] + 0.008) & aligned
  closing = (opening < 0.036) & near & (tcp[2] < grasp[2] + 0.015)
  pinching = closed & ~empty & near
  a_z = jnp.where(aligned, grasp[2], above[2])
  a_z = jnp.where(pinching | empty, above[2], a_z)                 # closed on the stave: lift
  a_xy = jnp.where(pinching, tcp[:2], a_xy)
  a_close = (at_bottom | pinching | closing) & ~empty
  a_z = jnp.where(closing & ~pinching & ~empty, grasp[2], a_z)    # hold height while closing
  if neighbours is not None:
    r_now = env.tcp_mat(d) @ panda.EEF_ROT_HAND.T
    a_xy, a_z = neighbours.on_the_way(d, tcp, a_xy, a_z, jnp.arctan2(r_now[1, 0], r_now[0, 0]),
                                      ~aligned & ~closing & ~pinching,
                                      neighbours.palm_up_now(d, tcp))
  goal_a = jnp.concatenate([a_xy, a_z[None]])

  # Phase B: carry over the target, lower, release.
  aim_xy, bottom_z, clear_z = target.levels(d)
  bottom_z = bottom_z - lower
  offset = tcp - ref
  place_xy = aim_xy + offset[:2]
  dplace = jnp.linalg.norm(ref[:2] - aim_xy)
  carry_z = jnp.maximum(carry_height, clear_z + offset[2] + 0.02)
  b_xy = jnp.where((tcp[2] > carry_z - 0.04) | (dplace < 0.03), place_xy, tcp[:2])
  release_z = bottom_z + offset[2]
  low = ref[2] < bottom_z + 0.028
  b_z = jnp.where((dplace < 0.012) | (low & (dplace < 0.025)), release_z, carry_z)
  release = (dplace < 0.02) & (ref[2] < bottom_z + 0.008)
  goal_b = jnp.concatenate([b_xy, b_z[None]])

  goal = jnp.where(holding, goal_b, goal_a)
  close = jnp.where(holding, ~release, a_close)

  # tilt the fingers parallel to the flared wall (about the hand's x axis, the wall's tangent), so
  # that both pads of each finger lie on the stave: four contacts, a grasp that cannot roll
  r_hand = panda.rot_z(hand_yaw) @ R_DOWN_HAND
  radial = jnp.array([jnp.cos(theta), jnp.sin(theta), 0.0])
  inward = jnp.dot(r_hand[:, 1], radial) < 0          # hand +y points to the object's centre
  r_goal = r_hand @ panda.rot_x(jnp.where(inward, -flare, flare)) @ panda.EEF_ROT_HAND
  r_carry = env.tcp_mat(d)                            # carrying: keep the hand's orientation
  if up is not None:                                  # ... turned by what sets `up` vertical
    w = jnp.cross(up, jnp.array([0.0, 0.0, 1.0]))
    sn, cs = jnp.linalg.norm(w), up[2]
    k = jnp.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]]) / (sn + 1e-9)
    r_carry = (jnp.eye(3) + sn * k + (1 - cs) * (k @ k)) @ r_carry
  r_goal = jnp.where(holding, r_carry, r_goal)
  arm = move_action(env, d, goal, r_goal, max_speed)
  grip = jnp.where(close, 1.0, -1.0)
  action = jnp.clip(jnp.concatenate([arm, grip[None]]), -1.0, 1.0).astype(jnp.float32)
  return (action, holding) if with_holding else action


# ------------------------------------------------------------------------------------------------
# Generic pick-and-place for compact objects (boxes, cans, bottles), and the per-task dispatcher.


def _wrap_half(a):
  """An angle folded into [-pi/2, pi/2] (the hand's two fingers are symmetric)."""
  a = _wrap(a)
  a = jnp.where(a > jnp.pi / 2, a - jnp.pi, a)
  return jnp.where(a < -jnp.pi / 2, a + jnp.pi, a)


class _Shape:
  """An object's oriented bounding box in its body frame: centre, axes (columns) and half sizes,
  from its kind's params and kind frame (envs/tasks/objects.py)."""

  def __init__(self, env, name: str):
    import numpy as np  # noqa: PLC0415
    from envs.tasks import objects  # noqa: PLC0415
    spec = {o.name: o for o in env.spec.objects}[name]
    p = env.built.objects[name].params
    fpos, fq = objects.kind_frame(spec)
    rf = rf0 = np.array(objects._quat_mat(fq))  # noqa: SLF001
    m = env.mj_model
    # how far the hand's collision capsule (its lowest point) is above the TCP, pointing down
    hand = m.geom("hand_collision").id
    self.hand_above_tcp = float(m.site_pos[m.site("tcp").id][2] - m.geom_pos[hand][2]
                                - m.geom_size[hand][0])
    # an object with a grip (kind boxes: LIBERO's moka pot) is pinched across the grip's two walls,
    # not across its narrower side; the rest of it (a lid knob) may rise above them: `rise`
    self.grip = p.get("grip")
    self.rise = 0.0
    if self.grip is not None:
      cx, cy, cz, yaw, *half = self.grip
      c, s_ = np.cos(yaw), np.sin(yaw)
      rf = rf @ np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])
      fpos = np.asarray(fpos) + rf0 @ np.array([cx, cy, cz - half[2]])
      half = tuple(half)
      self.rise = float(p["top"] - (cz + half[2]))
    elif "half" in p:
      half = tuple(p["half"])
    else:
      h = p.get("height", p.get("top", 0.02))
      half = (p["radius"], p["radius"], 0.5 * h)
    # a bottle is pinched by its neck (lower, the hand's palm would hit its top): the pinch width
    self.neck = p.get("neck_radius") if spec.kind == "bottle" else None
    self.radius = float(p.get("radius", 0.0))
    # round in plan (a can, a bottle): any yaw grasps it, so the hand keeps its own
    self.round = "half" not in p
    self.body = env._obj_body[name]  # noqa: SLF001
    # the fixtures' box geoms (static ids and half sizes): a round object's grasp yaw keeps the
    # hand's long side off them (_hand_clash)
    fixtures = tuple(getattr(env, "_fixture_kinds", {}))
    ids = [i for i in range(m.ngeom) if m.geom_type[i] == 6 and
           any((m.geom(i).name or "").startswith(f + "_") for f in fixtures)]
    self.obstacles = (np.asarray(ids, np.int32), jnp.asarray(m.geom_size[ids], jnp.float32)) \
        if ids else None
    # the hand's footprint seen from above, from its collision capsule (radius, half length along
    # the fingers' opening direction): half sizes along and across that direction
    radius, half_len = (float(x) for x in m.geom_size[hand][:2])
    self.hand_half = (half_len + radius, radius)
    self.center = jnp.asarray(np.asarray(fpos) + rf @ np.array([0.0, 0.0, half[2]]), jnp.float32)
    # how far up its own axis from its origin an upright object is pinched (pick_place's z_g)
    self.grasp_up = float((np.asarray(fpos) + rf @ np.array([0.0, 0.0, 2 * half[2]]))[2]
                          - min(0.02, half[2]))
    self.axes = jnp.asarray(rf, jnp.float32)
    self.half = jnp.asarray(half, jnp.float32)

  def world(self, d):
    """(centre, axes [3, 3] columns, half sizes) in the world frame."""
    r = d.xmat[self.body].reshape(3, 3)
    return d.xpos[self.body] + r @ self.center, r @ self.axes, self.half

  def footprint(self, d):
    """(centre xy, radius) of the gripped part seen from above: where the hand that let go of it
    is (`_rise_after_release`); a moka pot's handle and spout would stretch it to 10 cm."""
    c, _, half = self.world(d)
    return c[:2], jnp.hypot(half[0], half[1])


class _Target:
  """Where an On / In predicate wants the object: the xy to aim the object's origin at, the height
  its bottom is released at, and the height it must clear on the way (a rim, a surface). The
  target is resolved as the predicate resolves it (`predicates._Entity`): another object (its
  floor and rim from its params), a site of an object or fixture (riding with it), or a table
  zone (constant)."""

  def __init__(self, env, pred_name: str, arg: str, spec=None, slot: float = 0.0):
    spec = env.spec if spec is None else spec
    # `slot` in [-1, 1]: where along a site region's x axis to aim, as a fraction of its half size
    # (two moka pots on one burner stand side by side, not one in the other)
    self.slot = float(slot)
    try:
      self.entity = predicates._Entity(arg, spec, env.mj_model, env._contact_geoms,  # noqa: SLF001
                                       env._fixture_kinds)  # noqa: SLF001
    except KeyError as e:
      raise ValueError(f"no expert target for {pred_name}(..., {arg!r}): {e}") from None
    self.site = self.entity.site
    self.inside = pred_name == "in"
    if self.entity.body is not None:
      if arg not in env.built.objects:
        raise ValueError(f"no expert target for {pred_name}(..., {arg!r}): a fixture's body")
      p = env.built.objects[arg].params
      self.rim = float(p.get("top", p.get("height", 0.02)))
      self.floor = float(p["stave_bottom"][1]) if "stave_bottom" in p else self.rim  # a bowl's floor
    else:
      self.half = jnp.asarray(self.entity.half)

  def levels(self, d):
    """(aim xy, release height of the object's bottom, height to clear)."""
    pos, mat = self.entity.pose(d)
    if mat is None:              # an object
      return pos[:2], pos[2] + self.floor + 0.012, pos[2] + self.rim + 0.03
    ez = jnp.sum(jnp.abs(mat[2]) * self.half)
    if self.slot:
      pos = pos + mat[:, 0] * (self.slot * self.half[0])
    if self.inside:        # a container: drop from 3 cm above its floor, clear its rim
      return pos[:2], pos[2] - ez + 0.03, pos[2] + ez + 0.03
    return pos[:2], pos[2] + ez + 0.01, pos[2] + ez + 0.04


def _footprint(xy, yaw, long_half, short_half):
  """A 9 x 3 grid of points [27, 2] over a rectangle centred at `xy`, long along yaw + pi/2 (the
  way a downward hand at yaw `yaw`, as `pick_place` sets it, is long and closes its fingers)."""
  u = jnp.stack([jnp.cos(yaw + jnp.pi / 2), jnp.sin(yaw + jnp.pi / 2)])
  v = jnp.stack([-u[1], u[0]])
  s = jnp.linspace(-1.0, 1.0, 9)[:, None, None]
  t = jnp.array([-1.0, 0.0, 1.0])[None, :, None]
  return (xy + s * long_half * u + t * short_half * v).reshape(-1, 2)


def _hand_clash(d, shape: _Shape, xy, yaw, z_floor):
  """How many points of a grid over the hand's footprint lie over a fixture's box whose top is
  above `z_floor`, for the hand centred at `xy` at yaw `yaw` (the fingers close, and the hand is
  long, along yaw + pi/2, as `pick_place` sets it): a hand lifting from there would hit that box
  (the wine rack's top next to the bottle in libero_goal 2)."""
  ids, half = shape.obstacles
  pts = _footprint(xy, yaw, *shape.hand_half)
  pos, mat = d.geom_xpos[ids], d.geom_xmat[ids].reshape(-1, 3, 3)
  rel = jnp.concatenate([pts[None] - pos[:, None, :2], jnp.zeros((len(ids), pts.shape[0], 1))], -1)
  u = jnp.einsum("gji,gpj->gpi", mat, rel)                       # R^T (p - c), per box
  # does the vertical line through the point meet the box (a sloping shelf as well as an upright
  # box)? Along the line the box-frame point is u + s w, w = R^T e_z; each axis bounds s to a slab
  w = mat[:, 2, :][:, None, :]
  safe = jnp.where(jnp.abs(w) > 1e-6, w, 1.0)
  a, b = (-half[:, None, :] - u) / safe, (half[:, None, :] - u) / safe
  lo = jnp.where(jnp.abs(w) > 1e-6, jnp.minimum(a, b), -jnp.inf)
  hi = jnp.where(jnp.abs(w) > 1e-6, jnp.maximum(a, b), jnp.inf)
  flat = jnp.all((jnp.abs(w) > 1e-6) | (jnp.abs(u) <= half[:, None, :]), -1)
  inside = flat & (jnp.max(lo, -1) <= jnp.min(hi, -1))
  top = pos[:, 2] + jnp.sum(jnp.abs(mat[:, 2, :]) * half, -1)
  return jnp.sum(inside & (top > z_floor)[:, None])


class _Neighbours:
  """The other objects of a task (each an oriented box from `_Shape`), as terrain under the hand:
  `clearance(d, xy, yaw)` is the lowest TCP height at which a downward hand centred at `xy` with
  yaw `yaw` (long, and opening, along yaw + pi/2, as `pick_place` sets it) keeps its palm and
  fingers above every one of them it overlaps seen from above (their world-aligned bounding boxes).
  A tall carton beside a box to be pinched stands under the palm's long side: the hand sweeping
  down to that box knocked it over (libero_10 task 1: the milk beside the cream cheese)."""

  PALM_UP = 0.037             # the palm's collision capsule bottom above the TCP
  TIP_DOWN = 0.012            # the fingertips below the TCP
  FINGERS = (0.055, 0.012)    # the open fingers' footprint: half sizes along and across the hand
  MARGIN = 0.01

  def __init__(self, env, names):
    import numpy as np  # noqa: PLC0415
    shapes = [_Shape(env, n) for n in names]
    self.n = len(shapes)
    if shapes:
      self.body = jnp.asarray(np.asarray([sh.body for sh in shapes], np.int32))
      self.center = jnp.stack([sh.center for sh in shapes])
      self.axes = jnp.stack([sh.axes for sh in shapes])
      self.half = jnp.stack([sh.half for sh in shapes])
      self.palm = shapes[0].hand_half
    m = env.mj_model
    self.palm_geom = m.geom("hand_collision").id
    self.palm_radius, self.palm_half_len = (float(x) for x in m.geom_size[self.palm_geom][:2])

  def clearance(self, d, xy, yaw, palm_up=PALM_UP):
    """-inf where nothing is under the hand. `palm_up`: the palm's bottom above the TCP (a level
    hand's by default; `palm_up_now` for the hand as it is tilted now)."""
    if self.n == 0:
      return jnp.float32(-jnp.inf)
    r = d.xmat[self.body].reshape(-1, 3, 3)
    c = d.xpos[self.body] + jnp.einsum("kij,kj->ki", r, self.center)
    ext = jnp.einsum("kij,kj->ki", jnp.abs(jnp.einsum("kij,kjl->kil", r, self.axes)), self.half)
    top = c[:, 2] + ext[:, 2]

    def under(long_half, short_half):
      pts = _footprint(xy, yaw, long_half, short_half)
      inside = jnp.all(jnp.abs(pts[None] - c[:, None, :2]) <= ext[:, None, :2], -1)
      return jnp.max(jnp.where(jnp.any(inside, -1), top, -jnp.inf))

    return jnp.maximum(under(*self.palm) - palm_up,
                       under(*self.FINGERS) + self.TIP_DOWN) + self.MARGIN

  def palm_up_now(self, d, tcp):
    """The palm's lowest point above the TCP as the hand is now: a hand turning about z also
    tilts (libero_10 task 3: 20 degrees), and the low end of its 22 cm palm then sits near the
    TCP's height, not PALM_UP above it."""
    g = self.palm_geom
    axis = d.geom_xmat[g].reshape(3, 3)[:, 2]
    low = d.geom_xpos[g][2] - jnp.abs(axis[2]) * self.palm_half_len - self.palm_radius
    return jnp.minimum(low - tcp[2], self.PALM_UP)

  def on_the_way(self, d, tcp, goal_xy, goal_z, yaw, travel, palm_up=PALM_UP):
    """(goal xy, goal z) kept clear of the neighbours while `travel`ling: above what is under the
    hand here and 3 and 6 cm on toward `goal_xy`; below that, rise before moving on."""
    way = goal_xy - tcp[:2]
    ahead = way / (jnp.linalg.norm(way) + 1e-9) * jnp.minimum(jnp.linalg.norm(way), 0.06)
    need = jnp.max(jax.vmap(lambda f: self.clearance(d, tcp[:2] + f * ahead, yaw, palm_up))(
        jnp.array([0.0, 0.5, 1.0])))
    goal_z = jnp.where(travel, jnp.maximum(goal_z, need), goal_z)
    goal_xy = jnp.where(travel & (tcp[2] < need - 0.02), tcp[:2], goal_xy)
    return goal_xy, goal_z


def pick_place(env, state, shape: _Shape, target: _Target, max_speed: float = 1.0,
               approach_height: float = 0.08, with_holding: bool = False,
               neighbours: _Neighbours | None = None, grasp_yaw=None):
  """Pinch a compact object from above across its narrower horizontal side, near its top; lift
  clear of the target's rim, carry its origin over the target, lower and release. Returns
  float32[7] (and whether the hand holds the object, with `with_holding`).
  With `neighbours` (the task's other objects): a box is pinched off its centre, along its long
  side, where the hand at the grasp clears them best (not a grip: its walls are short and the
  hand lines up with them to 2 mm), and on the way there the hand keeps above
  those under it (and rises before it moves on when it is below them) -- a basket it just let go
  into, a tall carton beside the box.
  `grasp_yaw`, when given, is the hand's yaw for the grasp (the bottle laid on the wine rack is
  pinched with the fingers closing along the shelf's slope)."""
  d = state.pipeline_state
  tcp = env.tcp_pos(d)
  opening = env.gripper_opening(d)
  c, axes, half = shape.world(d)
  vert = jnp.abs(axes[2])
  up = jnp.argmax(vert)
  ez = jnp.sum(vert * half)                        # the box's vertical half extent
  top, bottom = c[2] + ez, c[2] - ez
  horiz = jnp.where(jnp.arange(3) == up, jnp.inf, half)
  narrow = jnp.argmin(horiz) if shape.grip is None else 0   # a grip closes across its axis 0
  width = half[narrow] if shape.neck is None else jnp.float32(shape.neck)
  wide = jnp.max(jnp.where(jnp.arange(3) == up, 0.0, half))
  a = axes[:, narrow]
  # the hand's yaw now, and the nearer of the two (symmetric) yaws that close across `a`
  r_hand_now = env.tcp_mat(d) @ panda.EEF_ROT_HAND.T
  yaw_now = jnp.arctan2(r_hand_now[1, 0], r_hand_now[0, 0])
  z_g = jnp.maximum(top - jnp.minimum(0.02, ez), 0.008)
  if shape.rise > 0.0:   # the hand's body stays 3 mm over what rises above the grip (a lid knob)
    z_g = jnp.maximum(z_g, top + shape.rise + 0.003 - shape.hand_above_tcp)
  hand_yaw = yaw_now if shape.round else (
      yaw_now + _wrap_half(jnp.arctan2(a[1], a[0]) - jnp.pi / 2 - yaw_now))
  if shape.round and shape.obstacles is not None:
    # any yaw grasps a round object: turn a quarter only where that keeps more of the hand's long
    # side off the fixtures it would lift into (so the hand keeps its yaw everywhere else)
    turned = yaw_now + jnp.pi / 2
    better = _hand_clash(d, shape, c[:2], turned, z_g) < _hand_clash(d, shape, c[:2], yaw_now, z_g)
    hand_yaw = jnp.where(better, turned, yaw_now)
  if grasp_yaw is not None:
    hand_yaw = grasp_yaw
  r_goal = panda.rot_z(hand_yaw) @ R_DOWN_HAND @ panda.EEF_ROT_HAND
  grasp_xy = c[:2]
  if neighbours is not None and not shape.round and shape.grip is None:
    # slide the pinch along the long side (up to 1.5 cm short of its end) to where the hand clears
    # the neighbours at the grasp height; the centre where all clear
    along = axes[:2, 3 - up - narrow]                  # the long horizontal side
    along = along / (jnp.linalg.norm(along) + 1e-9)
    slide = jnp.maximum(wide - 0.015, 0.0) * jnp.array([0.0, -0.5, 0.5, -1.0, 1.0])
    cand = c[:2] + slide[:, None] * along
    excess = jax.vmap(lambda xy: neighbours.clearance(d, xy, hand_yaw))(cand) - z_g
    grasp_xy = cand[jnp.argmin(jnp.maximum(excess, 0.0) + 1e-3 * jnp.abs(slide))]
  grasp = jnp.concatenate([grasp_xy, z_g[None]])

  dxy = jnp.linalg.norm(tcp[:2] - grasp[:2])
  near = jnp.linalg.norm(tcp[:2] - c[:2]) < wide + 0.02
  # a grip nearly as wide as the open hand (the moka pot's 7.35 cm walls in 8 cm): closed only
  # once the fingers have moved, and lined up to within the room left on each side
  spare = 0.006 if shape.grip is None else 0.5 * (panda.FINGER_STROKE - width)
  closed = opening < width + spare
  empty = opening < 0.4 * width
  holding = closed & ~empty & near & (tcp[2] < top + 0.02) & (tcp[2] > bottom)

  # Phase A: over the object, down, close.
  above_z = z_g + approach_height
  high_enough = tcp[2] > above_z - 0.03
  a_xy = jnp.where(high_enough | (dxy < 0.02), grasp[:2], tcp[:2])
  yaw_ok = jnp.linalg.norm(panda.rot_error(r_goal, env.tcp_mat(d))) < 0.1
  aligned = (dxy < (0.01 if shape.grip is None else spare)) & yaw_ok
  at_bottom = (tcp[2] < z_g + 0.008) & aligned
  closing = (opening < 0.036) & near & (tcp[2] < z_g + 0.015)
  a_z = jnp.where(aligned | closing, z_g, above_z)
  a_z = jnp.where(empty, above_z, a_z)
  a_close = (at_bottom | closing) & ~empty
  if neighbours is not None:      # on the way (not yet over the grasp): above the neighbours
    a_xy, a_z = neighbours.on_the_way(d, tcp, a_xy, a_z, yaw_now, (dxy >= 0.01) & ~closing)
  goal_a = jnp.concatenate([a_xy, a_z[None]])

  # Phase B: up, over, down, release.
  aim_xy, release_z, clear_z = target.levels(d)
  origin = d.xpos[shape.body]
  hang = tcp[2] - bottom
  carry_z = clear_z + hang + 0.02
  place_xy = aim_xy + (tcp[:2] - origin[:2])
  dplace = jnp.linalg.norm(origin[:2] - aim_xy)
  b_xy = jnp.where((tcp[2] > carry_z - 0.03) | (dplace < 0.03), place_xy, tcp[:2])
  # the hand's body starts about 4 cm above the fingertips' mid point (the TCP) and is wider than
  # a basket's opening: the TCP stops 2 cm under the rim (clear_z - 0.03) and the object drops
  tcp_release = jnp.maximum(release_z + hang, clear_z - 0.05)
  b_z = jnp.where(dplace < 0.015, tcp_release, carry_z)
  release = (dplace < 0.02) & (tcp[2] < tcp_release + 0.015)
  goal_b = jnp.concatenate([b_xy, b_z[None]])

  goal = jnp.where(holding, goal_b, goal_a)
  close = jnp.where(holding, ~release, a_close)
  r_goal = jnp.where(holding, env.tcp_mat(d), r_goal)
  arm = move_action(env, d, goal, r_goal, max_speed)
  grip = jnp.where(close, 1.0, -1.0)
  action = jnp.clip(jnp.concatenate([arm, grip[None]]), -1.0, 1.0).astype(jnp.float32)
  return (action, holding) if with_holding else action


class _Rack:
  """LIBERO's wine rack as the bottle skill sees it: the upper shelf (the sloping box nearest the
  `top_region` site; it rises 31 degrees toward the rack's +y), the stopper lip at its low edge
  (the box nearest the site) and the site itself. LIBERO's On(bottle, top_region) holds for a
  bottle lying along the slope with its base against the lip (its origin, the base's centre,
  within 2.2 cm of the site across the slope); lying across the shelf against the lip it does not
  (3.4 cm): so the bottle is laid neck uphill."""

  def __init__(self, env, site: str):
    import mujoco  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    m = env.mj_model
    self.site = m.site(site).id
    body = int(m.site_bodyid[self.site])
    ids = [g for g in range(m.ngeom) if m.geom_bodyid[g] == body and m.geom_type[g] == 6]
    d = mujoco.MjData(m)
    mujoco.mj_kinematics(m, d)           # the rack's own layout: where it stands does not matter
    sp = d.site_xpos[self.site]
    dist = {g: float(np.linalg.norm(d.geom_xpos[g] - sp)) for g in ids}

    def thin(g):
      return int(np.argmin(m.geom_size[g]))

    def sloping(g):
      r = d.geom_xmat[g].reshape(3, 3)
      return 0.17 < abs(r[2, thin(g)]) < 0.98 and np.sort(m.geom_size[g])[1] > 0.03
    shelves = [g for g in ids if sloping(g)]
    if len(ids) < 2 or not shelves:
      raise ValueError(f"the wine rack of {site!r} has no sloping shelf: it is not LIBERO's "
                       "(envs/tasks/data: params 'boxes')")
    self.shelf = min(shelves, key=dist.get)
    self.lip = min((g for g in ids if g != self.shelf), key=dist.get)
    r = d.geom_xmat[self.shelf].reshape(3, 3)
    self.shelf_thin = thin(self.shelf)
    others = [k for k in range(3) if k != self.shelf_thin]
    self.shelf_up = max(others, key=lambda k: abs(r[2, k]))   # the axis along the slope
    self.h_shelf = float(m.geom_size[self.shelf][self.shelf_thin])
    self.lip_thin = thin(self.lip)
    self.h_lip = float(m.geom_size[self.lip][self.lip_thin])

  def frame(self, d):
    """(corner, n, t, e): where the shelf's top meets the lip's face, in line with the site across
    the shelf; the shelf's normal (up), the uphill direction along it, and e = t x n (across)."""
    rs = d.geom_xmat[self.shelf].reshape(3, 3)
    n = rs[:, self.shelf_thin] * jnp.sign(rs[2, self.shelf_thin])
    t = rs[:, self.shelf_up] * jnp.sign(rs[2, self.shelf_up])
    e = jnp.cross(t, n)
    surf = d.geom_xpos[self.shelf] + self.h_shelf * n
    rl = d.geom_xmat[self.lip].reshape(3, 3)
    ln = rl[:, self.lip_thin]
    ln = ln * jnp.sign(ln @ t)
    face = d.geom_xpos[self.lip] + self.h_lip * ln
    corner = surf - ((surf - face) @ ln) / (t @ ln) * t
    corner = corner + ((d.site_xpos[self.site] - corner) @ e) * e
    return corner, n, t, e


RACK_ACROSS = 0.06   # the bottle lies this far across the shelf from the site's centre, toward the
                     # robot: clear of the rack's back post (the predicate allows 10 cm)


def _lay(env, d, shape: _Shape, rack: _Rack):
  """lay_on_rack's geometry and phase flags for state `d` (a dict of arrays)."""
  tcp = env.tcp_pos(d)
  opening = env.gripper_opening(d)
  corner, n, t, e = rack.frame(d)
  across = jnp.where(e[0] < 0, 1.0, -1.0) * RACK_ACROSS
  base = corner + (shape.radius + 0.004) * n + 0.003 * t + across * e
  goal_tcp = base + shape.grasp_up * t
  # holding: the fingers closed on the neck, the TCP at the neck's grasp point
  r_body = d.xmat[shape.body].reshape(3, 3)
  origin = d.xpos[shape.body]
  neck = origin + shape.grasp_up * r_body[:, 2]
  width = jnp.float32(shape.neck)
  holding = (opening < width + 0.006) & (opening > 0.4 * width) & \
      (jnp.linalg.norm(tcp - neck) < 0.03)
  r_hand = env.tcp_mat(d) @ panda.EEF_ROT_HAND.T
  yaw_now = jnp.arctan2(r_hand[1, 0], r_hand[0, 0])
  # the fingers close across the slope (perpendicular to e), so the hand turns about an axis
  # across the pinch, which holds the bottle rigidly (about the pinch's own axis it would swing)
  psi = jnp.arctan2(e[1], e[0])
  yaw = yaw_now + _wrap_half(psi - yaw_now)
  r_down = panda.rot_z(yaw) @ R_DOWN_HAND @ panda.EEF_ROT_HAND
  z = jnp.array([0.0, 0.0, 1.0])
  phi = jnp.arctan2(jnp.cross(z, t) @ e, z @ t)      # turns the approach (-z) onto -t, about e
  r_lay = panda.axis_angle_to_mat(phi * e) @ r_down
  tilted = jnp.linalg.norm(panda.rot_error(r_lay, env.tcp_mat(d))) < 0.08
  pre = goal_tcp + 0.10 * n
  v = tcp - goal_tcp
  along = v @ n
  perp = jnp.linalg.norm(v - along * n)
  on_line = (perp < 0.012) & (along > -0.02) & (along < 0.13) & tilted
  placed = on_line & (jnp.linalg.norm(origin - base) < 0.012)
  return dict(tcp=tcp, e=e, t=t, n=n, base=base, goal_tcp=goal_tcp, pre=pre, neck=neck,
              holding=holding, yaw=yaw, r_down=r_down, r_lay=r_lay, tilted=tilted,
              on_line=on_line, placed=placed, origin=origin)


def lay_on_rack(env, state, shape: _Shape, rack: _Rack, target: _Target, max_speed: float = 0.6,
                with_holding: bool = False, neighbours: _Neighbours | None = None):
  """Pinch an upright bottle by its neck, the fingers closing along the shelf's slope, lift it, turn
  the hand about the horizontal axis across the shelf until the bottle lies along the slope (neck
  uphill, the fingers now closing along the shelf's normal), bring it in along that normal with its
  base at the lip, let go."""
  d = state.pipeline_state
  g = _lay(env, d, shape, rack)
  act_a = pick_place(env, state, shape, target, with_holding=False, neighbours=neighbours,
                     grasp_yaw=g["yaw"])
  tcp, pre = g["tcp"], g["pre"]
  high = tcp[2] > pre[2] - 0.03
  far = jnp.linalg.norm(tcp[:2] - pre[:2]) > 0.03
  goal = jnp.where(g["on_line"], g["goal_tcp"],
                   jnp.where(high | ~far, pre, jnp.concatenate([tcp[:2], pre[2:3]])))
  # turn once the bottle's base is off the table
  r_goal = jnp.where(g["origin"][2] > 0.05, g["r_lay"], g["r_down"])
  arm = move_action(env, d, goal, r_goal, max_speed)
  act_b = jnp.clip(jnp.concatenate([arm, jnp.where(g["placed"], -1.0, 1.0)[None]]), -1.0, 1.0)
  action = jnp.where(g["holding"], act_b.astype(jnp.float32), act_a)
  return (action, g["holding"]) if with_holding else action


def _lean(u, tilt):
  """The rotation that leans a downward hand by `tilt` toward the horizontal direction `u` (about
  the horizontal axis across it; Rodrigues)."""
  w = jnp.array([-u[1], u[0], 0.0])
  k = jnp.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
  return jnp.eye(3) + jnp.sin(tilt) * k + (1 - jnp.cos(tilt)) * (k @ k)


def push(env, state, obj: str, target: _Target, max_speed: float = 0.6, hover: float = 0.05,
         tilt: float = 0.7, aim_bias=(-0.02, -0.01), side: float = 0.045,
         with_holding: bool = False):
  """Push a flat object (a plate: too wide and thin to pinch) along the table to the target: the
  hand, fingers closed, lowers beside the point behind the object (on the side away from the
  target, offset `side` across the push toward +x, where no cabinet handle hangs over the table),
  slides in behind it with the fingertip pads level with its rim, and pushes through the object's
  centre toward the target (the direction is re-read every step, so a push that drifts sideways
  steers back). A hand that is low but not behind the object rises first.

  The geometry that shapes it (libero_goal's plate starts 3 cm in front of the cabinet's drawer
  handles, its rim under the bottom handle): the hand is yawed a quarter turn (R_PUSH, the palm's
  long axis along x) and leaned `tilt` toward the push, so the palm and wrist stay over the plate,
  clear of the drawer floors behind it, and the pads' footprint across the push is 2.6 cm; the aim
  is `aim_bias` off the target's centre (inside its 4 cm tolerance) so that the push starts more
  along -x and the pads stay clear of the bottom drawer's floor, 2.4 cm behind the rim.
  Returns float32[7] (and `holding`, always False: nothing is held)."""
  d = state.pipeline_state
  p = env.built.objects[obj].params
  radius = p["radius"]
  tcp = env.tcp_pos(d)
  pos = env.object_pos(d, obj)
  aim_xy = target.levels(d)[0] + jnp.asarray(aim_bias)
  to_aim = aim_xy - pos[:2]
  dist = jnp.linalg.norm(to_aim)
  u = to_aim / (dist + 1e-6)
  perp = jnp.array([u[1], -u[0]])
  perp = jnp.where(perp[0] < 0, -perp, perp)           # across the push, toward +x
  rel = tcp[:2] - pos[:2]
  s = jnp.dot(rel, u)                                  # along the push (negative: behind)
  lat = jnp.dot(rel, perp)                             # across it
  # the tip pads (3.4 mm below the TCP when leaning) level with the middle of the rim
  z_push = pos[2] + p["top"] - 0.5 * p["thickness"] + 0.004
  low = tcp[2] < pos[2] + p["top"] + 0.012
  behind = pos[:2] - u * (radius + 0.02)
  beside = behind + perp * side
  aligned = jnp.abs(lat) < 0.012
  # low and behind the rim: slide across onto the line through the centre, then push: the goal is
  # the contact point (pads just touching the rim) moved on toward the target
  ahead = jnp.clip(dist, 0.0, 0.05)
  goal_push = jnp.concatenate([jnp.where(aligned, pos[:2] - u * (radius + 0.008) + u * ahead, behind),
                               z_push[None]])
  behind_rim = low & (s < -radius + 0.005)
  dxy = jnp.linalg.norm(tcp[:2] - beside)
  goal_go = jnp.concatenate([beside, jnp.where(dxy < 0.015, z_push, hover)[None]])
  goal_up = jnp.concatenate([tcp[:2], jnp.asarray(hover)[None]])
  goal = jnp.where(behind_rim, goal_push, jnp.where(low, goal_up, goal_go))
  arm = move_action(env, d, goal, _lean(u, tilt) @ R_PUSH, max_speed)
  action = jnp.clip(jnp.concatenate([arm, jnp.ones((1,))]), -1.0, 1.0).astype(jnp.float32)
  return (action, jnp.asarray(False)) if with_holding else action


def _own_joint(m, entity, jtype: int, what: str) -> tuple[int, int]:
  """(joint id, qpos address) of the one joint of MuJoCo type `jtype` (2 slide, 3 hinge) that an
  Open / Close predicate's entity owns; ValueError naming `what` (a drawer, a door) otherwise."""
  if len(entity.joints) != 1:
    raise ValueError(f"{entity.name!r}: not one {what} (joints at qpos {entity.joints})")
  adr = int(entity.joints[0])
  jid = [j for j in range(m.njnt) if int(m.jnt_qposadr[j]) == adr][0]
  if int(m.jnt_type[jid]) != jtype:
    kind = {2: "slide", 3: "hinge"}[jtype]
    raise ValueError(f"{entity.name!r}: its joint is not a {what}'s {kind}")
  return jid, adr


class _Drawer:
  """A cabinet drawer an Open / Close predicate names: its slide joint (qpos address, world axis)
  and its handle bar (a grasp capsule, fixtures.cabinet)."""

  def __init__(self, env, entity):
    m = env.mj_model
    self.joint, self.qadr = _own_joint(m, entity, 2, "drawer")
    self.handle = m.geom(m.joint(self.joint).name + "_handle").id

  def frame(self, d):
    """(handle bar centre, the horizontal direction the drawer opens along, its qpos)."""
    out = -d.xaxis[self.joint]            # it opens toward negative q: along -axis
    return d.geom_xpos[self.handle], out, d.qpos[self.qadr]


def open_drawer(env, state, drawer: _Drawer, max_speed: float = 0.6, tilt: float = 0.7,
                with_holding: bool = False):
  """Open a drawer by its handle bar: the hand, pointing down with the fingers opening across the
  bar and leaned `tilt` toward the way the drawer opens (so the palm stays clear of the drawer
  floors and the cabinet top above the bar), comes in along its own tool axis onto the bar, closes
  round it and pulls along the slide (the goal rides with the bar). Fingers that closed on nothing
  open and back off. Returns float32[7] (and whether the hand holds the bar)."""
  d = state.pipeline_state
  tcp = env.tcp_pos(d)
  opening = env.gripper_opening(d)
  bar, out, _ = drawer.frame(d)
  r_goal = _lean(out[:2], tilt) @ R_DOWN
  # the approach line: from the bar back along the tool axis (up and out)
  back = jnp.concatenate([out[:2] * jnp.sin(tilt), jnp.cos(tilt)[None]])
  rel = tcp - bar
  t = jnp.dot(rel, back)
  off = jnp.linalg.norm(rel - t * back)
  on_line = (off < 0.01) & (t > -0.01) & (t < 0.10)
  near = jnp.linalg.norm(rel) < 0.012
  closed = opening < 0.016
  empty = opening < 0.003
  holding = closed & ~empty & (jnp.linalg.norm(rel) < 0.025)
  pre = bar + 0.07 * back
  goal = jnp.where(on_line, bar, pre)
  goal = jnp.where(holding, bar + 0.05 * out, goal)
  goal = jnp.where(empty, pre, goal)
  close = (near | holding | ((opening < 0.036) & (jnp.linalg.norm(rel) < 0.02))) & ~empty
  arm = move_action(env, d, goal, r_goal, max_speed)
  grip = jnp.where(close, 1.0, -1.0)
  action = jnp.clip(jnp.concatenate([arm, grip[None]]), -1.0, 1.0).astype(jnp.float32)
  return (action, holding) if with_holding else action


class _DrawerTarget:
  """In(object, a drawer's region) with the drawer open: the region rides the drawer, and only the
  part of the drawer out in front of the cabinet takes an object lowered from above (the next
  drawer's floor or the top slab sits a few cm over its floor, less than a bowl's height). Aims
  along the slide at the middle between the front edge of the lowest cabinet surface above the
  drawer's floor and the floor's own front edge; across it at the region's centre. Releases just
  over the drawer's floor; clears the drawer's front. The same `levels` as `_Target`."""

  def __init__(self, env, target: _Target, drawer: _Drawer, cabinet: str):
    import numpy as np  # noqa: PLC0415
    m = env.mj_model
    self.target, self.drawer = target, drawer
    jname = m.joint(drawer.joint).name
    self.floor = m.geom(jname + "_floor").id
    self.front = m.geom(jname + "_front").id
    # the cabinet's colliding boxes (the top slab, the other drawers' floors) that can overhang it
    ids = [m.geom(g).id for g in env._contact_geoms[cabinet]  # noqa: SLF001
           if m.geom_type[m.geom(g).id] == 6 and not g.startswith(jname)]
    if not ids:
      raise ValueError(f"{cabinet!r}: no cabinet surface found over {jname!r}")
    self.ids = jnp.asarray(np.asarray(ids, np.int32))
    self.halves = jnp.asarray(m.geom_size[ids], jnp.float32)
    self.floor_half = jnp.asarray(m.geom_size[self.floor], jnp.float32)
    self.front_half = jnp.asarray(m.geom_size[self.front], jnp.float32)

  def levels(self, d):
    pos, _ = self.target.entity.pose(d)
    _, out, _ = self.drawer.frame(d)
    out = out / jnp.linalg.norm(out)
    along = lambda r, half: jnp.sum(jnp.abs(jnp.swapaxes(r, -1, -2) @ out) * half, -1)  # noqa: E731
    up = lambda r, half: jnp.sum(jnp.abs(r[..., 2, :]) * half, -1)  # noqa: E731
    rf = d.geom_xmat[self.floor].reshape(3, 3)
    floor_edge = jnp.dot(d.geom_xpos[self.floor], out) + along(rf, self.floor_half)
    floor_top = d.geom_xpos[self.floor][2] + up(rf, self.floor_half)
    r = d.geom_xmat[self.ids].reshape(-1, 3, 3)
    c = d.geom_xpos[self.ids]
    bottoms = c[:, 2] - up(r, self.halves)
    over = (bottoms > floor_top - 0.005) & (bottoms < floor_top + 0.15)
    edge = jnp.max(jnp.where(over, c @ out + along(r, self.halves), -jnp.inf))
    s_aim = 0.5 * (floor_edge + edge)
    aim = pos + (s_aim - jnp.dot(pos, out)) * out
    rfr = d.geom_xmat[self.front].reshape(3, 3)
    front_top = d.geom_xpos[self.front][2] + up(rfr, self.front_half)
    return aim[:2], floor_top + 0.012, front_top + 0.03


def close_drawer(env, state, drawer: _Drawer, max_speed: float = 0.5, tilt: float = 0.5,
                 with_holding: bool = False):
  """Push a drawer shut by its handle bar: closed fingers, the hand turned so its long side lies
  along the bar and leaned `tilt` out (the palm stays clear of the cabinet above), come down in
  front of the bar at its height and push along the slide (the goal rides with the bar). Returns
  float32[7] (and False: nothing is held)."""
  d = state.pipeline_state
  tcp = env.tcp_pos(d)
  bar, out, _ = drawer.frame(d)
  u = out[:2] / (jnp.linalg.norm(out[:2]) + 1e-9)
  r_goal = _lean(u, tilt) @ panda.rot_z(jnp.pi / 2) @ R_DOWN
  rel = tcp - bar
  s = jnp.dot(rel[:2], u)                               # in front of the bar (along out)
  lateral = jnp.linalg.norm(rel[:2] - s * u)
  level = jnp.abs(rel[2]) < 0.015
  start = bar + jnp.concatenate([0.045 * u, jnp.zeros(1)])
  above = start + jnp.array([0.0, 0.0, 0.10])
  lined = (lateral < 0.015) & (s > -0.03) & (s < 0.06)
  goal = jnp.where(lined & (rel[2] < 0.12), start, above)
  push_goal = bar - jnp.concatenate([0.06 * u, jnp.zeros(1)])
  goal = jnp.where(lined & level, push_goal, goal)
  arm = move_action(env, d, goal, r_goal, max_speed)
  action = jnp.clip(jnp.concatenate([arm, jnp.ones(1)]), -1.0, 1.0).astype(jnp.float32)
  return (action, jnp.asarray(False)) if with_holding else action


class _Door:
  """A hinged door a Close predicate names (a microwave's): its hinge (qpos address; it shuts toward
  q = 0, LIBERO's Close range) and its slab (`<fixture>_door`, fixtures.microwave)."""

  def __init__(self, env, entity):
    m = env.mj_model
    self.joint, _ = _own_joint(m, entity, 3, "door")
    if not m.jnt_range[self.joint][1] <= 1e-6 < -m.jnt_range[self.joint][0]:
      raise ValueError(f"{entity.name!r}: its hinge does not shut toward q = 0 from below "
                       f"(range {tuple(m.jnt_range[self.joint])})")
    try:
      self.slab = m.geom(f"{entity.parent}_door").id
    except KeyError:
      raise ValueError(f"{entity.parent!r} has no door slab ({entity.parent}_door)") from None
    self.half = jnp.asarray(m.geom_size[self.slab], jnp.float32)


def close_door(env, state, door: _Door, max_speed: float = 0.5, reach: float = 0.04,
               with_holding: bool = False):
  """Swing a hinged door shut (a microwave's): the hand, pointing down with the fingers closed and
  the palm along the door, comes down outside the door's outer face, `reach` past its middle toward
  the free edge, at the slab's mid height, and pushes the face along its normal -- the way that
  point moves as the door shuts (axis x edge: the hinge opens toward negative q), re-read every
  step, so the push follows the arc -- until the door rests on its stop. A hand on the wrong side
  of the door (or too high or low) goes over it first. Returns float32[7] (and False: nothing is
  held)."""
  d = state.pipeline_state
  tcp = env.tcp_pos(d)
  c = d.geom_xpos[door.slab]
  e = d.geom_xmat[door.slab].reshape(3, 3)[:, 0]
  e = e * jnp.sign(jnp.dot(c - d.xanchor[door.joint], e))    # along the slab, hinge -> free edge
  n = jnp.cross(d.xaxis[door.joint], e)      # where the free edge goes as the door shuts
  face = c + e * reach - n * door.half[1]    # on the outer face
  top = c[2] + door.half[2]
  rel = tcp - face
  depth = jnp.dot(rel[:2], n[:2])            # < 0: outside the outer face
  along = jnp.dot(rel[:2], e[:2])
  pre = face - n * 0.05
  hover = top + 0.10
  at_face = (depth < 0.0) & (depth > -0.08) & (jnp.abs(along) < 0.05) & (tcp[2] < top)
  goal_push = jnp.concatenate([(face + n * 0.04)[:2], c[2:3]])
  dxy = jnp.linalg.norm(tcp[:2] - pre[:2])
  goal_go = jnp.concatenate([pre[:2], jnp.where(dxy < 0.015, c[2], hover)[None]])
  goal_up = jnp.concatenate([tcp[:2], hover[None]])
  goal = jnp.where(at_face, goal_push,
                   jnp.where((tcp[2] < hover - 0.03) & (dxy >= 0.015), goal_up, goal_go))
  # the palm (long along the fingers' opening: world y for R_DOWN) along the door
  r_goal = panda.rot_z(_wrap_half(jnp.arctan2(e[1], e[0]) - jnp.pi / 2)) @ R_DOWN
  arm = move_action(env, d, goal, r_goal, max_speed)
  action = jnp.clip(jnp.concatenate([arm, jnp.ones(1)]), -1.0, 1.0).astype(jnp.float32)
  return (action, jnp.asarray(False)) if with_holding else action


def turn_on_knob(env, state, stove: str, max_speed: float = 0.5, radius: float = 0.028,
                 hover: float = 0.09, with_holding: bool = False):
  """Turn a stove's knob on (counter-clockwise from above, LIBERO's TurnOn: hinge angle >= 0.5):
  the hand, pointing down with the fingers closed, lowers beside the knob's grip bar `radius` out
  from the hinge, on the side the bar must turn away from, and pushes it round (the goal is
  re-read from the bar's angle every step, so the finger follows the arc). The knob turns in a
  well carved out of the stove's base (fixtures._carve_knob) a little larger than the knob, so
  the pads' footprint is kept inside it: the palm yawed to x (R_PUSH, pads 2.4 cm along x).
  Returns float32[7] (and `holding`, always False)."""
  d = state.pipeline_state
  m = env.mj_model
  g = m.geom(f"{stove}_knob").id
  tcp = env.tcp_pos(d)
  c = d.geom_xpos[g]
  bar = d.geom_xmat[g].reshape(3, 3)[:, 2]
  b = bar[:2] / (jnp.linalg.norm(bar[:2]) + 1e-9)
  b = jnp.where(b[0] < 0, -b, b)                   # the bar's end away from the robot
  t = jnp.array([-b[1], b[0]])                     # which way that end goes when turned on
  rel = tcp[:2] - c[:2]
  a, tau = jnp.dot(rel, b), jnp.dot(rel, t)
  z_push = c[2] + 0.005                            # tip pads level with the bar
  low = tcp[2] < z_push + 0.006                    # down at the bar: a finger above it slips over
  behind = (tau < -0.005) & (a > radius - 0.02) & (a < radius + 0.025)
  pre = c[:2] + b * radius - t * 0.028
  dxy = jnp.linalg.norm(tcp[:2] - pre)
  # pushing a turning lever slides the finger out along it: aim a little inward of `radius`
  goal_push = jnp.concatenate([c[:2] + b * (radius - 0.006) + t * 0.03, z_push[None]])
  goal_go = jnp.concatenate([pre, jnp.where(dxy < 0.01, z_push, hover)[None]])
  goal_up = jnp.concatenate([tcp[:2], jnp.asarray(hover)[None]])
  goal = jnp.where(low & behind, goal_push, jnp.where(low, goal_up, goal_go))
  arm = move_action(env, d, goal, R_PUSH, max_speed)
  action = jnp.clip(jnp.concatenate([arm, jnp.ones((1,))]), -1.0, 1.0).astype(jnp.float32)
  return (action, jnp.asarray(False)) if with_holding else action


def _rise_after_release(env, act, done, target: _Target, obj: str, above: float = 0.03,
                        footprint=None):
  """`act` (a pick-and-place skill for `obj`) followed by a straight rise once it has placed the
  object: while the predicate holds, the hand is open and its TCP is still below `above` over the
  higher of the target's clearance height and the object's top, and over the object, it goes
  straight up instead of on to the next skill -- which would otherwise sweep the fingers sideways
  through what was just placed (a basket dragged after the next object, a mug knocked off its
  plate) -- and counts as busy meanwhile.
  "Over the object": within 2 cm of `footprint(d) -> (centre xy, radius)`, by default every geom's
  reach round the body's origin. That is too wide for a mug -- a mug's handle stretched it to
  11 cm, and the hand carrying the next object past the placed mug was taken for the hand that had
  just let go of it: the rise opened the fingers and dropped that object short of its target."""
  import numpy as np  # noqa: PLC0415
  m = env.mj_model
  body = env._obj_body[obj]  # noqa: SLF001
  gids = np.flatnonzero(m.geom_bodyid == body)
  ids = jnp.asarray(gids.astype(np.int32))
  rbound = jnp.asarray(m.geom_rbound[gids], jnp.float32)
  if footprint is None:
    # the object's reach round its origin, seen from above: the fingers are still in or at it
    reach = float(np.max(np.linalg.norm(m.geom_pos[gids, :2], axis=1) + m.geom_rbound[gids]))
    footprint = lambda d: (d.xpos[body, :2], reach)  # noqa: E731
  fv = jnp.asarray([m.jnt_dofadr[m.joint(j).id] for j in panda.FINGER_JOINTS])

  def rise(state):
    action, holding = act(state)
    d = state.pipeline_state
    tcp = env.tcp_pos(d)
    _, _, clear = target.levels(d)
    top = jnp.max(d.geom_xpos[ids, 2] + rbound)       # the object's top (bounding spheres)
    height = jnp.maximum(clear, top) + above
    centre, radius = footprint(d)
    near = jnp.linalg.norm(tcp[:2] - centre) < radius + 0.02
    low = done(d) & ~holding & (tcp[2] < height) & near
    # the fingers open fully before the hand rises (rising while they open drags a pinched wall
    # up with them and tips a mug)
    # (or have stopped opening: a finger jammed against a basket's wall must not hold the hand)
    opened = (env.gripper_opening(d) > 0.035) | \
        ((env.gripper_opening(d) > 0.012) & (jnp.max(jnp.abs(d.qvel[fv])) < 0.002))
    up = jnp.concatenate([tcp[:2], jnp.where(opened, height + 0.02, tcp[2])[None]])
    arm = move_action(env, d, up, env.tcp_mat(d), 0.6)
    lift = jnp.clip(jnp.concatenate([arm, jnp.array([-1.0])]), -1.0, 1.0).astype(jnp.float32)
    return jnp.where(low, lift, action), holding | low

  return rise


# (fixture kind, Open / Close) -> (the moving part as the skill reads it, the skill)
_ARTICULATION_SKILLS = {("cabinet", "open"): (_Drawer, open_drawer),
                        ("cabinet", "close"): (_Drawer, close_drawer),
                        ("microwave", "close"): (_Door, close_door)}


class SuiteExpert:
  """A scripted expert for every task of a LiberoSuite (or LiberoTask): a plain function of the
  state, vmappable; `expert(state) -> f32[7]`.

  Each task's goal is an AND of predicates; the expert works on the first one not yet done (true,
  and the object let go), in the goal's order, with the skill for that predicate (a bowl going
  into a drawer that starts closed brings two steps before its own: staged on the cabinet's top,
  the drawer opened; `_stage_then_open`). Tasks whose
  predicates have no skill yet raise at construction, naming them (`supported(env)` lists which
  tasks are covered).
  """

  def __init__(self, env):
    specs = getattr(env, "specs", (env.spec,))
    self._env = env
    self._plans = []
    missing = []
    for k, s in enumerate(specs):
      try:
        self._plans.append(self._plan(env, s))
      except ValueError as e:
        missing.append(f"task {k} {s.language!r}: {e}")
    if missing:
      raise ValueError("no scripted expert for:\n  " + "\n  ".join(missing))

  @staticmethod
  def _plan(env, spec):
    """[(done_fn, act_fn)] per goal predicate, in order; ValueError when a skill is missing."""
    m = env.mj_model
    steps, closing = [], []       # closing drawers comes last (after putting things in them)
    opened = {q.args[0] for q in spec.init if q.name == "open"}
    for p in spec.goal:
      if p.name in ("open", "close"):
        done = predicates.compile_predicate(p, spec, env.mj_model, env._contact_geoms,  # noqa: SLF001
                                            env._fixture_kinds)  # noqa: SLF001
        ent = predicates._Entity(p.args[0], spec, m, env._contact_geoms,  # noqa: SLF001
                                 env._fixture_kinds)  # noqa: SLF001
        if (ent.kind, p.name) not in _ARTICULATION_SKILLS:
          raise ValueError(f"{p.name}{tuple(p.args)}: only a cabinet's drawer opens and closes "
                           "and a microwave's door closes yet")
        part, skill = _ARTICULATION_SKILLS[ent.kind, p.name]
        (steps if p.name == "open" else closing).append(
            (done, lambda s, pt=part(env, ent), f=skill: f(env, s, pt, with_holding=True)))
        continue
      if p.name == "turnon":
        done = predicates.compile_predicate(p, spec, env.mj_model, env._contact_geoms,  # noqa: SLF001
                                            env._fixture_kinds)  # noqa: SLF001
        steps.append((done, lambda s, st=p.args[0]: turn_on_knob(env, s, st, with_holding=True)))
        continue
      if p.name not in ("on", "in"):
        raise ValueError(f"predicate {p.name}{tuple(p.args)} has no skill yet (have: on, in, "
                         "open or close a drawer, turn on a stove)")
      obj = p.args[0]
      if obj not in env._obj_body:  # noqa: SLF001
        raise ValueError(f"{p.name}{tuple(p.args)}: {obj!r} is not an object")
      kind = {o.name: o.kind for o in env.spec.objects}[obj]
      done = predicates.compile_predicate(p, spec, env.mj_model, env._contact_geoms,  # noqa: SLF001
                                          env._fixture_kinds)  # noqa: SLF001
      # objects put ON one region share it: each its own slot across the region's x (0.6 of its
      # half size from the centre for two), so the second does not land on the first
      sharing = [q for q in spec.goal if q.name == "on" and q.args[1] == p.args[1]]
      slot = 0.0 if p.name != "on" or len(sharing) < 2 else \
          0.6 * (2 * sharing.index(p) / (len(sharing) - 1) - 1)
      target = _Target(env, p.name, p.args[1], spec, slot=slot)
      if p.name == "in" and target.site is not None and \
         env._fixture_kinds.get(target.entity.parent) == "microwave":  # noqa: SLF001
        # its cavity is 4 cm taller than a mug: a hand pinching a mug from above cannot set it
        # inside (the palm and the wrist meet the roof), and a pinched handle does not hold the
        # mug's lever (it swings round the pinch); see the issue-7 notes of 2026-12-01
        raise ValueError(f"{p.name}{tuple(p.args)}: nothing is put into a microwave yet (only its "
                         "door is closed)")
      if target.site is not None and m.body_jntnum[m.site_bodyid[target.site]] and \
         m.jnt_type[m.body_jntadr[m.site_bodyid[target.site]]] != 0:
        ent = target.entity
        if p.name != "in" or ent.kind != "cabinet":
          raise ValueError(f"{p.name}{tuple(p.args)}: the target rides a door or part that "
                           "only a cabinet's drawer skill knows yet")
        drawer = _Drawer(env, ent)
        target = _DrawerTarget(env, target, drawer, ent.parent)
        if p.args[1] not in opened:
          if kind != "bowl":
            raise ValueError(f"{p.name}{tuple(p.args)}: the drawer starts closed; only a bowl is "
                             "staged on the cabinet's top before it is opened")
          steps.extend(_stage_then_open(env, spec, obj, p.args[1], ent.parent, drawer, done))
      owner = [f for f in env._fixture_kinds if p.args[1].startswith(f + "_")]  # noqa: SLF001
      on_rack = bool(owner) and env._fixture_kinds[owner[0]] == "rack"  # noqa: SLF001
      if on_rack and (kind != "bottle" or p.name != "on"):
        raise ValueError(f"{p.name}{tuple(p.args)}: only a bottle is laid on the wine rack")
      footprint = None
      near = _Neighbours(env, [o.name for o in spec.objects if o.name != obj])
      if kind == "plate" and p.name == "on":
        act = lambda s, o=obj, t=target: push(env, s, o, t, with_holding=True)  # noqa: E731
      elif kind == "bowl":
        # into a drawer: the stave toward the robot (-x), so the hand's long side lies across the
        # drawer's slide, clear of the handles of the drawers above; off the cabinet's top (staged
        # there, below) the stave at +y: a palm long along x would reach back over the top's near
        # edge into whatever stands in front of the cabinet (a wine rack), and the far stave is
        # out of reach
        side = jnp.pi if isinstance(target, _DrawerTarget) and p.args[1] in opened else jnp.pi / 2
        act = lambda s, o=obj, t=target, sd=side, nb=near: pick_place_bowl(  # noqa: E731
            env, s, bowl=o, target=t, with_holding=True, side=sd, neighbours=nb)
      elif kind == "mug":
        mug = _Mug(env, obj)
        act = lambda s, mg=mug, t=target, nb=near: pick_place_mug(  # noqa: E731
            env, s, mg, t, with_holding=True, neighbours=nb)
        footprint = mug.footprint
      elif on_rack:
        shape, rack = _Shape(env, obj), _Rack(env, p.args[1])
        act = lambda s, sh=shape, rk=rack, tg=target, nb=near: lay_on_rack(  # noqa: E731
            env, s, sh, rk, tg, with_holding=True, neighbours=nb)
      elif kind in ("box", "cylinder", "bottle", "boxes"):
        shape = _Shape(env, obj)
        act = lambda s, sh=shape, tg=target, nb=near: pick_place(  # noqa: E731
            env, s, sh, tg, with_holding=True, neighbours=nb)
        if shape.grip is not None:
          footprint = shape.footprint
      else:
        raise ValueError(f"{p.name}{tuple(p.args)}: no grasp for kind {kind!r} yet")
      if kind != "plate":
        act = _rise_after_release(env, act, done, target, obj, footprint=footprint)
      steps.append((done, act))
    return steps + closing

  def __call__(self, state) -> jax.Array:
    d = state.pipeline_state
    per_task = []
    for steps in self._plans:
      action = steps[-1][1](state)[0]
      for done, act in reversed(steps[:-1]):
        # a predicate counts as done once it holds with the hand let go (an object in the basket
        # but still in the hand is not placed yet)
        a, holding = act(state)
        action = jnp.where(done(d) & ~holding, action, a)
      per_task.append(action)
    if len(per_task) == 1:
      return per_task[0]
    return jnp.stack(per_task)[state.obs["task_id"]]


def _stage_then_open(env, spec, obj: str, region: str, cabinet: str, drawer: _Drawer, placed):
  """The steps before putting a bowl into a cabinet's drawer that starts closed: the bowl first
  onto the cabinet's top (`<cabinet>_top_side`), then the drawer opened. With the drawer open
  first, a bowl standing beside its front corner cannot be pinched (the hand's 22 cm long side
  meets the drawer); on the top it is out of the way of the hand opening the drawer and a short
  carry above the drawer's exposed front part. Each step counts as done once a later one is (the
  bowl lifted off the top again does not send the hand back to put it there)."""
  m = env.mj_model
  compile_ = lambda p: predicates.compile_predicate(  # noqa: E731
      p, spec, m, env._contact_geoms, env._fixture_kinds)  # noqa: SLF001
  top = f"{cabinet}_top_side"
  try:
    m.site(top)
  except KeyError:
    raise ValueError(f"{cabinet!r} has no top ({top!r}) to stage {obj!r} on") from None
  is_open = compile_(Predicate("open", (region,)))
  on_top = compile_(Predicate("on", (obj, top)))
  staged = lambda d: on_top(d) | is_open(d) | placed(d)  # noqa: E731
  stage_target = _Target(env, "on", top, spec)
  near = _Neighbours(env, [o.name for o in spec.objects if o.name != obj])
  stage = _rise_after_release(
      env, lambda s: pick_place_bowl(env, s, bowl=obj, target=stage_target, with_holding=True,
                                     neighbours=near),
      lambda d: on_top(d) & ~is_open(d) & ~placed(d),  # (not when taking it off the top again)
      stage_target, obj)
  opened = lambda d: is_open(d) | placed(d)  # noqa: E731

  def later(act):
    # once the drawer is open, what these steps' skills would call holding (the bowl pinched on
    # the top again, the fingers closed near the bar) is the next step's work, not theirs
    def run(s):
      action, holding = act(s)
      return action, holding & ~opened(s.pipeline_state)
    return run

  return [(staged, later(stage)),
          (opened, later(lambda s: open_drawer(env, s, drawer, with_holding=True)))]


def supported(env) -> list[bool]:
  """Whether each task of `env` has a scripted expert."""
  out = []
  for spec in getattr(env, "specs", (env.spec,)):
    try:
      SuiteExpert._plan(env, spec)  # noqa: SLF001
      out.append(True)
    except ValueError:
      out.append(False)
  return out
