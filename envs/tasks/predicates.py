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


def make_goal_fn(spec: TaskSpec, mj_model: mujoco.MjModel, contact_geoms: dict[str, tuple[str, ...]]
                 ) -> Callable:
  """`fn(mjx.Data) -> bool[]`: the AND of the spec's goal predicates (only On(object, object) now;
  the other names raise until their fixtures exist)."""
  body = {o.name: mj_model.body(o.name).id for o in spec.objects}
  gid = {n: [mj_model.geom(g).id for g in gs] for n, gs in contact_geoms.items()}
  fns = []
  for p in spec.goal:
    fns.append(_compile(p, body, gid))

  def goal(data) -> jax.Array:
    out = jnp.asarray(True)
    for f in fns:
      out = out & f(data)
    return out

  return goal


def _compile(p: Predicate, body: dict, gid: dict) -> Callable:
  if p.name == "on":
    a, b = p.args
    if a in body and b in body:
      ia, ib = body[a], body[b]
      ga, gb = gid[a], gid[b]
      return lambda d: on_object(d.xpos[ia], d.xpos[ib], contact_between(d, gb, ga))
  raise NotImplementedError(f"predicate {p.name}{p.args} (only On(object, object) is built yet)")
