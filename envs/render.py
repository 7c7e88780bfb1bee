"""Batched pure-JAX ray caster for MJX scenes: RGB, depth and segmentation inside the physics jit.

Usage::

    renderer = Renderer(mj_model, ["agentview", "wrist"], 128, 128)
    imgs = jax.vmap(renderer.render_rgb)(batched_mjx_data)      # {"agentview": u8[B,128,128,3], ...}
    imgs, overflow = jax.vmap(lambda d: renderer.render_rgb(d, with_overflow=True))(batched_data)
    renderer.check_overflow(overflow)     # host side: raises ValueError if any image may be wrong
    full = renderer.render(data)          # {"agentview": {"rgb", "depth", "segmentation"}, ...}
    scene = renderer.scene_inputs(data)   # SceneInputs: the few KB of poses an image depends on
    imgs = renderer.render_rgb(scene)     # bit-identical to render_rgb(data)

Conventions (the same image MuJoCo's own renderer, `mujoco.Renderer`, shows):
  * Pinhole camera at `data.cam_xpos[c]` with orientation `data.cam_xmat[c]`; it looks along its
    -z axis, +y is up and +x is right; `model.cam_fovy` is the VERTICAL field of view and the
    horizontal one follows from the aspect ratio W / H.
  * Row 0 is the TOP of the image and column 0 its LEFT edge (as `mujoco.Renderer.render()`
    returns it). Rays go through pixel centres.
  * depth: float32[H, W], distance along the camera's -z axis (MuJoCo's depth convention, i.e. NOT
    the distance along the ray); pixels that hit nothing get `far` (a large finite value, 1e3 m by
    default, so non-finite checks on observations stay meaningful).
  * segmentation: int32[H, W], the geom id hit, -1 for background.
  * rgb: uint8[H, W, 3]: geom colour (material rgba where the geom keeps the default colour) times
    (ambient + Lambert diffuse from one directional light + a headlight along the view axis), the
    light being the model's first light (its `dir`) or a default, optional hard shadows.

Geoms rendered: plane (finite half extents, or infinite for size 0; seen from its +z side only,
like `mj_ray`), sphere, capsule, ellipsoid, cylinder, box; meshes, height fields and SDF geoms are
not drawn. Geoms with rgba alpha == 0 or group outside `geom_groups` (default 0, 1, 2) are skipped.
A plane whose third size (MuJoCo's grid spacing) is > 0 gets a procedural checker of that tile size
(CHECKER_DEPTH darker on odd tiles), so that depth and motion over floors and tables are visible.

Inputs: every entry point (`render`, `render_rgb`, `overflow`) takes either an mjx.Data (kinematics
done: geom_xpos/xmat, cam_xpos/xmat) or a `SceneInputs` (float32 poses of the visible geoms and of
this renderer's cameras only, `Renderer.scene_inputs(data)`; about 3 KB for the LIBERO scene), e.g.
poses stored by a rollout to re-render later. A Data is converted to SceneInputs first, so both give
bit-identical images.

How it is fast: everything is done in the camera frame, with per-pixel ray directions (x, y, -1)
so the ray parameter IS the depth, and in image layout viewed as [H/tile, tile, W/tile, tile]
(no transposes). The running nearest hit is ONE int32 per pixel (float bits of the depth with the
geom index in the low bits), so the whole test chain is one fused loop and memory stays
O(pixels). Shading then gathers the winning geom's frame per pixel (analytic normals).

Culling, EXACT by construction: planes and geoms whose bounding radius exceeds `always_radius` are
tested on every pixel. Every other geom is tested against every tile's frustum (the cone of the
rays through the tile's pixel centres) with its exact support function against the cone's 4 side
planes and the camera plane: a geom is skipped for a tile only when it lies entirely outside one
of those half-spaces, so no ray of the tile can hit it (a float-error margin is added; geoms
straddling, enclosing or behind the camera go through the same test). Per camera, geom class
(sphere, capsule, ellipsoid, cylinder, box) and tile, ALL overlapping geoms are then ray-tested,
from static-shape candidate lists whose capacity comes in levels:
``capacity[camera][class] = ((ntiles, K0), (P1, K1), (P2, K2))``: every tile has K0 slots, the P1
tiles with the most overlaps in the image have K1 slots and the P2 (< P1) most crowded K2 (> K1);
the extra slots are traced on those tiles only and merged back, so a few crowded tiles do not make
every tile pay. A tile that overlaps more geoms of a class than it has slots is an OVERFLOW, never
a silent drop: `overflow(data)` and `render(..., with_overflow=True)` / `render_rgb(...,
with_overflow=True)` return the number of (tile, class) overflows over all cameras (int32[]).
The images are EXACT (the same nearest geom on every pixel as `cull=False`, the brute-force
reference) whenever that count is 0; callers must treat a count > 0 as an error:
`Renderer.check_overflow(count, states)` raises a ValueError naming the camera, the class, the
current capacity and one that fits those states.
Capacity (`max_candidates`): "auto" (default) plans it at construction from per-tile overlap
counts measured on the host (numpy, mj_kinematics) on `calibration_data` (states the owner of the
scene passes: reset states and a rollout or two) or, without it, on qpos0, the keyframes and
`calibration_samples` random joint configurations; with a margin (`calibration_margin`; geoms
rigidly attached to a camera's body are counted without) and a safety level: the `safety_tiles`
most crowded tiles of each image get room for every geom of the class (so no single tile can
overflow; only more crowded tiles than that can). An int (K slots on every tile) or a per-class
mapping {"capsule": 8 or ((ntiles, 4), (32, 12)), "wrist:box": ..., ...} sets it by hand;
`Renderer.capacity` shows the plan, `Renderer.tile_counts(states)` the per-tile counts.
Shadows (`shadows=True`) cast one shadow ray per pixel against every visible geom (brute force,
several times the cost of the primary pass).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

__all__ = ["Renderer", "SceneInputs"]

_INF = jnp.inf
_EPS = 1e-9

_PLANE = int(mujoco.mjtGeom.mjGEOM_PLANE)
CHECKER_DEPTH = 0.12   # planes with a grid spacing (size[2] > 0) are drawn as a checker this dark
_SPHERE = int(mujoco.mjtGeom.mjGEOM_SPHERE)
_CAPSULE = int(mujoco.mjtGeom.mjGEOM_CAPSULE)
_ELLIPSOID = int(mujoco.mjtGeom.mjGEOM_ELLIPSOID)
_CYLINDER = int(mujoco.mjtGeom.mjGEOM_CYLINDER)
_BOX = int(mujoco.mjtGeom.mjGEOM_BOX)
_CLASSES = (_SPHERE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX, _PLANE)
_CLASS_NAMES = {_SPHERE: "sphere", _CAPSULE: "capsule", _ELLIPSOID: "ellipsoid",
                _CYLINDER: "cylinder", _BOX: "box", _PLANE: "plane"}
_CLASS_IDS = {v: k for k, v in _CLASS_NAMES.items()}
# Capacity planning cost model (measured on XLA:CPU, 128x128, B=64), in units of one sphere test
# on one tile: a ray test per class; crowded-tile levels cost, per tile of the image, a merge once
# per camera (about 3 capsule slots on every tile) and a little per level, plus their tiles' tests
# (gathered tiles test at about 1.5x the cost) and a gather/merge cost per tile.
_TEST_COST = {_SPHERE: 1.0, _CAPSULE: 2.0, _ELLIPSOID: 1.5, _CYLINDER: 2.0, _BOX: 1.5}
_MERGE_COST = 6.0
_LEVEL_FIXED_COST = 2.0
_LEVEL_TILE_COST = 2.0
_UNROLL_SLOTS = 8           # crowded-tile levels with more extra slots loop over them instead


@struct.dataclass
class SceneInputs:
  """What an image depends on besides the model: poses of the renderer's visible geoms (in
  `Renderer.geom_ids` order) and of its cameras (in `Renderer.cameras` order). Unbatched shapes
  below; a batch adds leading axes (vmap over them)."""
  geom_xpos: jax.Array   # f32[G, 3]
  geom_xmat: jax.Array   # f32[G, 9]
  cam_xpos: jax.Array    # f32[C, 3]
  cam_xmat: jax.Array    # f32[C, 9]


# ----------------------------------------------------------------------------------------------
# Ray-primitive intersections in the geom's local frame. o, d: tuples of 3 arrays (broadcastable);
# dd: d.d if known (rotations keep it); s: tuple of size components. Return t (inf on a miss).
# ----------------------------------------------------------------------------------------------

def _quad_near(a, b, c):
  """Smallest positive root-ish of a t^2 + 2 b t + c = 0 (the entry point), inf when none."""
  disc = b * b - a * c
  t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / a
  return jnp.where((disc >= 0.0) & (t > 0.0), t, _INF)


def _hit_sphere(o, d, dd, s):
  r = s[0]
  b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
  c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - r * r
  return _quad_near(dd, b, c)


def _hit_ellipsoid(o, d, dd, s):
  del dd
  o = (o[0] / s[0], o[1] / s[1], o[2] / s[2])
  d = (d[0] / s[0], d[1] / s[1], d[2] / s[2])
  a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
  return _hit_sphere(o, d, a, (1.0,))


def _side(o, d, r):
  """Entry into the infinite cylinder x^2 + y^2 = r^2: (t, a, b, c, disc)."""
  a = d[0] * d[0] + d[1] * d[1]
  b = o[0] * d[0] + o[1] * d[1]
  c = o[0] * o[0] + o[1] * o[1] - r * r
  disc = b * b - a * c
  t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / jnp.maximum(a, _EPS)
  return t, a, b, c, disc


def _hit_capsule(o, d, dd, s):
  r, h = s[0], s[1]
  t_side, a, b, c, disc = _side(o, d, r)
  # The first capsule point along the ray lies on the sphere centred on the axis at the clamped
  # height of the infinite-cylinder entry (the sphere at the entry height touches the ray there).
  z_side = o[2] + t_side * d[2]
  z0 = jnp.where(a > _EPS, jnp.clip(z_side, -h, h), jnp.where(o[2] >= 0.0, h, -h))
  oz = o[2] - z0
  bs = b + oz * d[2]
  cs = c + oz * oz
  t = _quad_near(dd, bs, cs)
  return jnp.where(disc >= 0.0, t, _INF)


def _hit_cylinder(o, d, dd, s):
  del dd
  r, h = s[0], s[1]
  t_side, a, b, c, disc = _side(o, d, r)
  z_side = o[2] + t_side * d[2]
  side_ok = (disc >= 0.0) & (a > _EPS) & (t_side > 0.0) & (jnp.abs(z_side) <= h)
  # the cap facing the ray origin (from outside only that one can be the entry)
  z0 = jnp.where(o[2] >= 0.0, h, -h)
  dz = jnp.where(jnp.abs(d[2]) < _EPS, _EPS, d[2])
  t_cap = (z0 - o[2]) / dz
  xc = o[0] + t_cap * d[0]
  yc = o[1] + t_cap * d[1]
  cap_ok = (t_cap > 0.0) & (xc * xc + yc * yc <= r * r) & (jnp.abs(o[2]) >= h)
  return jnp.minimum(jnp.where(side_ok, t_side, _INF), jnp.where(cap_ok, t_cap, _INF))


def _hit_box(o, d, dd, s):
  del dd
  tmin = jnp.zeros(())
  tmax = jnp.full((), _INF)
  for i in range(3):
    di = jnp.where(jnp.abs(d[i]) < _EPS, _EPS, d[i])
    inv = 1.0 / di
    t1 = (-s[i] - o[i]) * inv
    t2 = (s[i] - o[i]) * inv
    tmin = jnp.maximum(tmin, jnp.minimum(t1, t2))
    tmax = jnp.minimum(tmax, jnp.maximum(t1, t2))
  return jnp.where((tmax >= tmin) & (tmin > 0.0), tmin, _INF)


def _hit_plane(o, d, dd, s):
  del dd
  dz = jnp.where(d[2] < -_EPS, d[2], -_EPS)
  t = -o[2] / dz
  x = o[0] + t * d[0]
  y = o[1] + t * d[1]
  inside = ((s[0] <= 0.0) | (jnp.abs(x) <= s[0])) & ((s[1] <= 0.0) | (jnp.abs(y) <= s[1]))
  ok = (o[2] > 0.0) & (d[2] < -_EPS) & inside
  return jnp.where(ok, t, _INF)


_HIT = {_SPHERE: _hit_sphere, _CAPSULE: _hit_capsule, _ELLIPSOID: _hit_ellipsoid,
        _CYLINDER: _hit_cylinder, _BOX: _hit_box, _PLANE: _hit_plane}


def _local_normal(gtype, p, s, present=_CLASSES):
  """Outward normal (unnormalised) at local point p of a geom of (per-pixel) type gtype.

  Only the static set of geom classes `present` in the scene is evaluated."""
  x, y, z = p
  zero = jnp.zeros_like(x)
  cases = []
  if _SPHERE in present or _ELLIPSOID in present:
    cases.append(((gtype == _SPHERE) | (gtype == _ELLIPSOID),
                  (x / (s[0] * s[0]), y / (s[1] * s[1]), z / (s[2] * s[2]))))
  if _CAPSULE in present:
    cases.append((gtype == _CAPSULE, (x, y, z - jnp.clip(z, -s[1], s[1]))))
  if _CYLINDER in present:
    # side or cap, whichever surface is nearer
    cap = jnp.abs(jnp.abs(z) - s[1]) < jnp.abs(jnp.sqrt(x * x + y * y) - s[0])
    cases.append((gtype == _CYLINDER, (jnp.where(cap, zero, x), jnp.where(cap, zero, y),
                                       jnp.where(cap, z, zero))))
  if _BOX in present:
    # axis of the largest relative coordinate
    ax, ay, az = jnp.abs(x) / s[0], jnp.abs(y) / s[1], jnp.abs(z) / s[2]
    bx = (ax >= ay) & (ax >= az)
    by = (~bx) & (ay >= az)
    bz = (~bx) & (~by)
    cases.append((gtype == _BOX, (jnp.where(bx, x, zero), jnp.where(by, y, zero),
                                  jnp.where(bz, z, zero))))
  n = (zero, zero, jnp.ones_like(x))                                   # plane (and fallback)
  for cond, v in cases:
    n = tuple(jnp.where(cond, v[i], n[i]) for i in range(3))
  return n


def _bound_radius(gtype: int, size: np.ndarray) -> float:
  if gtype == _SPHERE:
    return float(size[0])
  if gtype == _CAPSULE:
    return float(size[0] + size[1])
  if gtype == _ELLIPSOID:
    return float(np.max(size[:3]))
  if gtype == _CYLINDER:
    return float(np.hypot(size[0], size[1]))
  if gtype == _BOX:
    return float(np.linalg.norm(size[:3]))
  return float("inf")


# ----------------------------------------------------------------------------------------------
# Conservative geom-vs-tile-frustum tests (written for numpy and jax.numpy alike: `xp`).
# ----------------------------------------------------------------------------------------------

def _support(xp, cls, p, s):
  """max over the geom's points q of n.(q - centre), for a unit n with p[i] = n . axis_i.

  p: 3 arrays [..., n]; s: the geom's raw size columns (3 arrays [n] or [..., n])."""
  if cls == _SPHERE:
    return s[0] + 0.0 * p[0]
  if cls == _CAPSULE:
    return s[0] + s[1] * xp.abs(p[2])
  if cls == _ELLIPSOID:
    return xp.sqrt((s[0] * p[0]) ** 2 + (s[1] * p[1]) ** 2 + (s[2] * p[2]) ** 2)
  if cls == _CYLINDER:
    return s[0] * xp.sqrt(p[0] * p[0] + p[1] * p[1]) + s[1] * xp.abs(p[2])
  if cls == _BOX:
    return s[0] * xp.abs(p[0]) + s[1] * xp.abs(p[1]) + s[2] * xp.abs(p[2])
  raise ValueError(cls)


