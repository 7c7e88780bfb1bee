"""Task objects built from MuJoCo primitives MJX's JAX backend collides cheaply (spheres, capsules,
cylinders; no boxes, no meshes).

Every object body has its origin at the bottom centre (as LIBERO's object frames: On compares body
origins) and declares three geom roles the builder turns into explicit contact pairs:
  support  geoms that rest on the table or on another object's surface (small feet: 1 contact each)
  surface  geoms other objects may rest on
  grasp    geoms the gripper's finger pads collide with
Purely visual geoms have contype = conaffinity = 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from envs.tasks.spec import ObjectSpec


@dataclasses.dataclass(frozen=True)
class BuiltObject:
  xml: str                      # <body ...> ... </body> with a freejoint, origin at the bottom centre
  support: tuple[str, ...]
  surface: tuple[str, ...]
  grasp: tuple[str, ...]
  visual: tuple[str, ...]       # visual-only geom names (for colour randomisation)
  rest_height: float            # origin z when resting on a flat surface at z = 0
  params: dict                  # kind-specific facts the expert / predicates use (radius, ...)
  hull: str = ""                # one enclosing primitive the arm's links collide with
  side: str = ""                # a tall object's axis capsule: what it lies on once knocked over


def _f(*xs: float) -> str:
  return " ".join(f"{x:.6g}" for x in xs)


def _rgba(c) -> str:
  return _f(*c)


def bowl(o: ObjectSpec, pos=(0.0, 0.0, 0.0), n_staves: int = 8) -> BuiltObject:
  """A bowl: a ring of N slanted capsule staves (the wall; what the gripper pinches), three sphere
  feet (what it stands on), and a visual base disc and rim. size = (outer radius, height), or
  params radius / height (fitted to LIBERO's mesh)."""
  radius, height = (o.size or (o.param("radius", 0.055), o.param("height", 0.05)))[:2]
  mass = o.mass or 0.15
  n, rs = n_staves, 0.006
  r0, z0 = 0.7 * radius, 0.012           # stave bottom (radius, height): ~18 deg from vertical
  r1, z1 = radius - rs, height - rs      # stave top
  foot_r, foot_rad = 0.006, 0.5 * radius
  name = o.name
  geoms, grasp, support, visual = [], [], [], []
  def stave(g: str, a: float) -> str:
    c, s = math.cos(a), math.sin(a)
    return (f'<geom name="{g}" type="capsule" size="{rs}" '
            f'fromto="{_f(r0 * c, r0 * s, z0, r1 * c, r1 * s, z1)}" rgba="{_rgba(o.rgba)}" '
            f'contype="0" conaffinity="0"/>')

  for k in range(n):
    a = 2 * math.pi * k / n
    g = f"{name}_stave{k}"
    geoms.append(stave(g, a))
    grasp.append(g)
    # visual filler between staves (no collision) so the wall reads as a wall in images
    gv = f"{name}_wallvis{k}"
    geoms.append(stave(gv, a + math.pi / n))
    visual.append(gv)
  for k in range(3):
    a = 2 * math.pi * k / 3 + math.pi / 6
    g = f"{name}_foot{k}"
    geoms.append(f'<geom name="{g}" type="sphere" size="{foot_r}" '
                 f'pos="{_f(foot_rad * math.cos(a), foot_rad * math.sin(a), foot_r)}" '
                 f'rgba="{_rgba(o.rgba)}" contype="0" conaffinity="0"/>')
    support.append(g)
  gb = f"{name}_basevis"
  geoms.append(f'<geom name="{gb}" type="cylinder" size="{_f(r0 + rs, 0.004)}" pos="0 0 {z0 - 0.002:.6g}" '
               f'rgba="{_rgba(o.rgba)}" contype="0" conaffinity="0"/>')
  # inertia of a thin conical shell, roughly: mass at the mean radius and half height
  rm = 0.5 * (r0 + r1)
  izz = mass * rm * rm
  ixx = 0.5 * izz + mass * height * height / 12
  xml = _body(o, pos, geoms, mass, 0.5 * height, (ixx, ixx, izz))
  return BuiltObject(xml, tuple(support), (gb,), tuple(grasp), tuple(visual), 0.0,
                     dict(radius=radius, height=height, n_staves=n, stave_radius=rs, inner_surfaces=(gb,),
                          stave_bottom=(r0, z0), stave_top=(r1, z1)))


def plate(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """A plate: a thin cylinder disc (the surface things rest on) on three sphere feet, with a visual
  rim ring of capsules. size = (radius, thickness)."""
  radius, thick = (o.size or (o.param("radius", 0.09), _plate_thickness(o)))[:2]
  mass = o.mass or 0.3
  foot_r = 0.004
  name = o.name
  zc = 2 * foot_r + 0.5 * thick          # disc centre height above the origin
  geoms = [f'<geom name="{name}_disc" type="cylinder" size="{_f(radius, 0.5 * thick)}" '
           f'pos="0 0 {zc:.6g}" rgba="{_rgba(o.rgba)}" contype="0" conaffinity="0"/>']
  support, visual = [], []
  for k in range(3):
    a = 2 * math.pi * k / 3
    g = f"{name}_foot{k}"
    geoms.append(f'<geom name="{g}" type="sphere" size="{foot_r}" '
                 f'pos="{_f(0.6 * radius * math.cos(a), 0.6 * radius * math.sin(a), foot_r)}" '
                 f'rgba="{_rgba(o.rgba)}" contype="0" conaffinity="0"/>')
    support.append(g)
  n = 12
  for k in range(n):
    a0, a1 = 2 * math.pi * k / n, 2 * math.pi * (k + 1) / n
    g = f"{name}_rimvis{k}"
    geoms.append(f'<geom name="{g}" type="capsule" size="0.004" fromto="'
                 f'{_f(radius * math.cos(a0), radius * math.sin(a0), zc + 0.5 * thick, radius * math.cos(a1), radius * math.sin(a1), zc + 0.5 * thick)}" '
                 f'rgba="{_rgba(o.rgba)}" contype="0" conaffinity="0"/>')
    visual.append(g)
  izz = 0.5 * mass * radius ** 2
  xml = _body(o, pos, geoms, mass, zc, (0.55 * izz, 0.55 * izz, izz))
  return BuiltObject(xml, tuple(support), (f"{name}_disc",), (), tuple(visual), 0.0,
                     dict(radius=radius, thickness=thick, top=zc + 0.5 * thick))


def _plate_thickness(o: ObjectSpec) -> float:
  """The disc's thickness from the fitted overall height (feet 2 x 4 mm below it)."""
  h = o.param("height")
  return 0.008 if h is None else max(0.004, float(h) - 0.008)


# ------------------------------------------------------------------------------------------------
# The rest of LIBERO's object kinds. Shared pieces: a body header with a free joint and inertia,
# sphere feet (support), and geoms that collide only through the builder's explicit pairs.


def geom(name: str, gtype: str, size, rgba, pos=None, fromto=None, quat=None) -> str:
  """One MJCF geom with contype = conaffinity = 0 (collisions come from explicit <pair>s)."""
  attrs = [f'name="{name}"', f'type="{gtype}"', f'size="{_f(*size)}"']
  if fromto is not None:
    attrs.append(f'fromto="{_f(*fromto)}"')
  if pos is not None:
    attrs.append(f'pos="{_f(*pos)}"')
  if quat is not None:
    attrs.append(f'quat="{_f(*quat)}"')
  attrs += [f'rgba="{_rgba(rgba)}"', 'contype="0"', 'conaffinity="0"']
  return "<geom " + " ".join(attrs) + "/>"


HULL_RGBA = (0.5, 0.5, 0.5, 0.0)   # invisible (alpha 0; group 3: a collision geom)
SIDE_LIFT = 0.003                  # gap under an upright tall object's side capsule (m)
HOLLOW = ("bowl", "mug", "plate", "pan", "basket")   # kinds with no solid axis to lie on


def _with_hull(o: ObjectSpec, b: BuiltObject) -> BuiltObject:
  """Adds the object's hull: a box (kinds with a `half`) or an upright cylinder enclosing it, in
  the kind's frame. Only the arm's link capsules and palm collide with it (the builder's pairs): the
  arm pushes the object and cannot pass through it, while the finger pads keep their own pairs."""
  pr, name = b.params, f"{o.name}_hull"
  # a handled kind's origin is LIBERO's, off its round body's axis (a mug's by 1.4-1.7 cm, the
  # frying pan's by 7.6 cm): its hull (and a mug's side capsule) stands on that axis; the handle,
  # pinched, has its own capsules
  cx, cy = o.param("body_center_xy", (0.0, 0.0)) if "half" not in pr else (0.0, 0.0)
  if "half" in pr:
    hx, hy, hz = pr["half"]
    g = geom(name, "box", (hx, hy, hz), HULL_RGBA, pos=(0.0, 0.0, hz))
  else:
    r = pr["radius"]
    h = max(pr.get("height", 0.0), pr.get("top", 0.0), 0.004)
    g = geom(name, "cylinder", (r, 0.5 * h), HULL_RGBA, pos=(cx, cy, 0.5 * h))
  g = g.replace("<geom ", '<geom group="3" ', 1)
  extra, side = [g], ""
  # A tall object stands on its feet; knocked over, it lies on its side, which no foot reaches: an
  # axis capsule (radius: the narrower horizontal half size; paired with the table) carries it
  # then. Its lower end sits SIDE_LIFT above the base, so an upright object's capsule never touches.
  if "half" in pr:
    rc, top = min(pr["half"][0], pr["half"][1]), 2.0 * pr["half"][2]
  else:
    rc, top = pr["radius"], max(pr.get("height", 0.0), pr.get("top", 0.0))
  if o.kind == "mug":
    # A hollow kind has no solid axis, but a mug still lies on its side once knocked over: its
    # wall pairs with the fingers, not the table, and sank into it. Its capsule stays inside the
    # body (about the body's axis; as wide as the body, or as its height allows); lying, the mug
    # rests on it and its handle bar (params["lying"]), the base's rim at most 1.6 cm low
    # (tests/libero_assets_test.py).
    rc = min(rc, 0.5 * (top - SIDE_LIFT) - 0.001)
  elif o.kind in HOLLOW or top <= 2.0 * rc + SIDE_LIFT + 0.01:
    rc = 0.0
  if rc > 0.0:
    side = f"{o.name}_side"
    c = geom(side, "capsule", (rc,), HULL_RGBA,
             fromto=(cx, cy, rc + SIDE_LIFT, cx, cy, max(top - rc, rc + SIDE_LIFT + 0.001)))
    extra.append(c.replace("<geom ", '<geom group="3" ', 1))
  xml = b.xml[:b.xml.rindex("</body>")] + "  " + "\n  ".join(in_frame(o, extra)) + "\n</body>"
  return dataclasses.replace(b, xml=xml, hull=name, side=side)


def _feet(name: str, rgba, xy: list[tuple[float, float]], r: float = 0.004) -> tuple[list, list]:
  gs, names = [], []
  for k, (x, y) in enumerate(xy):
    g = f"{name}_foot{k}"
    gs.append(geom(g, "sphere", (r,), rgba, pos=(x, y, r)))
    names.append(g)
  return gs, names


def _ring(r: float, n: int, phase: float = 0.0) -> list[tuple[float, float]]:
  return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n))
          for k in range(n)]


