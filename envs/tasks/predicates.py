"""LIBERO's goal predicates in JAX (see /work/shared/LIBERO_PREDICATES.md for the reference semantics).

Pure functions on positions / contacts / joint values (testable with hand-built numbers), plus
`make_goal_fn` which compiles a TaskSpec's goal (an AND of predicates) into `fn(mjx.Data) -> bool[]`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs.tasks.spec import Predicate, TaskSpec

ON_XY_TOL = 0.03   # LIBERO: ||xy_a - xy_b|| < 0.03 m (body origins) for On(a, object b)


def on_object(pos_a: jax.Array, pos_b: jax.Array, in_contact: jax.Array) -> jax.Array:
  """On(a, b), b an object/fixture: z_b <= z_a, contact(b, a), ||xy_a - xy_b|| < 0.03 (origins)."""
  dxy = pos_a[..., :2] - pos_b[..., :2]
  close = jnp.sum(dxy * dxy, axis=-1) < ON_XY_TOL ** 2
  return (pos_b[..., 2] <= pos_a[..., 2]) & in_contact & close


def on_site(pos_a: jax.Array, site_pos: jax.Array, site_mat: jax.Array, half: jax.Array,
            parent_contact: jax.Array | bool = True) -> jax.Array:
  """On(a, site): d = R_site @ (p_a - p_site) (LIBERO multiplies by R itself, not R^T);
  h_z - 0.005 < d_z < h_z + 0.10, |d_x| < h_x, |d_y| < h_y; and contact with the site's parent."""
  d = site_mat @ (pos_a - site_pos)
  ok = (half[2] - 0.005 < d[2]) & (d[2] < half[2] + 0.10)
  ok = ok & (jnp.abs(d[0]) < half[0]) & (jnp.abs(d[1]) < half[1])
  return ok & parent_contact


def in_site(pos_a: jax.Array, site_pos: jax.Array, site_mat: jax.Array, half: jax.Array) -> jax.Array:
  """In(a, site): lb < p_a < ub with e = |R_site @ h|, ub = p + e, lb = p - e, lb_z -= 0.01."""
  e = jnp.abs(site_mat @ half)
  lb = (site_pos - e).at[2].add(-0.01)
  ub = site_pos + e
  return jnp.all((lb < pos_a) & (pos_a < ub))


def is_open(qpos: jax.Array, open_below: float | None = None, open_above: float | None = None):
  """Open: ANY joint past its open threshold (drawers/microwave open below, fridge/short cabinet above)."""
  ok = jnp.zeros(qpos.shape, bool)
  if open_below is not None:
    ok = ok | (qpos < open_below)
  if open_above is not None:
    ok = ok | (qpos > open_above)
  return jnp.any(ok)


def is_close(qpos: jax.Array, close_above: float | None = None, close_below: float | None = None):
  """Close: ALL joints past their closed threshold."""
  ok = jnp.ones(qpos.shape, bool)
  if close_above is not None:
    ok = ok & (qpos > close_above)
  if close_below is not None:
    ok = ok & (qpos < close_below)
  return jnp.all(ok)


def turn_on(qpos: jax.Array) -> jax.Array:
  return jnp.any(qpos >= 0.5)


def turn_off(qpos: jax.Array) -> jax.Array:
  return jnp.all(qpos < 0.0)


# ------------------------------------------------------------------------------------------------
# From mjx.Data.


def contact_between(data, geoms_a: Sequence[int], geoms_b: Sequence[int]) -> jax.Array:
  """robosuite's check_contact: any active contact (dist < 0: MuJoCo keeps contacts within the
  margin, which is 0 here) pairing a geom of A with a geom of B."""
  c = data._impl.contact
  a = jnp.asarray(np.asarray(geoms_a, np.int32))
  b = jnp.asarray(np.asarray(geoms_b, np.int32))
  in_a1 = jnp.any(c.geom1[:, None] == a[None, :], axis=1)
  in_b1 = jnp.any(c.geom1[:, None] == b[None, :], axis=1)
  in_a2 = jnp.any(c.geom2[:, None] == a[None, :], axis=1)
  in_b2 = jnp.any(c.geom2[:, None] == b[None, :], axis=1)
  pair = (in_a1 & in_b2) | (in_b1 & in_a2)
  return jnp.any(pair & (c.dist < 0))