def _float_tol(xp, cc, rb, rmin):
  """Per geom slack [..., n] for the half-space tests: several times the float32 error of the
  ray tests (relative ~1e-6, and ~eps |o|^2 / r for the discriminant of a grazing quadratic)."""
  dist = xp.abs(cc[..., 0]) + xp.abs(cc[..., 1]) + xp.abs(cc[..., 2]) + rb
  return 1e-5 * dist + 3e-7 * dist * dist / rmin + 1e-6


def _side_ok(xp, cls, cc, ax, s, tol, lo, hi, comp):
  """bool[..., T, n]: the geom reaches both side half-spaces of T tile columns (comp 0) or rows
  (comp 1). The rays of a tile column have comp/(-z) in [lo, hi]; the cone they span lies in
  {p: p_comp + lo p_z >= 0} and {p: -(p_comp + hi p_z) >= 0} (z < 0 in front of the camera).
  cc: [..., n, 3] geom centres in the camera frame; ax: [..., n, 3, 3], ax[.., g, i] = axis i of
  geom g in the camera frame."""
  def half(b, sign):
    inv = (1.0 / xp.sqrt(1.0 + b * b))[:, None]                      # [T, 1]
    dist = sign * (cc[..., None, :, comp] + b[:, None] * cc[..., None, :, 2]) * inv
    p = [(ax[..., None, :, i, comp] + b[:, None] * ax[..., None, :, i, 2]) * inv for i in range(3)]
    return dist + _support(xp, cls, p, s) + tol[..., None, :] >= 0.0
  return half(lo, 1.0) & half(hi, -1.0)