def _quat_mat(q) -> list[list[float]]:
  w, x, y, z = q
  return [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
          [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
          [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]


def kind_frame(spec) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(pos, quat) of the kind's z-up, origin-at-the-bottom frame inside the entity's root frame
  (LIBERO's body frame; some of its meshes are authored y-up): params "frame", else identity."""
  f = spec.param("frame")
  if not f:
    return (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)
  return tuple(f[:3]), tuple(f[3:7])


def in_frame(spec, geoms: list[str]) -> list[str]:
  """The kind's geoms, wrapped in an MJCF <frame> at `kind_frame(spec)` when it is not identity."""
  pos, quat = kind_frame(spec)
  if pos == (0.0, 0.0, 0.0) and quat == (1.0, 0.0, 0.0, 0.0):
    return geoms
  return [f'<frame pos="{_f(*pos)}" quat="{_f(*quat)}">'] + ["  " + g for g in geoms] + ["</frame>"]


def _body(o: ObjectSpec, pos, geoms: list[str], mass: float, com_z: float, inertia,
          com_xy: tuple[float, float] = (0.0, 0.0)) -> str:
  """A free body whose geoms (given in the kind's frame) sit in the LIBERO root frame; its centre
  of mass at (com_xy, com_z) in the kind's frame."""
  fpos, fq = kind_frame(o)
  r = _quat_mat(fq)
  com = [fpos[i] + r[i][0] * com_xy[0] + r[i][1] * com_xy[1] + r[i][2] * com_z for i in range(3)]
  # inertia about the com, kind axes -> root axes: R diag(I) R^T
  full = [[sum(r[i][k] * inertia[k] * r[j][k] for k in range(3)) for j in range(3)] for i in range(3)]
  fi = (full[0][0], full[1][1], full[2][2], full[0][1], full[0][2], full[1][2])
  return (f'<body name="{o.name}" pos="{_f(*pos)}">\n  <freejoint name="{o.name}_joint"/>\n'
          f'  <inertial pos="{_f(*com)}" mass="{mass:.6g}" fullinertia="{_f(*fi)}"/>\n  '
          + "\n  ".join(in_frame(o, geoms)) + "\n</body>")


def _box_inertia(m: float, hx: float, hy: float, hz: float) -> tuple[float, float, float]:
  return (m * (hy * hy + hz * hz) / 3, m * (hx * hx + hz * hz) / 3, m * (hx * hx + hy * hy) / 3)


def _cyl_inertia(m: float, r: float, h: float) -> tuple[float, float, float]:
  i = m * (3 * r * r + h * h) / 12
  return (i, i, 0.5 * m * r * r)


def box(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """A box-shaped object (a carton, a book, a pudding box): one box geom the fingers pinch and
  others rest on, four sphere feet at its bottom corners. params: half = (hx, hy, hz)."""
  hx, hy, hz = o.param("half", (0.03, 0.02, 0.04))
  mass = o.mass or 0.1
  g = f"{o.name}_box"
  geoms = [geom(g, "box", (hx, hy, hz), o.rgba, pos=(0, 0, hz))]
  inset = 0.006
  feet, support = _feet(o.name, o.rgba, [(sx * (hx - inset), sy * (hy - inset))
                                         for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))])
  xml = _body(o, pos, geoms + feet, mass, hz, _box_inertia(mass, hx, hy, hz))
  return BuiltObject(xml, tuple(support), (g,), (g,), (), 0.0, dict(half=(hx, hy, hz), top=2 * hz))


def cylinder(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """An upright can or round bottle: one cylinder (pinched, and a surface), three feet.
  params: radius, height; a flattened bottle (params half_xy with sides more than 25% apart and a
  measured cross_section_fill, as LIBERO's ketchup / dressing bottles) is built as a box."""
  r, h = o.param("radius", 0.033), o.param("height", 0.1)
  hxy = o.param("half_xy")
  if hxy and o.param("cross_section_fill") and max(hxy) > 1.25 * min(hxy):
    half = (hxy[0], hxy[1], 0.5 * h)
    return box(dataclasses.replace(o, params=tuple(dict(o.params, half=half).items())), pos)
  mass = o.mass or 0.15
  g = f"{o.name}_body"
  geoms = [geom(g, "cylinder", (r, 0.5 * h), o.rgba, pos=(0, 0, 0.5 * h))]
  feet, support = _feet(o.name, o.rgba, _ring(0.6 * r, 3, math.pi / 6))
  xml = _body(o, pos, geoms + feet, mass, 0.5 * h, _cyl_inertia(mass, r, h))
  return BuiltObject(xml, tuple(support), (g,), (g,), (), 0.0, dict(radius=r, height=h, top=h))


def box_geoms(name: str, flat, rgba) -> list[tuple[str, str, float]]:
  """LIBERO's collision boxes taken over (params `boxes`: flat [x, y, z, qw, qx, qy, qz, hx, hy, hz]
  per box, kind frame): (geom name `<name>_box<k>`, its MJCF, its top z in the kind frame) each."""
  out = []
  for k in range(len(flat) // 10):
    b = flat[10 * k:10 * k + 10]
    q = b[3:7]
    norm = sum(v * v for v in q) ** 0.5
    row = _quat_mat([v / norm for v in q])[2]
    top = b[2] + sum(abs(r) * h for r, h in zip(row, b[7:10]))
    out.append((f"{name}_box{k}", geom(f"{name}_box{k}", "box", b[7:10], rgba, pos=b[0:3], quat=q),
                top))
  return out


def boxes(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """An object LIBERO builds from collision boxes (the moka pot), box for box: params boxes (flat
  [x, y, z, qw, qx, qy, qz, hx, hy, hz] per box, kind frame), grip ([i, j, cx, cy, cz, yaw, across,
  along, up]: the two parallel walls the fingers close across, as one box), height, half_xy
  (tools/libero_boxes.py writes them). The grip's walls are pinched and carry the fingertips;
  four feet under the grip's centre carry the object."""
  flat = o.param("boxes")
  if not flat or len(flat) % 10:
    raise ValueError(f"object {o.name!r} (kind boxes): params 'boxes' needs 10 numbers per box, "
                     f"got {0 if not flat else len(flat)}")
  grip = o.param("grip")
  if not grip or len(grip) != 9:
    raise ValueError(f"object {o.name!r} (kind boxes): params 'grip' needs 9 numbers "
                     "[i, j, cx, cy, cz, yaw, across, along, up]")
  mass = o.mass or 0.1
  geoms = [xml for _, xml, _ in box_geoms(o.name, flat, o.rgba)]
  walls = tuple(f"{o.name}_box{int(grip[k])}" for k in (0, 1))
  cx, cy, _, yaw, across, along, up = grip[2:9]
  h = o.param("height", 2 * up)
  hxy = o.param("half_xy", (across, across))
  r_feet = 0.7 * min(across, along * 2.0)
  feet, support = _feet(o.name, o.rgba, [(cx + x, cy + y) for x, y in _ring(r_feet, 4, yaw)])
  xml = _body(o, pos, geoms + feet, mass, 0.45 * h, _box_inertia(mass, across, across, 0.5 * h),
              (cx, cy))
  return BuiltObject(xml, tuple(support), walls, walls, (), 0.0,
                     dict(half=(hxy[0], hxy[1], 0.5 * h), top=h, height=h,
                          grip=tuple(float(v) for v in grip[2:])))


def bottle(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """A bottle: a body cylinder up to the shoulder and a neck cylinder above it (both pinched),
  three feet. params: radius, height, neck_radius, shoulder_height."""
  r, h = o.param("radius", 0.035), o.param("height", 0.3)
  rn, hs = o.param("neck_radius", 0.014), o.param("shoulder_height", 0.2)
  hs = min(hs, h - 0.01)
  mass = o.mass or 0.4
  gb, gn = f"{o.name}_body", f"{o.name}_neck"
  geoms = [geom(gb, "cylinder", (r, 0.5 * hs), o.rgba, pos=(0, 0, 0.5 * hs)),
           geom(gn, "cylinder", (rn, 0.5 * (h - hs)), o.rgba, pos=(0, 0, 0.5 * (h + hs)))]
  feet, support = _feet(o.name, o.rgba, _ring(0.6 * r, 3, math.pi / 6))
  xml = _body(o, pos, geoms + feet, mass, 0.4 * h, _cyl_inertia(mass, r, h))
  return BuiltObject(xml, tuple(support), (), (gb, gn), (), 0.0,
                     dict(radius=r, height=h, neck_radius=rn, shoulder_height=hs, top=h))


def _centre_dir(o: ObjectSpec) -> tuple[float, float, float, float]:
  """(cx, cy) of the round body and the unit direction (ux, uy) of the handle, kind frame."""
  cx, cy = o.param("body_center_xy", (0.0, 0.0))
  ux, uy = o.param("handle_dir", (1.0, 0.0))
  n = math.hypot(ux, uy) or 1.0
  return cx, cy, ux / n, uy / n


def mug(o: ObjectSpec, pos=(0.0, 0.0, 0.0), n_staves: int = 10) -> BuiltObject:
  """A mug: vertical capsule staves (the wall, pinched), a visual base disc, a handle of three
  capsules (pinched too), three feet. params: radius, height, handle_length, handle_dir,
  body_center_xy."""
  r, h = o.param("radius", 0.04), o.param("height", 0.09)
  hl = o.param("handle_length", 0.03)
  cx, cy, ux, uy = _centre_dir(o)
  mass = o.mass or 0.2
  rs = 0.005
  geoms, grasp, visual = [], [], []
  for k, (x, y) in enumerate(_ring(r - rs, n_staves)):
    g = f"{o.name}_stave{k}"
    geoms.append(geom(g, "capsule", (rs,), o.rgba, fromto=(cx + x, cy + y, 0.01, cx + x, cy + y, h - rs)))
    grasp.append(g)
  for k, (x, y) in enumerate(_ring(r - rs, n_staves, math.pi / n_staves)):
    g = f"{o.name}_wallvis{k}"
    geoms.append(geom(g, "capsule", (rs,), o.rgba, fromto=(cx + x, cy + y, 0.01, cx + x, cy + y, h - rs)))
    visual.append(g)
  gb = f"{o.name}_base"
  geoms.append(geom(gb, "cylinder", (r - rs, 0.004), o.rgba, pos=(cx, cy, 0.008)))
  a = (cx + r * ux, cy + r * uy)
  b = (cx + (r + hl) * ux, cy + (r + hl) * uy)
  for k, z in enumerate((0.75 * h, 0.3 * h)):
    g = f"{o.name}_handle{k}"
    geoms.append(geom(g, "capsule", (0.006,), o.rgba, fromto=(*a, z, *b, z)))
    grasp.append(g)
  bar = f"{o.name}_handle_bar"
  geoms.append(geom(bar, "capsule", (0.006,), o.rgba, fromto=(*b, 0.3 * h, *b, 0.75 * h)))
  grasp.append(bar)
  # LIBERO's mug stands on a flat base as wide as its body: four feet near the rim, and the centre
  # of mass over the body (a little toward the handle); with three feet at 0.6 r around the kind
  # frame's origin a mug set down upright stood 3 mm from tipping and fell over
  feet, support = _feet(o.name, o.rgba, [(cx + x, cy + y) for x, y in _ring(0.8 * r, 4, math.pi / 4)])
  com_xy = (cx + 0.1 * (r + hl) * ux, cy + 0.1 * (r + hl) * uy)
  xml = _body(o, pos, geoms + feet, mass, 0.4 * h, _cyl_inertia(mass, r, h), com_xy)
  return BuiltObject(xml, tuple(support), (gb,), tuple(grasp), tuple(visual), 0.0,
                     dict(radius=r, height=h, handle_length=hl, top=h, inner_surfaces=(gb,),
                          lying=(bar,)))   # knocked over, it lies on its side capsule and handle


def pan(o: ObjectSpec, pos=(0.0, 0.0, 0.0), n_rim: int = 12) -> BuiltObject:
  """A frying pan: a disc (a surface), a low rim of capsules (visual), a long handle capsule
  (pinched), three feet. params: radius, height, handle_length, handle_dir, body_center_xy."""
  r, h = o.param("radius", 0.1), o.param("height", 0.04)
  hl = o.param("handle_length", 0.15)
  cx, cy, ux, uy = _centre_dir(o)
  mass = o.mass or 0.6
  gd, gh = f"{o.name}_disc", f"{o.name}_handle"
  geoms = [geom(gd, "cylinder", (r, 0.004), o.rgba, pos=(cx, cy, 0.012)),
           geom(gh, "capsule", (0.009,), o.rgba, fromto=(cx + r * ux, cy + r * uy, 0.6 * h,
                                                        cx + (r + hl) * ux, cy + (r + hl) * uy, h))]
  visual = []
  pts = _ring(r, n_rim)
  for k in range(n_rim):
    (x0, y0), (x1, y1) = pts[k], pts[(k + 1) % n_rim]
    g = f"{o.name}_rimvis{k}"
    geoms.append(geom(g, "capsule", (0.004,), o.rgba, fromto=(cx + x0, cy + y0, 0.5 * h, cx + x1, cy + y1, 0.5 * h)))
    visual.append(g)
  feet, support = _feet(o.name, o.rgba, [(cx + x, cy + y) for x, y in _ring(0.6 * r, 3, math.pi / 6)])
  xml = _body(o, pos, geoms + feet, mass, 0.012, _cyl_inertia(mass, r, 0.02))
  return BuiltObject(xml, tuple(support), (gd,), (gh,), tuple(visual), 0.0,
                     dict(radius=r, height=h, handle_length=hl, top=0.016))


def basket(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """An open box: a bottom slab (what things dropped in rest on) and four walls (pinched), four
  feet. params: half = (hx, hy, hz), wall."""
  hx, hy, hz = o.param("half", (0.1, 0.08, 0.05))
  w = o.param("wall", 0.006)
  mass = o.mass or 0.3
  gbot = f"{o.name}_bottom"
  geoms = [geom(gbot, "box", (hx, hy, 0.5 * w), o.rgba, pos=(0, 0, 0.008 + 0.5 * w))]
  grasp = []
  for k, (p, s) in enumerate((((hx - 0.5 * w, 0, hz), (0.5 * w, hy, hz)),
                              ((-hx + 0.5 * w, 0, hz), (0.5 * w, hy, hz)),
                              ((0, hy - 0.5 * w, hz), (hx, 0.5 * w, hz)),
                              ((0, -hy + 0.5 * w, hz), (hx, 0.5 * w, hz)))):
    g = f"{o.name}_wall{k}"
    geoms.append(geom(g, "box", s, o.rgba, pos=p))
    grasp.append(g)
  feet, support = _feet(o.name, o.rgba, [(sx * (hx - 0.01), sy * (hy - 0.01))
                                         for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))])
  xml = _body(o, pos, geoms + feet, mass, 0.5 * hz, _box_inertia(mass, hx, hy, hz))
  return BuiltObject(xml, tuple(support), (gbot,), tuple(grasp), (), 0.0,
                     dict(half=(hx, hy, hz), wall=w, top=0.008 + w, walls=tuple(grasp)))


KINDS: dict[str, Callable[..., BuiltObject]] = {
    "bowl": bowl, "plate": plate, "box": box, "cylinder": cylinder, "bottle": bottle, "mug": mug,
    "pan": pan, "basket": basket, "boxes": boxes}


def build(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  if o.kind not in KINDS:
    raise KeyError(f"object {o.name!r}: unknown kind {o.kind!r}; known: {sorted(KINDS)}")
  return _with_hull(o, KINDS[o.kind](o, pos))