# robosuite's grasp test (`_check_grasp`, which LIBERO's envs inherit): the object touches a pad of
# EACH finger. Pad geoms of the left and the right finger (envs/robots/panda.xml).
LEFT_PADS = ("left_pad", "left_pad_upper")
RIGHT_PADS = ("right_pad", "right_pad_upper")


def goal_targets(spec: TaskSpec) -> tuple[str, ...]:
  """The movable objects a task's goal places: the first argument of each On / In goal predicate
  that is one of the spec's objects (() for goals that only open, close or turn fixtures)."""
  objects = {o.name for o in spec.objects}
  return tuple(dict.fromkeys(p.args[0] for p in spec.goal
                             if p.name in ("on", "in") and p.args[0] in objects))


def make_held_fn(objects: Sequence[str], mj_model: mujoco.MjModel,
                 contact_geoms: dict[str, tuple[str, ...]]) -> Callable:
  """`fn(mjx.Data) -> bool[len(objects)]`: each object is held between the fingers, robosuite's
  grasp test on the contacts the physics step already made: an active contact with a pad of the
  left finger AND one with a pad of the right finger."""
  left = [mj_model.geom(g).id for g in LEFT_PADS]
  right = [mj_model.geom(g).id for g in RIGHT_PADS]
  gids = [[mj_model.geom(g).id for g in contact_geoms[n]] for n in objects]

  def held(data) -> jax.Array:
    if not gids:
      return jnp.zeros((0,), bool)
    return jnp.stack([contact_between(data, left, g) & contact_between(data, right, g)
                      for g in gids])

  return held


# Articulation thresholds of LIBERO's fixture classes (default_open_ranges / default_close_ranges;
# LIBERO_PREDICATES.md): open = ANY joint past `open`, closed = ALL joints past `close`.
ARTICULATION = {
    "cabinet": dict(open_below=-0.14, close_above=0.0),       # drawers, slide [-0.16, 0.01]
    "microwave": dict(open_below=-1.3, close_above=-0.005),   # door, hinge [-2.094, 0]
}


def make_goal_fn(spec: TaskSpec, mj_model: mujoco.MjModel, contact_geoms: dict[str, tuple[str, ...]],
                 fixture_kinds: dict[str, str] | None = None) -> Callable:
  """`fn(mjx.Data) -> bool[]`: the AND of the spec's goal predicates (LIBERO's semantics)."""
  fns = [compile_predicate(p, spec, mj_model, contact_geoms, fixture_kinds or {}) for p in spec.goal]

  def goal(data) -> jax.Array:
    out = jnp.asarray(True)
    for f in fns:
      out = out & f(data)
    return out

  return goal


class _Entity:
  """What a predicate argument names: an object / fixture (a body), one of its sites (a MuJoCo
  site, riding on a moving part or not), or a table zone (a constant box in the table frame)."""

  def __init__(self, name, spec, m, contact_geoms, fixture_kinds):
    self.name = name
    entities = {o.name for o in spec.objects} | {f.name for f in spec.fixtures}
    self.body = self.site = None
    self.parent = None
    self.joints: list[int] = []          # qpos addresses of the articulation joints it owns
    self.kind = None
    if name in entities:
      self.body = m.body(name).id
      self.parent = name
      self.kind = fixture_kinds.get(name)
      self.joints = _owned_joints(m, name)
      return
    zone = {z.suffix: z for z in spec.zones}.get(name)
    if zone is not None:
      self.zone_pos = np.asarray(zone.pos, np.float32)
      self.zone_mat = _quat_mat(zone.quat)
      self.half = np.asarray(zone.size, np.float32)
      return
    try:
      self.site = m.site(name).id
    except KeyError:
      raise KeyError(f"task {spec.name!r}: predicate argument {name!r} is neither an object, a "
                     f"fixture, one of their sites nor a table zone") from None
    self.half = np.asarray(m.site_size[self.site], np.float32)
    owner = [e for e in entities if name.startswith(e + "_")]
    self.parent = max(owner, key=len) if owner else None
    self.kind = fixture_kinds.get(self.parent)
    # the site's own joints: the joint of the part body it sits on (a drawer), else the owner's
    b = m.site_bodyid[self.site]
    own = [m.jnt_qposadr[j] for j in range(m.njnt) if m.jnt_bodyid[j] == b]
    self.joints = own or (_owned_joints(m, self.parent) if self.parent else [])

  def pose(self, d):
    if self.body is not None:
      return d.xpos[self.body], None
    if self.site is not None:
      return d.site_xpos[self.site], d.site_xmat[self.site].reshape(3, 3)
    return jnp.asarray(self.zone_pos), jnp.asarray(self.zone_mat)