def _front_ok(xp, cls, cc, ax, s, tol):
  """bool[..., n]: some point of the geom lies in front of the camera (z < 0)."""
  p = [-ax[..., i, 2] for i in range(3)]
  return -cc[..., 2] + _support(xp, cls, p, s) + tol > 0.0


def _tile_overlap(xp, cls, cc, ax, s, rb, rmin, grid):
  """(rowok [..., nty, n], colok [..., ntx, n]): tile (ty, tx) may see geom g only if
  rowok[ty, g] & colok[tx, g] (the front test is folded into colok)."""
  tol = _float_tol(xp, cc, rb, rmin)
  colok = _side_ok(xp, cls, cc, ax, s, tol, grid["xcol0"], grid["xcol1"], 0)
  colok = colok & _front_ok(xp, cls, cc, ax, s, tol)[..., None, :]
  rowok = _side_ok(xp, cls, cc, ax, s, tol, grid["yrow0"], grid["yrow1"], 1)
  return rowok, colok


def _plan_levels(need: np.ndarray, n: int, ntiles: int, cls: int, margin: float,
                 safety_tiles: int = 0, merge_paid: bool = False):
  """Cheapest capacity ((ntiles, K0),) or ((ntiles, K0), (P, K1)) covering `need` (int [S, ntiles]:
  the slots each tile needs in each calibration state, slot margin included), with a margin on the
  number of crowded tiles P too. With safety_tiles > 0, K1 = n (all geoms of the class) on at
  least that many tiles, so a few tiles more crowded than any calibration state still fit. One
  crowded-tile level at most: more levels, each for fewer tiles, fit the calibration states
  tighter but are fragile (states unlike them overflow). Cost model: ray tests per tile, and for
  the crowded-tile level a fixed cost (the camera's merge too, unless another class already pays
  it: merge_paid) and a cost per tile."""
  kmax = int(min(n, max(2, int(need.max(initial=0)))))
  top = n if safety_tiles > 0 else kmax
  most = [int((need >= k).sum(-1).max(initial=0)) for k in range(kmax + 2)]

  def tiles_over(k):                       # tiles that may need more than k slots
    if k >= n:
      return 0
    g = most[k + 1] if k + 1 < len(most) else 0
    p = 0 if g == 0 else int(math.ceil(g * (1.0 + 2.0 * margin))) + 4
    return min(ntiles, max(p, safety_tiles))

  w = _TEST_COST.get(cls, 1.0)
  best = None
  for k0 in range(1, top + 1):
    cost = w * ntiles * k0 + (0.5 * ntiles if k0 < n else 0.0)      # tests, candidate selection
    p = tiles_over(k0)
    if p == 0:
      levels = ((ntiles, k0),)
    elif p >= ntiles:                      # not cheaper than more slots everywhere
      continue
    else:
      levels = ((ntiles, k0), (p, top))
      cost += ((_LEVEL_FIXED_COST + (0.0 if merge_paid else _MERGE_COST)) * ntiles
               + p * (1.5 * w * (top - k0) + _LEVEL_TILE_COST))
    if best is None or cost < best[0]:
      best = (cost, levels)
  return best[1]


def _check_levels(levels, n: int, ntiles: int, what: str):
  """Validates a capacity: tiles non-increasing, slots increasing (capped at the class size n)."""
  try:
    levels = [(int(p), int(k)) for p, k in levels]
  except (TypeError, ValueError):
    raise ValueError(f"{what}: capacity must be an int or ((tiles, slots), ...), got {levels!r}")
  if not levels:
    raise ValueError(f"{what}: empty capacity levels")
  levels[0] = (ntiles, levels[0][1])
  out = []
  for p, k in levels:
    if k < 1 or p < 1 or p > ntiles:
      raise ValueError(f"{what}: bad capacity level {(p, k)} (tiles in 1..{ntiles}, slots >= 1)")
    if out and (p > out[-1][0] or k <= out[-1][1]):
      raise ValueError(f"{what}: capacity levels need fewer tiles and more slots each: {levels}")
    if out and out[-1][1] >= n:
      break
    out.append((p, min(k, n)))
  return tuple(out)


def _host_overflow(cnt: np.ndarray, levels) -> np.ndarray:
  """int[S]: tile overflows per state (numpy twin of the in-jit count): the P_l most crowded
  tiles get K_l slots, the others K0."""
  cap = np.full(cnt.shape, levels[0][1])
  order = np.argsort(-cnt, axis=-1, kind="stable")
  for p, k in levels[1:]:
    np.put_along_axis(cap, order[:, :p], k, axis=-1)
  return (cnt > cap).sum(-1)


class Renderer:
  """Ray-casts MJX states for a fixed set of cameras; `render`/`render_rgb` are per environment.

  Args (beyond model, cameras, image size):
    shadows: hard shadows (brute force shadow rays).
    tile: culling tile size in pixels.
    max_candidates: per-tile candidate capacity (see the module docstring): "auto" (planned from
      calibration states), an int (slots on every tile, every class), or a mapping from a class
      name ("sphere", "capsule", "ellipsoid", "cylinder", "box"), optionally prefixed by a camera
      name ("wrist:capsule"), to an int or to levels ((ntiles, K0), (P1, K1), ...); classes the
      mapping leaves out are planned as for "auto".
    calibration_data: states to plan "auto" capacities on: an mujoco.MjData, an mjx.Data or
      SceneInputs (optionally batched), a qpos array [nq] or [N, nq], or a list of those. Default:
      qpos0, the model's keyframes and `calibration_samples` random joint configurations.
    calibration_margin: relative safety margin on the measured per-tile counts (geoms rigidly
      attached to the camera's body excepted) and on the number of crowded tiles.
    safety_tiles: "auto" plans give this many tiles (the most crowded in each image) room for
      every geom of the class, for rare states more crowded than any calibration state (default
      ntiles // 64, at least 2; 0: none).
    always_radius: geoms with a larger bounding radius are tested on every pixel.
    geom_groups: geom groups drawn.
    cull: False = brute force reference (every geom on every pixel).
    far: depth of background pixels; background: RGB of background pixels.

  Attributes: `capacity` {camera: {class: levels}}; `geom_ids` (the visible geoms, SceneInputs
  order); `overflow_classes` (columns of `overflow(..., per_class=True)`); `calibration`
  {(camera, class): most geoms seen in one tile} when "auto" planned something, else None.
  """

  def __init__(self, mj_model: mujoco.MjModel, cameras: Sequence[str], height: int, width: int,
               *, shadows: bool = False, tile: int = 8,
               max_candidates: int | str | Mapping[str, Any] = "auto",
               calibration_data: Any = None, calibration_samples: int = 32,
               calibration_margin: float = 0.1, safety_tiles: int | None = None,
               always_radius: float = 0.5, geom_groups: Sequence[int] = (0, 1, 2),
               cull: bool = True, far: float = 1e3,
               background: Sequence[float] = (0.0, 0.0, 0.0)):
    m = mj_model
    self._model = m
    self.height, self.width = int(height), int(width)
    self.shadows = bool(shadows)
    self.cull = bool(cull)
    self.far = float(far)
    self.background = np.asarray(background, np.float32)[:3]
    self.cameras = tuple(cameras)
    self.cam_ids = []
    for name in self.cameras:
      cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, name)
      if cid < 0:
        raise ValueError(f"camera {name!r} not in model")
      self.cam_ids.append(cid)
    self.ngeom = m.ngeom
    gtype = np.asarray(m.geom_type, np.int32)
    self.geom_type = gtype
    raw_size = np.asarray(m.geom_size, np.float64)
    size = np.asarray(m.geom_size, np.float32).copy()
    for g in range(m.ngeom):   # effective sizes (no zeros where a shading formula divides)
      if gtype[g] == _SPHERE:
        size[g, 1:3] = size[g, 0]
      elif gtype[g] in (_CAPSULE, _CYLINDER, _PLANE):
        size[g, 2] = 1.0
    self.geom_size = size
    rgba = np.asarray(m.geom_rgba, np.float32).copy()
    default = np.array([0.5, 0.5, 0.5, 1.0], np.float32)
    for g in range(m.ngeom):
      mat = m.geom_matid[g]
      if mat >= 0 and np.allclose(rgba[g], default):
        rgba[g] = m.mat_rgba[mat]
    self.geom_rgba = rgba
    groups = set(int(x) for x in geom_groups)
    visible = ((rgba[:, 3] > 0) & np.isin(m.geom_group, list(groups))
               & np.isin(gtype, list(_CLASSES)))
    self.visible = visible
    # Everything below works on the VISIBLE geoms only, indexed 0..G-1 (`geom_ids` maps back).
    self.geom_ids = np.nonzero(visible)[0].astype(np.int32)
    vids = self.geom_ids
    self._nvis = len(vids)
    self._idbits = max(1, int(np.ceil(np.log2(self._nvis + 1))))
    self._vtype = gtype[vids]
    self._vsize = size[vids]
    # procedural checker on planes: tile size = the MJCF plane's third size (its grid spacing)
    self._vchecker = np.where(gtype[vids] == _PLANE, raw_size[vids, 2], 0.0).astype(np.float32)
    rbound = np.array([_bound_radius(int(gtype[g]), size[g]) for g in range(m.ngeom)])
    self.rbound = rbound
    # smallest feature size of each geom (float-error slack of the culling tests): the radius of
    # spheres, capsules and cylinders, the smallest semi-axis / half size otherwise
    nsize = np.where(np.isin(gtype, (_SPHERE, _CAPSULE, _CYLINDER)), 1, 3)
    rmin = np.array([max(float(np.min(raw_size[g, :nsize[g]])), 1e-4) for g in range(m.ngeom)])
    # static class lists (visible indices): culled per tile, and tested on every pixel
    self._culled: dict[int, np.ndarray] = {}
    self._always: dict[int, np.ndarray] = {}
    for c in _CLASSES:
      vi = np.nonzero(self._vtype == c)[0].astype(np.int32)
      if not self.cull:
        big = np.ones(len(vi), bool)
      else:
        big = (c == _PLANE) | (rbound[vids[vi]] > always_radius)
      if np.any(big):
        self._always[c] = vi[big]
      if np.any(~big):
        self._culled[c] = vi[~big]
    # geom ids (model numbering) per class, for inspection
    self.culled = {c: vids[v] for c, v in self._culled.items()}
    self.always = {c: vids[v] for c, v in self._always.items()}
    self.overflow_classes = tuple(_CLASS_NAMES[c] for c in self._culled)
    self._cls_cols = {}
    for c, vi in self._culled.items():
      g = vids[vi]
      self._cls_cols[c] = dict(
          s=tuple(raw_size[g, i].astype(np.float32) for i in range(3)),
          rb=rbound[g].astype(np.float32), rmin=rmin[g].astype(np.float32))
    # geoms rigidly attached to each camera (same weld root, fixed camera mode): their per-tile
    # overlaps do not change from state to state, so capacity planning counts them exactly
    weld = np.asarray(m.body_weldid)[np.asarray(m.geom_bodyid)[vids]]
    self._rigid = []
    for cid in self.cam_ids:
      cw = m.body_weldid[m.cam_bodyid[cid]]
      fixed = m.cam_mode[cid] == mujoco.mjtCamLight.mjCAMLIGHT_FIXED
      self._rigid.append((weld == cw) & bool(fixed))
    # light (the model's first light, else a default), camera frame used per env at render time
    if m.nlight > 0:
      ldir = np.asarray(m.light_dir[0], np.float64)
      self.light_diffuse = float(np.mean(m.light_diffuse[0]))
      self.light_ambient = float(np.mean(m.light_ambient[0]))
    else:
      ldir = np.array([0.3, 0.2, -1.0])
      self.light_diffuse = 0.7
      self.light_ambient = 0.0
    self.light_dir = (ldir / max(np.linalg.norm(ldir), 1e-9)).astype(np.float32)
    if m.vis.headlight.active:
      self.head_ambient = float(np.mean(m.vis.headlight.ambient))
      self.head_diffuse = float(np.mean(m.vis.headlight.diffuse))
    else:
      self.head_ambient, self.head_diffuse = 0.0, 0.0
    # per camera pixel grid in tangent space
    h, w = self.height, self.width
    t = int(tile)
    self.tile = t
    self.nty, self.ntx = -(-h // t), -(-w // t)
    self.ntiles = self.nty * self.ntx
    hp, wp = self.nty * t, self.ntx * t
    self._grid = []
    for cid in self.cam_ids:
      tan_y = np.tan(np.deg2rad(m.cam_fovy[cid]) / 2.0)
      tan_x = tan_y * w / h
      cols = (np.arange(wp) + 0.5) / w * 2.0 - 1.0
      rows = 1.0 - (np.arange(hp) + 0.5) / h * 2.0
      xs = np.broadcast_to(cols[None, :] * tan_x, (hp, wp)).astype(np.float32)
      ys = np.broadcast_to(rows[:, None] * tan_y, (hp, wp)).astype(np.float32)
      xpix = xs[0].reshape(self.ntx, t)             # pixel-centre x of each tile column
      ypix = ys[:, 0].reshape(self.nty, t)          # pixel-centre y of each tile row
      self._grid.append(dict(
          xi=xs[:h, :w], yi=ys[:h, :w],
          # padded image viewed as [nty, tile, ntx, tile]: tiles without any transpose
          x=np.ascontiguousarray(xs).reshape(self.nty, t, self.ntx, t),
          y=np.ascontiguousarray(ys).reshape(self.nty, t, self.ntx, t),
          xpix=xpix, ypix=ypix,
          # tile-column x extents and tile-row y extents of the pixel centres
          xcol0=xpix.min(1), xcol1=xpix.max(1), yrow0=ypix.min(1), yrow1=ypix.max(1)))
    if safety_tiles is None:
      safety_tiles = max(2, self.ntiles // 64)
    self.safety_tiles = int(safety_tiles)
    self._plan_capacity(m, max_candidates, calibration_data, calibration_samples,
                        calibration_margin)

  # --------------------------------------------------------------------------------------------
  # Capacity planning (host, construction time).

  def _plan_capacity(self, m, max_candidates, calibration_data, samples, margin):
    spec: dict[str, Any] = {}
    if isinstance(max_candidates, str):
      if max_candidates != "auto":
        raise ValueError(f"max_candidates must be 'auto', an int or a mapping, got {max_candidates!r}")
    elif isinstance(max_candidates, Mapping):
      for k, v in max_candidates.items():
        cam, _, cls = k.rpartition(":")
        if cls not in _CLASS_IDS or (cam and cam not in self.cameras):
          raise ValueError(f"max_candidates key {k!r}: expected [camera:]class, class one of "
                           f"{sorted(_CLASS_IDS)}")
        spec[k] = v
    else:
      spec = {name: int(max_candidates) for name in _CLASS_IDS}
    self._levels: list[dict[int, tuple]] = []
    todo = []
    for ci, cam in enumerate(self.cameras):
      lv = {}
      for c, vi in self._culled.items():
        name = _CLASS_NAMES[c]
        v = spec.get(f"{cam}:{name}", spec.get(name))
        what = f"max_candidates[{cam}:{name}]"
        if v is None:
          todo.append((ci, c))
        elif isinstance(v, (int, np.integer)):
          lv[c] = _check_levels([(self.ntiles, int(v))], len(vi), self.ntiles, what)
        else:
          lv[c] = _check_levels(v, len(vi), self.ntiles, what)
      self._levels.append(lv)
    self.calibration = None
    if todo:
      if calibration_data is None:
        scenes = self._default_calibration(m, samples)
      else:
        scenes = self._host_scenes(calibration_data, m)
      counts = self.tile_counts(scenes, rigid_split=True)
      self.calibration = {}
      needs = {}
      for ci, c in todo:
        total, rigid = counts[self.cameras[ci]][_CLASS_NAMES[c]]
        other = total - rigid
        needs[ci, c] = total + np.where(other > 0, np.maximum(1, np.ceil(other * margin)),
                                        0).astype(np.int64)
        self.calibration[(self.cameras[ci], _CLASS_NAMES[c])] = int(total.max(initial=0))
      # plan each class; where some class of a camera uses crowded-tile levels, that camera's
      # merge is paid, and the other classes are planned again knowing it
      for ci in range(len(self.cameras)):
        mine = [c for cj, c in todo if cj == ci]
        paid = any(len(self._levels[ci][c]) > 1 for c in self._levels[ci])
        for _ in range(2):
          for c in mine:
            self._levels[ci][c] = _plan_levels(needs[ci, c], len(self._culled[c]), self.ntiles,
                                               c, margin, self.safety_tiles, merge_paid=paid)
          if paid or not any(len(self._levels[ci][c]) > 1 for c in mine):
            break
          paid = True
    self.capacity = {cam: {_CLASS_NAMES[c]: self._levels[ci][c] for c in self._culled}
                     for ci, cam in enumerate(self.cameras)}

  def _default_calibration(self, m, samples):
    """qpos0, the keyframes and `samples` random joint configurations (hinge and slide joints
    uniform in their range, free and ball joints at qpos0)."""
    qs = [np.asarray(m.qpos0, np.float64)]
    qs += [np.asarray(m.key_qpos[k], np.float64) for k in range(m.nkey)]
    rng = np.random.default_rng(0)
    for _ in range(int(samples)):
      q = np.asarray(m.qpos0, np.float64).copy()
      for j in range(m.njnt):
        adr = m.jnt_qposadr[j]
        if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE:
          lo, hi = m.jnt_range[j] if m.jnt_limited[j] else (-np.pi, np.pi)
          q[adr] = rng.uniform(lo, hi)
        elif m.jnt_type[j] == mujoco.mjtJoint.mjJNT_SLIDE and m.jnt_limited[j]:
          q[adr] = rng.uniform(*m.jnt_range[j])
      qs.append(q)
    return self._host_scenes(np.stack(qs), m)

  def _host_scenes(self, states, m=None) -> dict[str, np.ndarray]:
    """Any supported state container(s) -> numpy float64 SceneInputs fields, batch-flattened."""
    parts = []

    def add(x):
      if isinstance(x, (list, tuple)):
        for y in x:
          add(y)
        return
      if isinstance(x, SceneInputs):
        f = {k: np.asarray(getattr(x, k), np.float64) for k in
             ("geom_xpos", "geom_xmat", "cam_xpos", "cam_xmat")}
      elif isinstance(x, mujoco.MjData) or hasattr(x, "geom_xpos"):
        gx = np.asarray(x.geom_xpos, np.float64)
        gm = np.asarray(x.geom_xmat, np.float64)
        cx = np.asarray(x.cam_xpos, np.float64)
        cm = np.asarray(x.cam_xmat, np.float64)
        lead = gx.shape[:-2]
        f = dict(geom_xpos=gx[..., self.geom_ids, :],
                 geom_xmat=gm.reshape(lead + (-1, 9))[..., self.geom_ids, :],
                 cam_xpos=cx[..., self.cam_ids, :],
                 cam_xmat=cm.reshape(lead + (-1, 9))[..., self.cam_ids, :])
      else:
        q = np.asarray(x, np.float64)
        if m is None:
          raise ValueError("qpos calibration states need the model")
        d = mujoco.MjData(m)
        for row in q.reshape(-1, m.nq):
          d.qpos[:] = row
          mujoco.mj_kinematics(m, d)
          mujoco.mj_camlight(m, d)
          add(d)
        return
      parts.append({k: v.reshape((-1,) + v.shape[-2:]) for k, v in f.items()})

    add(states)
    if not parts:
      raise ValueError("no calibration states")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def tile_counts(self, states, *, rigid_split: bool = False) -> dict:
    """Host side (numpy): per camera and culled class, int[S, ntiles], the number of geoms each
    tile's candidate list must hold in each of the S states (MjData, mjx.Data, SceneInputs, qpos,
    batched or in a list). rigid_split: (total, rigidly attached to the camera) pairs instead."""
    sc = states if isinstance(states, dict) else self._host_scenes(states, self._model)
    gpos = sc["geom_xpos"]
    gmat = sc["geom_xmat"].reshape(gpos.shape[:-1] + (3, 3))
    out = {}
    for ci, cam in enumerate(self.cameras):
      cpos = sc["cam_xpos"][:, ci]
      cr = sc["cam_xmat"][:, ci].reshape(-1, 3, 3)
      grid = {k: self._grid[ci][k].astype(np.float64) for k in ("xcol0", "xcol1", "yrow0", "yrow1")}
      out[cam] = {}
      for c, vi in self._culled.items():
        cc = np.einsum("sgj,sjk->sgk", gpos[:, vi] - cpos[:, None], cr)
        ax = np.einsum("sgji,sjk->sgik", gmat[:, vi], cr)
        cols = self._cls_cols[c]
        rowok, colok = _tile_overlap(np, c, cc, ax, [x.astype(np.float64) for x in cols["s"]],
                                     cols["rb"], cols["rmin"], grid)
        ov = rowok[:, :, None, :] & colok[:, None, :, :]          # [S, nty, ntx, n]
        ov = ov.reshape(ov.shape[0], self.ntiles, -1)
        total = ov.sum(-1)
        if rigid_split:
          out[cam][_CLASS_NAMES[c]] = (total, (ov & self._rigid[ci][vi]).sum(-1))
        else:
          out[cam][_CLASS_NAMES[c]] = total
    return out

  def check_overflow(self, overflow, states=None, *, per_class: bool = False) -> None:
    """Host side: raises ValueError if `overflow` (the count from `overflow()` or
    `render_rgb(..., with_overflow=True)`, any batch shape; with per_class=True the
    `overflow(..., per_class=True)` array [..., ncam, nclass]) is > 0 anywhere, i.e. some image
    may miss geoms. The message names the overflowing camera/class (per_class) and, with `states`
    (those the count came from), the per-tile counts measured there and a capacity that fits."""
    ov = np.asarray(overflow)
    if not np.any(ov > 0):
      return
    msg = [f"Renderer culling capacity exceeded: {int(ov.sum())} (tile, geom class) overflow(s) "
           "(a tile overlapping more geoms of one class than its candidate slots); the affected "
           "images may miss geoms and must not be used."]
    if per_class:
      per = ov.reshape(-1, *ov.shape[-2:]).sum(0)
      where = [f"{cam}/{cls}: {int(per[i, j])}" for i, cam in enumerate(self.cameras)
               for j, cls in enumerate(self.overflow_classes) if per[i, j] > 0]
      msg.append("Overflowing camera/class (tile count): " + ", ".join(where) + ".")
    suggest = {}
    if states is not None:
      counts = self.tile_counts(states)
      for ci, cam in enumerate(self.cameras):
        for c in self._culled:
          name = _CLASS_NAMES[c]
          cnt = counts[cam][name]
          levels = self._levels[ci][c]
          n_over = int(_host_overflow(cnt, levels).sum())
          if n_over:
            crowded = ", ".join(f"{int((cnt > k).sum(-1).max())} tiles > {k}" for _, k in levels)
            msg.append(f"{cam}/{name}: {n_over} overflow(s) in these states with capacity "
                       f"{levels} ((tiles, slots) levels): up to {int(cnt.max())} geoms in one "
                       f"tile; {crowded}.")
            need = cnt + np.where(cnt > 0, np.maximum(1, np.ceil(cnt * 0.25)), 0).astype(np.int64)
            suggest[f"{cam}:{name}"] = _plan_levels(need, len(self._culled[c]), self.ntiles, c,
                                                    0.25, self.safety_tiles)
    if suggest:
      msg.append(f"A capacity that fits them: max_candidates={suggest}.")
    msg.append("Fix: pass calibration_data=<states like these> (e.g. reset states and a rollout) "
               "to Renderer so max_candidates='auto' plans for them, or raise max_candidates for "
               f"that class (e.g. {{'camera:class': ((ntiles, K0), (tiles, K1))}}); current "
               f"capacity: {self.capacity}.")
    raise ValueError(" ".join(msg))

  # --------------------------------------------------------------------------------------------
  # In-jit entry points.

  def scene_inputs(self, data) -> SceneInputs:
    """The float32 poses an image depends on (visible geoms, this renderer's cameras); a
    SceneInputs is returned as is. Works on batched Data too (leading axes kept)."""
    if isinstance(data, SceneInputs):
      return data
    gx = jnp.asarray(data.geom_xpos)
    lead = gx.shape[:-2]
    gm = jnp.asarray(data.geom_xmat).reshape(lead + (-1, 9))
    cm = jnp.asarray(data.cam_xmat).reshape(lead + (-1, 9))
    gids, cids = np.asarray(self.geom_ids), np.asarray(self.cam_ids, np.int32)
    return SceneInputs(
        geom_xpos=jnp.take(gx, gids, axis=-2).astype(jnp.float32),
        geom_xmat=jnp.take(gm, gids, axis=-2).astype(jnp.float32),
        cam_xpos=jnp.take(jnp.asarray(data.cam_xpos), cids, axis=-2).astype(jnp.float32),
        cam_xmat=jnp.take(cm, cids, axis=-2).astype(jnp.float32))

  def render(self, data, *, rgba: jax.Array | None = None, light_dir: jax.Array | None = None,
             cam_offset: jax.Array | None = None, with_overflow: bool = False):
    """One environment: {camera: {"rgb": u8[H,W,3], "depth": f32[H,W], "segmentation": i32[H,W]}}
    (and the overflow count int32[] with `with_overflow`: images are exact iff it is 0).

    data: mjx.Data or SceneInputs.
    rgba: f32[ngeom, 4] colour override (alpha is ignored; visibility is fixed at construction).
    light_dir: f32[3] world direction the light travels along (like MJCF light `dir`).
    cam_offset: f32[ncam, 3] world-frame offset added to each camera position.
    """
    sc = self.scene_inputs(data)
    outs = [self._trace_camera(sc, i, rgba, light_dir, cam_offset, True)
            for i in range(len(self.cameras))]
    images = {name: o for name, (o, _) in zip(self.cameras, outs)}
    if with_overflow:
      return images, _total([ov for _, ov in outs])
    return images

  def render_rgb(self, data, *, rgba: jax.Array | None = None, light_dir: jax.Array | None = None,
                 cam_offset: jax.Array | None = None, with_overflow: bool = False):
    """One environment: {camera: u8[H,W,3]} (the hot-loop entry point); with `with_overflow`,
    ({camera: u8[H,W,3]}, int32[] overflow count) at no extra cost: treat a count > 0 as an error
    (`check_overflow`)."""
    sc = self.scene_inputs(data)
    outs = [self._trace_camera(sc, i, rgba, light_dir, cam_offset, False)
            for i in range(len(self.cameras))]
    images = {name: o["rgb"] for name, (o, _) in zip(self.cameras, outs)}
    if with_overflow:
      return images, _total([ov for _, ov in outs])
    return images

  def overflow(self, data, *, cam_offset: jax.Array | None = None,
               per_class: bool = False) -> jax.Array:
    """One environment: the number of (tile, class) candidate-list overflows over all cameras,
    int32[] (0 = the images are exact), or per camera and class int32[ncam, len(overflow_classes)].
    Cheap: the per-tile overlap counts only, no rays."""
    sc = self.scene_inputs(data)
    rows = []
    for ci in range(len(self.cameras)):
      cam_pos, cam_r = self._cam_pose(sc, ci, cam_offset)
      _, mrot, c_cam = self._geom_frames(sc, cam_pos, cam_r)
      rows.append(jnp.stack([self._cull_class(ci, c, c_cam, mrot, select=False)["overflow"]
                             for c in self._culled]) if self._culled
                  else jnp.zeros((0,), jnp.int32))
    per = jnp.stack(rows)
    return per if per_class else jnp.sum(per, dtype=jnp.int32)

  # --------------------------------------------------------------------------------------------
  def _cam_pose(self, sc, ci, cam_offset):
    cam_pos = sc.cam_xpos[ci]
    if cam_offset is not None:
      cam_pos = cam_pos + cam_offset[ci]
    return cam_pos, sc.cam_xmat[ci].reshape(3, 3)

  def _geom_frames(self, sc, cam_pos, cam_r):
    """Per geom: origin o_l (camera centre in the geom frame), M = R_g^T R_cam (row i: the geom's
    axis i in the camera frame) and the geom centre in the camera frame."""
    gpos = sc.geom_xpos
    gmat = sc.geom_xmat.reshape(-1, 3, 3)
    o_l = jnp.einsum("gji,gj->gi", gmat, cam_pos[None, :] - gpos)
    mrot = jnp.einsum("gji,jk->gik", gmat, cam_r)
    c_cam = (gpos - cam_pos[None, :]) @ cam_r
    return o_l, mrot, c_cam

  def _cull_class(self, ci, c, c_cam, mrot, select=True):
    """Per-tile candidates of class c: overlap test, counts, capacity levels, overflow."""
    vi = self._culled[c]
    n = len(vi)
    levels = self._levels[ci][c]
    cols = self._cls_cols[c]
    grid = {k: jnp.asarray(self._grid[ci][k]) for k in ("xcol0", "xcol1", "yrow0", "yrow1")}
    rowok, colok = _tile_overlap(jnp, c, c_cam[vi], mrot[vi], [jnp.asarray(x) for x in cols["s"]],
                                 jnp.asarray(cols["rb"]), jnp.asarray(cols["rmin"]), grid)
    overlap = rowok[:, None, :] & colok[None, :, :]                   # [nty, ntx, n]
    out = {"overlap": overlap}
    k0 = levels[0][1]
    if k0 >= n:                                                       # every geom fits: no lists
      out["overflow"] = jnp.zeros((), jnp.int32)
      return out
    count = (rowok.astype(jnp.float32) @ colok.astype(jnp.float32).T).astype(jnp.int32)
    count = count.reshape(self.ntiles)
    # candidate order: geom order (any fixed order: all of a tile's overlapping geoms are kept)
    skey = jnp.where(overlap, jnp.asarray(n - np.arange(n), jnp.float32), 0.0)
    skey = skey.reshape(self.ntiles, n)
    cap = jnp.full((self.ntiles,), k0, jnp.int32)
    if len(levels) > 1:
      _, hidx = jax.lax.top_k(count.astype(jnp.float32), levels[1][0])   # most crowded first
      out["heavy"] = hidx
      for p, k in levels[1:]:
        cap = cap.at[hidx[:p]].set(k)
      if select:
        val, sel = jax.lax.top_k(skey[hidx], levels[-1][1])
        out["heavy_sel"], out["heavy_valid"] = sel, val > 0.0
    out["overflow"] = jnp.sum(count > cap, dtype=jnp.int32)
    if select:
      val, sel = jax.lax.top_k(skey, k0)                              # [ntiles, k0]
      out["sel"], out["valid"] = sel, val > 0.0
    return out

  def _trace_camera(self, sc, ci, rgba, light_dir, cam_offset, with_seg):
    grid = self._grid[ci]
    cam_pos, cam_r = self._cam_pose(sc, ci, cam_offset)
    o_l, mrot, c_cam = self._geom_frames(sc, cam_pos, cam_r)
    size = jnp.asarray(self._vsize)
    x = jnp.asarray(grid["x"])
    y = jnp.asarray(grid["y"])
    nty, ntx, t = self.nty, self.ntx, self.tile
    dd = x * x + y * y + 1.0
    # Running nearest hit as ONE int32 key per pixel: the bit pattern of a positive float32 orders
    # like the float, so (bits(t) with the low `idbits` replaced by the geom index) min-reduces to
    # the nearest geom (a single dependency chain XLA fuses into one loop). Depth loses `idbits`
    # mantissa bits (relative 2^-(23-idbits)); it is recomputed exactly below.
    idbits = self._idbits
    lowmask = (1 << idbits) - 1
    empty = 0x7FFFFFFF
    key = jnp.full(x.shape, empty, jnp.int32)
    table = jnp.concatenate([o_l, mrot.reshape(-1, 9), size], axis=1)      # [G, 15]

    def test(key, c, xs, ys, dds, gid_b, prm, valid_b):
      # prm: 15 per-candidate params broadcastable against the pixel arrays xs, ys
      o_b = tuple(prm[0:3])
      m_b = prm[3:12]
      s_b = tuple(prm[12:15])
      d = (m_b[0] * xs + m_b[1] * ys - m_b[2],
           m_b[3] * xs + m_b[4] * ys - m_b[5],
           m_b[6] * xs + m_b[7] * ys - m_b[8])
      tt = _HIT[c](o_b, d, dds, s_b)
      if valid_b is not None:
        tt = jnp.where(valid_b, tt, _INF)
      k = (jax.lax.bitcast_convert_type(tt, jnp.int32) & ~lowmask) | gid_b
      return jnp.minimum(key, k)

    # geoms tested on every pixel
    for c, ids in self._always.items():
      for g in ids:
        row = table[int(g)]
        key = test(key, c, x, y, dd, jnp.int32(g), [row[i] for i in range(15)], None)

    # culled classes: every tile tests all the geoms its frustum overlaps (capacity levels)
    overflow = []
    heavy = []                                      # (tile indices [P], keys [P, t, t])
    e = lambda a: a.reshape(nty, 1, ntx, 1)         # per tile -> pixels
    for c, vi in self._culled.items():
      cl = self._cull_class(ci, c, c_cam, mrot)
      overflow.append(cl["overflow"])
      levels = self._levels[ci][c]
      vi_j = jnp.asarray(vi)
      if "sel" not in cl:                           # all geoms of the class, masked per tile
        for j, g in enumerate(vi):
          row = table[int(g)]
          key = test(key, c, x, y, dd, jnp.int32(g), [row[i] for i in range(15)],
                     e(cl["overlap"][:, :, j]))
        continue
      gsel = vi_j[cl["sel"]]                                          # [ntiles, k0]
      cand = table[gsel]                                              # [ntiles, k0, 15]
      for j in range(levels[0][1]):
        key = test(key, c, x, y, dd, e(gsel[:, j]), [e(cand[:, j, i]) for i in range(15)],
                   e(cl["valid"][:, j]))
      # crowded tiles: the extra slots, traced on those tiles only
      for l in range(1, len(levels)):
        p, k = levels[l]
        k_prev = levels[l - 1][1]
        tiles = cl["heavy"][:p]
        ty, tx = tiles // ntx, tiles % ntx
        xh = jnp.asarray(grid["xpix"])[tx][:, None, :]                # [p, 1, t]
        yh = jnp.asarray(grid["ypix"])[ty][:, :, None]                # [p, t, 1]
        ddh = xh * xh + yh * yh + 1.0
        sel = cl["heavy_sel"][:p, k_prev:k]
        valid = cl["heavy_valid"][:p, k_prev:k]
        gsel = vi_j[sel]
        cand = table[gsel]                                            # [p, k - k_prev, 15]
        eh = lambda a, p=p: a.reshape(p, 1, 1)
        kh = jnp.full((p, t, t), empty, jnp.int32)
        if k - k_prev <= _UNROLL_SLOTS:
          for j in range(k - k_prev):
            kh = test(kh, c, xh, yh, ddh, eh(gsel[:, j]), [eh(cand[:, j, i]) for i in range(15)],
                      eh(valid[:, j]))
        else:                    # many slots on few tiles: a loop (compile time), not unrolled
          def slot(kh, xs, c=c, xh=xh, yh=yh, ddh=ddh, eh=eh):
            g, cd, v = xs
            return test(kh, c, xh, yh, ddh, eh(g), [eh(cd[:, i]) for i in range(15)], eh(v)), None
          kh, _ = jax.lax.scan(slot, kh, (gsel.T, cand.transpose(1, 0, 2), valid.T))
        heavy.append((tiles, kh))
    if heavy:
      # merge: one scatter-min of [t, t] windows into the [nty, t, ntx, t] key
      key = jax.lax.optimization_barrier(key)
      tiles = jnp.concatenate([h[0] for h in heavy])
      kh = jnp.concatenate([h[1] for h in heavy])
      key = key.at[tiles // ntx, :, tiles % ntx, :].min(kh)

    # materialise the key: otherwise XLA fuses the whole ray-test chain into every consumer below
    key = jax.lax.optimization_barrier(key)
    # from here on: image layout [H, W] (a reshape and crop, no data movement)
    key = key.reshape(nty * t, ntx * t)[: self.height, : self.width]
    x = jnp.asarray(grid["xi"])
    y = jnp.asarray(grid["yi"])
    dd = x * x + y * y + 1.0
    t_best = jax.lax.bitcast_convert_type(key & ~lowmask, jnp.float32)
    hit = t_best < _INF
    gid = jnp.where(hit, key & lowmask, 0)
    t_hit = jnp.where(hit, t_best, 0.0)
    # shading: local hit point and normal of the winning geom, normal taken to the camera frame
    # (column-wise gathers: much faster on XLA:CPU than gathering rows)
    prm = [jnp.take(table[:, i], gid, mode="clip") for i in range(15)]   # 15 x [H, W]
    o = tuple(prm[0:3])
    mm = (tuple(prm[3:6]), tuple(prm[6:9]), tuple(prm[9:12]))
    s = tuple(prm[12:15])
    d = (mm[0][0] * x + mm[0][1] * y - mm[0][2],
         mm[1][0] * x + mm[1][1] * y - mm[1][2],
         mm[2][0] * x + mm[2][1] * y - mm[2][2])
    p = tuple(o[i] + t_hit * d[i] for i in range(3))
    gtype = jnp.take(jnp.asarray(self._vtype), gid, mode="clip")
    present = set(self._always) | set(self._culled)
    nl = _local_normal(gtype, p, s, present)
    # camera-frame normal n_c = M^T n_l
    nc = tuple(mm[0][i] * nl[0] + mm[1][i] * nl[1] + mm[2][i] * nl[2] for i in range(3))
    inv = jax.lax.rsqrt(jnp.maximum(nc[0] * nc[0] + nc[1] * nc[1] + nc[2] * nc[2], 1e-20))
    # face the camera: the ray direction is (x, y, -1)
    facing = nc[0] * x + nc[1] * y - nc[2]
    inv = jnp.where(facing > 0, -inv, inv)
    nc = tuple(n * inv for n in nc)
    ldir = jnp.asarray(self.light_dir) if light_dir is None else light_dir
    ldir = ldir / jnp.maximum(jnp.linalg.norm(ldir), 1e-9)
    lc = cam_r.T @ (-ldir)                                            # towards the light, cam frame
    lam = jnp.maximum(nc[0] * lc[0] + nc[1] * lc[1] + nc[2] * lc[2], 0.0)
    if self.shadows:
      lam = lam * (1.0 - self._shadowed(o_l, mrot, size, x, y, t_hit, nc, lc, hit))
    head = jnp.maximum(nc[2], 0.0)
    shade = (self.head_ambient + self.light_ambient + self.light_diffuse * lam
             + self.head_diffuse * head)
    colors = jnp.asarray(self.geom_rgba[:, :3]) if rgba is None else jnp.asarray(rgba)[:, :3]
    colors = colors[self.geom_ids]
    col = jnp.stack([jnp.take(colors[:, i], gid, mode="clip") for i in range(3)], -1)
    col = col * shade[..., None]
    if np.any(self._vchecker > 0):
      tile = jnp.take(jnp.asarray(self._vchecker), gid, mode="clip")
      safe = jnp.where(tile > 0, tile, 1.0)
      odd = jnp.mod(jnp.floor(p[0] / safe) + jnp.floor(p[1] / safe), 2.0)
      col = col * jnp.where(tile > 0, 1.0 - CHECKER_DEPTH * odd, 1.0)[..., None]
    col = jnp.where(hit[..., None], col, jnp.asarray(self.background))
    rgb = jnp.clip(col * 255.0 + 0.5, 0.0, 255.0).astype(jnp.uint8)
    out = {"rgb": rgb}
    if with_seg:
      # exact depth: re-intersect the winning geom (the packed key dropped low mantissa bits)
      t_exact = t_best
      for c in present:
        t_exact = jnp.where(gtype == c, _HIT[c](o, d, dd, s), t_exact)
      t_exact = jnp.where(jnp.isfinite(t_exact), t_exact, t_best)
      out["depth"] = jnp.where(hit, t_exact, self.far)
      out["segmentation"] = jnp.where(
          hit, jnp.take(jnp.asarray(self.geom_ids), gid, mode="clip"), -1)
    return out, _total(overflow)

  def _shadowed(self, o_l, mrot, size, x, y, t, nc, lc, hit):
    """1.0 where the shadow ray from the hit point towards the light is blocked (all geoms)."""
    eps = 1e-4
    pc = (x * t + eps * nc[0], y * t + eps * nc[1], -t + eps * nc[2])
    blocked = jnp.zeros(x.shape, bool)
    for g in range(self._nvis):
      c = int(self._vtype[g])
      mm = mrot[g]
      o = tuple(o_l[g, i] + mm[i, 0] * pc[0] + mm[i, 1] * pc[1] + mm[i, 2] * pc[2]
                for i in range(3))
      d = tuple(mm[i, 0] * lc[0] + mm[i, 1] * lc[1] + mm[i, 2] * lc[2] for i in range(3))
      tt = _HIT[c](o, d, 1.0, tuple(size[g, i] for i in range(3)))
      blocked = blocked | (tt < _INF)
    return (blocked & hit).astype(jnp.float32)


def _total(counts) -> jax.Array:
  if not counts:
    return jnp.zeros((), jnp.int32)
  return jnp.sum(jnp.stack(counts), dtype=jnp.int32)