def _owned_joints(m, name: str) -> list[int]:
  """qpos addresses of the hinge / slide joints on an entity's moving parts (not free joints)."""
  root = m.body(name).id
  out = []
  for j in range(m.njnt):
    if int(m.jnt_type[j]) in (int(mujoco.mjtJoint.mjJNT_SLIDE), int(mujoco.mjtJoint.mjJNT_HINGE)):
      b = m.jnt_bodyid[j]
      while b not in (0, root):
        b = m.body_parentid[b]
      if b == root:
        out.append(int(m.jnt_qposadr[j]))
  return out


def _quat_mat(q) -> np.ndarray:
  r = np.zeros(9)
  mujoco.mju_quat2Mat(r, np.asarray(q, np.float64))
  return r.reshape(3, 3).astype(np.float32)


def compile_predicate(p: Predicate, spec: TaskSpec, m: mujoco.MjModel,
                      contact_geoms: dict[str, tuple[str, ...]], fixture_kinds: dict[str, str]
                      ) -> Callable:
  """One LIBERO predicate -> `fn(mjx.Data) -> bool[]` (see LIBERO_PREDICATES.md)."""
  ent = lambda n: _Entity(n, spec, m, contact_geoms, fixture_kinds)  # noqa: E731
  gid = {n: [m.geom(g).id for g in gs] for n, gs in contact_geoms.items()}
  name = p.name
  if name in ("on", "in"):
    a, b = ent(p.args[0]), ent(p.args[1])
    if a.body is None:
      raise ValueError(f"task {spec.name!r}: {p.name}{p.args}: the first argument must be an object")
    ga = gid[p.args[0]]
    if name == "on" and b.body is not None:          # on another object / fixture (3 cm rule)
      gb = gid[p.args[1]]
      return lambda d: on_object(d.xpos[a.body], d.xpos[b.body], contact_between(d, gb, ga))
    half = jnp.asarray(b.half)
    if name == "on":
      gp = gid.get(b.parent) if b.parent else None
      def on_fn(d):
        pos, mat = b.pose(d)
        touch = contact_between(d, gp, ga) if gp else True
        return on_site(d.xpos[a.body], pos, mat, half, touch)
      return on_fn
    if b.body is not None:
      raise NotImplementedError(f"In(object, object) is not used by LIBERO's 40 tasks: {p.args}")
    def in_fn(d):
      pos, mat = b.pose(d)
      return in_site(d.xpos[a.body], pos, mat, half)
    return in_fn
  if name in ("open", "close"):
    e = ent(p.args[0])
    th = ARTICULATION.get(e.kind)
    if th is None or not e.joints:
      raise ValueError(f"task {spec.name!r}: {p.name}({p.args[0]}): not an articulated fixture "
                       f"(kind {e.kind!r}; articulated kinds: {sorted(ARTICULATION)})")
    adr = np.asarray(e.joints)
    if name == "open":
      return lambda d: is_open(d.qpos[adr], open_below=th["open_below"])
    return lambda d: is_close(d.qpos[adr], close_above=th["close_above"])
  if name in ("turnon", "turnoff"):
    e = ent(p.args[0])
    if e.kind != "stove" or not e.joints:
      raise ValueError(f"task {spec.name!r}: {p.name}({p.args[0]}) needs a stove, got kind {e.kind!r}")
    adr = np.asarray(e.joints)
    return (lambda d: turn_on(d.qpos[adr])) if name == "turnon" else (lambda d: turn_off(d.qpos[adr]))
  raise NotImplementedError(f"predicate {p.name}{p.args}: LIBERO's 40 tasks use on, in, open, close, "
                            "turnon, turnoff")
