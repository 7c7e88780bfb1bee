"""LIBERO's fixtures (cabinets with drawers, a stove with a knob, a microwave with a door, a wine
rack, a desk caddy) built from MuJoCo primitives, with real joints the gripper operates.

A fixture is a body without a joint of its own (welded to the world, as in LIBERO) at the spec's
pose; a multi-task scene (envs.tasks.libero_suite) moves it per environment by giving each
environment its own `body_pos` / `body_quat` for the fixture's root (a batched model field: MJX's
mocap bodies cannot carry jointed children, their children do not follow the mocap pose). Moving parts are child bodies with LIBERO's joints (`<fixture>_<suffix>`,
LIBERO's names, types, axes, ranges), so Open / Close / TurnOn / TurnOff read the same qpos LIBERO
reads. Geom roles as in objects.py: `surface` (things rest on it: a cabinet top, a drawer floor, the
stove's cook plate), `grasp` (the fingers push or pull it: handles, the door, the knob); the rest is
visual. Dimensions and joints come from LIBERO's meshes via envs/tasks/data (FORMAT.md); every
fixture also has defaults so a hand-written spec builds.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from envs.tasks.objects import _f, box_geoms, geom, in_frame
from envs.tasks.spec import FixtureSpec, JointSpec

WOOD = (0.55, 0.38, 0.22, 1.0)
METAL = (0.6, 0.6, 0.62, 1.0)
DARK = (0.12, 0.12, 0.13, 1.0)


@dataclasses.dataclass(frozen=True)
class BuiltFixture:
  xml: str                      # <body> (no joint: welded) with its moving parts
  surface: tuple[str, ...]
  grasp: tuple[str, ...]
  visual: tuple[str, ...]
  joints: tuple[str, ...]       # full joint names, LIBERO's
  params: dict


def _joint_xml(name: str, j: JointSpec) -> str:
  return (f'<joint name="{name}" type="{j.type}" axis="{_f(*j.axis)}" pos="{_f(*j.pos)}" '
          f'range="{_f(*j.range)}" damping="{j.damping:.6g}" armature="{j.armature:.6g}" '
          f'frictionloss="{j.frictionloss:.6g}" stiffness="{j.stiffness:.6g}" limited="true"/>')


def _box_between(name: str, lo, hi, rgba) -> str:
  c = tuple(0.5 * (a + b) for a, b in zip(lo, hi))
  h = tuple(max(0.5 * (b - a), 1e-3) for a, b in zip(lo, hi))
  return geom(name, "box", h, rgba, pos=c)


def _front(j: JointSpec) -> int:
  """Index (0 x, 1 y) of the horizontal axis a drawer slides along (it opens toward negative q,
  so it travels along -axis)."""
  a = j.axis
  i = 0 if abs(a[0]) >= abs(a[1]) else 1
  return i


class _Parts:
  """Collects geoms and their roles while a fixture is written."""

  def __init__(self, name: str):
    self.name = name
    self.surface, self.grasp, self.visual = [], [], []

  def add(self, role: str, suffix: str, xml_fn) -> str:
    g = f"{self.name}_{suffix}"
    {"surface": self.surface, "grasp": self.grasp, "visual": self.visual}[role].append(g)
    return xml_fn(g)


def _default_drawers(hx, hy, hz) -> tuple[JointSpec, ...]:
  """Three drawers stacked in a carcass whose front faces -x (toward the robot when yawed)."""
  out = []
  for k, suffix in enumerate(("top_level", "middle_level", "bottom_level")):
    z1 = 2 * hz - 0.02 - k * (2 * hz - 0.04) / 3
    z0 = z1 - (2 * hz - 0.04) / 3 + 0.01
    out.append(JointSpec(suffix, "slide", (1.0, 0.0, 0.0), (0.0, 0.0, 0.5 * (z0 + z1)), (-0.16, 0.01),
                         (-hx, -hy + 0.01, z0), (hx - 0.01, hy - 0.01, z1), damping=5.0))
  return tuple(out)


def cabinet(f: FixtureSpec, pos=(0.0, 0.0, 0.0)) -> BuiltFixture:
  """A cabinet: a carcass (top slab: a surface; sides and back: visual) and drawers on LIBERO's
  slide joints, each with a floor (a surface: LIBERO's `<drawer>_region` sits on it), a front and
  a handle bar the fingers pull. params: half (hx, hy, hz); drawers from `joints`."""
  hx, hy, hz = f.param("half", (0.11, 0.15, 0.17))
  cz = f.param("center_z", hz)
  p = _Parts(f.name)
  geoms = [p.add("surface", "top", lambda g: geom(g, "box", (hx, hy, 0.01), f.rgba, pos=(0, 0, cz + hz - 0.01))),
           p.add("visual", "side0", lambda g: geom(g, "box", (hx, 0.01, hz), f.rgba, pos=(0, hy - 0.01, cz))),
           p.add("visual", "side1", lambda g: geom(g, "box", (hx, 0.01, hz), f.rgba, pos=(0, -hy + 0.01, cz)))]
  joints = f.joints or _default_drawers(hx, hy, hz)
  bodies, names = [], []
  for j in joints:
    jn = f"{f.name}_{j.suffix}"
    names.append(jn)
    i = _front(j)
    lo, hi = list(j.part_lo), list(j.part_hi)
    # the front is the face the drawer moves out through (toward -axis when q < 0)
    out_sign = -1.0 if j.axis[i] > 0 else 1.0
    front = lo[i] if out_sign < 0 else hi[i]
    t = 0.012
    flo, fhi = list(lo), list(hi)
    if out_sign < 0:
      fhi[i] = front + t
    else:
      flo[i] = front - t
    blo, bhi = list(lo), list(hi)
    bhi[2] = lo[2] + t
    hz_mid = 0.5 * (lo[2] + hi[2])
    other = 1 - i
    c_other = 0.5 * (lo[other] + hi[other])
    half_w = 0.3 * (hi[other] - lo[other])
    a = [0.0, 0.0, hz_mid]
    b = [0.0, 0.0, hz_mid]
    a[i] = b[i] = front + out_sign * 0.03
    a[other], b[other] = c_other - half_w, c_other + half_w
    suffix = j.suffix
    parts = [p.add("surface", f"{suffix}_floor", lambda g: _box_between(g, blo, bhi, f.rgba)),
             p.add("visual", f"{suffix}_front", lambda g: _box_between(g, flo, fhi, f.rgba)),
             p.add("grasp", f"{suffix}_handle", lambda g: geom(g, "capsule", (0.008,), METAL, fromto=(*a, *b)))]
    # the handle's stand-offs (visual)
    for k, x in enumerate((a, b)):
      s0 = list(x)
      s0[i] = front
      parts.append(p.add("visual", f"{suffix}_standoff{k}",
                         lambda g, s0=s0, x=x: geom(g, "capsule", (0.005,), METAL, fromto=(*s0, *x))))
    bodies.append(_part_body(jn, j, [0.5 * (u + v) for u, v in zip(lo, hi)], 0.5, 0.002, parts))
  xml = _root_body(f, pos, geoms, bodies)
  return BuiltFixture(xml, tuple(p.surface), tuple(p.grasp), tuple(p.visual), tuple(names),
                      dict(half=(hx, hy, hz), top=cz + hz))


def stove(f: FixtureSpec, pos=(0.0, 0.0, 0.0)) -> BuiltFixture:
  """A flat stove: a base slab with a cook plate on top (a surface; LIBERO's `cook_region`) and a
  knob on LIBERO's hinge (`<stove>_button`), a short capsule the fingers push round.
  params: half (hx, hy, hz); cook_plate (x0, y0, x1, y1, top: the burner plate's top face)."""
  hx, hy, hz = f.param("half", (0.15, 0.2, 0.02))
  p = _Parts(f.name)
  j = f.joints[0] if f.joints else JointSpec("button", "hinge", (0.0, 0.0, 1.0), (hx - 0.04, -hy + 0.04, 2 * hz),
                                             (-0.005, 2.1), (hx - 0.06, -hy + 0.02, 2 * hz),
                                             (hx - 0.02, -hy + 0.06, 2 * hz + 0.03), damping=0.5)
  pieces = _carve_knob(f, (hx, hy, hz), j)
  cook = f.param("cook_plate")   # LIBERO's burner plate (tools/libero_boxes.py): its top, 2.45 cm
  if cook:                       # under the fitted box's, which the knob's boxes set
    pieces = [(n, (lo, (hi[0], hi[1], cook[4]) if n == "plate" else hi)) for n, (lo, hi) in pieces]
  geoms = [p.add("surface", name, lambda g, lo=lo, hi=hi: _box_between(g, lo, hi, DARK))
           for name, (lo, hi) in pieces]
  jn = f"{f.name}_{j.suffix}"
  c = tuple(0.5 * (u + v) for u, v in zip(j.part_lo, j.part_hi))
  hl = max(0.5 * max(j.part_hi[0] - j.part_lo[0], j.part_hi[1] - j.part_lo[1]), 0.015)
  # the knob's grip bar lies across the hinge axis so that a finger pushing it turns the knob
  ax = j.axis
  perp = (ax[1], -ax[0], 0.0) if abs(ax[2]) < 0.9 else (1.0, 0.0, 0.0)
  a = tuple(ci - hl * pi for ci, pi in zip(c, perp))
  b = tuple(ci + hl * pi for ci, pi in zip(c, perp))
  knob = [p.add("grasp", "knob", lambda g: geom(g, "capsule", (0.01,), METAL, fromto=(*a, *b)))]
  body = _part_body(jn, j, c, 0.05, 1e-4, knob)
  xml = _root_body(f, pos, geoms, [body])
  return BuiltFixture(xml, tuple(p.surface), tuple(p.grasp), tuple(p.visual), (jn,),
                      dict(half=(hx, hy, hz), top=2 * hz))


def _carve_knob(f: FixtureSpec, half, j: JointSpec) -> list[tuple[str, tuple]]:
  """The stove's base box (LIBERO's fitted collision box, in the kind's frame: x, y in +-half,
  z in [0, 2 hz]) as boxes (name, (lo, hi)) around a well where the knob turns: LIBERO's fitted
  box also covers the knob (its hinge part's box reaches down into it), so the fingers, which the
  base stops, could not reach the knob. The well is the knob part's footprint down to the part's
  bottom (kept below it); the rest of the box (its cook plate, `<stove>_plate`, and the strips
  beside the well) keeps LIBERO's dimensions. No well when the knob is clear of the box."""
  import numpy as np  # noqa: PLC0415
  from envs.tasks import objects  # noqa: PLC0415
  hx, hy, hz = half
  fpos, fq = objects.kind_frame(f)
  r = np.array(objects._quat_mat(fq))  # noqa: SLF001
  corners = np.array([[x, y, z] for x in (j.part_lo[0], j.part_hi[0]) for y in (j.part_lo[1], j.part_hi[1])
                      for z in (j.part_lo[2], j.part_hi[2])])
  k = (corners - np.asarray(fpos)) @ r          # the knob part's corners in the kind's frame
  x0, y0, z0 = np.maximum(k.min(0), (-hx, -hy, 0.0))
  x1, y1, _ = np.minimum(k.max(0), (hx, hy, 2 * hz))
  if x0 >= x1 or y0 >= y1 or z0 >= 2 * hz:
    return [("plate", ((-hx, -hy, 0.0), (hx, hy, 2 * hz)))]
  out = []
  # the cook plate: the longer of the pieces left beside the well along x
  sides = [(x1, hx), (-hx, x0)] if hx - x1 >= x0 + hx else [(-hx, x0), (x1, hx)]
  for name, (a, b) in zip(("plate", "base_end"), sides):
    if b - a > 1e-3:
      out.append((name, ((a, -hy, 0.0), (b, hy, 2 * hz))))
  if y0 + hy > 1e-3:
    out.append(("base_side0", ((x0, -hy, 0.0), (x1, y0, 2 * hz))))
  if hy - y1 > 1e-3:
    out.append(("base_side1", ((x0, y1, 0.0), (x1, hy, 2 * hz))))
  if z0 > 1e-3:
    out.append(("base_well", ((x0, y0, 0.0), (x1, y1, z0))))
  return out


def microwave(f: FixtureSpec, pos=(0.0, 0.0, 0.0)) -> BuiltFixture:
  """A microwave: a shell of five boxes (floor, roof, back and two sides: surfaces -- the arm and
  what a task puts in it cannot pass through; LIBERO's `heating_region` sits on the floor) and a
  door on LIBERO's hinge with a handle bar the fingers pull. The door is also in `params["blocks"]`:
  the reaching links and palm, and the objects a task puts in the microwave, meet it (so it cannot
  be swung shut through a mug). params: half (hx, hy, hz); with boxes, door_boxes, door_capsules
  (LIBERO's own: tools/libero_boxes.py --door) the shell is LIBERO's six boxes (`box<k>`, in the
  kind frame) and the door LIBERO's box (`door`) and handle capsules (`handle`, `handle1`, ...;
  root frame, shut) instead of boxes fitted to the bounding boxes."""
  hx, hy, hz = f.param("half", (0.16, 0.2, 0.13))
  p = _Parts(f.name)
  t = 0.01
  j = f.joints[0] if f.joints else JointSpec("microjoint", "hinge", (0.0, 0.0, 1.0), (-hx, hy, hz),
                                             (-2.094, 0.0), (-hx - 0.02, -hy, 0.0), (-hx, hy, 2 * hz),
                                             damping=0.5)
  if f.param("boxes"):
    return _libero_microwave(f, pos, j, p, (hx, hy, hz))
  # the shell is open toward the door: the door's thin horizontal axis, on the door's side
  dlo, dhi = j.part_lo, j.part_hi
  ax = 0 if (dhi[0] - dlo[0]) < (dhi[1] - dlo[1]) else 1
  sgn = 1.0 if 0.5 * (dlo[ax] + dhi[ax]) > 0 else -1.0
  half = [hx, hy]
  back_c, back_s = [0.0, 0.0, hz], [0.0, 0.0, hz]
  back_c[ax] = -sgn * (half[ax] - t)
  back_s[ax], back_s[1 - ax] = t, half[1 - ax]
  sides = []
  for k, sg in enumerate((1.0, -1.0)):
    c, sz = [0.0, 0.0, hz], [0.0, 0.0, hz]
    c[1 - ax] = sg * (half[1 - ax] - t)
    sz[1 - ax], sz[ax] = t, half[ax]
    sides.append((c, sz))
  geoms = [p.add("surface", "floor", lambda g: geom(g, "box", (hx, hy, t), f.rgba, pos=(0, 0, t))),
           p.add("surface", "roof", lambda g: geom(g, "box", (hx, hy, t), f.rgba, pos=(0, 0, 2 * hz - t))),
           p.add("surface", "back", lambda g: geom(g, "box", back_s, f.rgba, pos=back_c))]
  for k, (c, sz) in enumerate(sides):
    geoms.append(p.add("surface", f"side{k}", lambda g, c=c, sz=sz: geom(g, "box", sz, f.rgba, pos=c)))
  jn = f"{f.name}_{j.suffix}"
  lo, hi = j.part_lo, j.part_hi
  c = tuple(0.5 * (u + v) for u, v in zip(lo, hi))
  # handle: on the door's outer face, at the edge away from the hinge
  i = 0 if (hi[0] - lo[0]) < (hi[1] - lo[1]) else 1      # thin axis of the door = its normal
  other = 1 - i
  far = lo[other] if abs(lo[other] - j.pos[other]) > abs(hi[other] - j.pos[other]) else hi[other]
  hp = list(c)
  hp[other] = far + (0.03 if far < c[other] else -0.03)
  hp[i] = min(lo[i], hi[i]) - 0.03 if c[i] < 0 else max(lo[i], hi[i]) + 0.03
  a, b = list(hp), list(hp)
  a[2], b[2] = c[2] - 0.05, c[2] + 0.05
  parts = [p.add("grasp", "door", lambda g: _box_between(g, lo, hi, DARK)),
           p.add("grasp", "handle", lambda g: geom(g, "capsule", (0.008,), METAL, fromto=(*a, *b)))]
  body = _part_body(jn, j, c, 0.3, 0.003, parts)
  xml = _root_body(f, pos, geoms, [body])
  return BuiltFixture(xml, tuple(p.surface), tuple(p.grasp), tuple(p.visual), (jn,),
                      dict(half=(hx, hy, hz), top=2 * hz, blocks=(f"{f.name}_door",)))


def _libero_microwave(f: FixtureSpec, pos, j: JointSpec, p: "_Parts", half) -> BuiltFixture:
  """`microwave` from LIBERO's collision boxes and capsules (params boxes, door_boxes,
  door_capsules)."""
  flat, door, caps = f.param("boxes"), f.param("door_boxes", ()), f.param("door_capsules", ())
  if len(flat) % 10 or not door or len(door) % 10 or len(caps) % 7:
    raise ValueError(f"fixture {f.name!r} (kind microwave): params 'boxes' and 'door_boxes' need "
                     f"10 numbers per box, 'door_capsules' 7 per capsule; got {len(flat)}, "
                     f"{len(door)}, {len(caps)}")
  geoms = [p.add("surface", name[len(f.name) + 1:], lambda _g, xml=xml: xml)
           for name, xml, _ in box_geoms(f.name, flat, f.rgba)]
  parts = []
  for k in range(len(door) // 10):
    b = door[10 * k:10 * k + 10]
    parts.append(p.add("grasp", "door" if k == 0 else f"door{k}", lambda g, b=b: geom(
        g, "box", b[7:10], DARK, pos=b[0:3], quat=b[3:7])))
  for k in range(len(caps) // 7):
    c = caps[7 * k:7 * k + 7]
    parts.append(p.add("grasp", "handle" if k == 0 else f"handle{k}", lambda g, c=c: geom(
        g, "capsule", (c[6],), METAL, fromto=tuple(c[:6]))))
  jn = f"{f.name}_{j.suffix}"
  body = _part_body(jn, j, tuple(door[:3]), 0.26, 0.003, parts)
  xml = _root_body(f, pos, geoms, [body])
  return BuiltFixture(xml, tuple(p.surface), tuple(p.grasp), tuple(p.visual), (jn,),
                      dict(half=tuple(half), top=2 * half[2],
                           blocks=tuple(p.grasp[:len(door) // 10])))   # the door's slabs


def rack(f: FixtureSpec, pos=(0.0, 0.0, 0.0)) -> BuiltFixture:
  """A wine rack. With params `boxes` (LIBERO's own nine collision boxes, tools/libero_boxes.py
  --keep-kind) every box collides: the back post, two shelves sloping 31 degrees and a stopper lip
  at each shelf's low edge are surfaces (the arm and what a task puts on the rack meet them;
  LIBERO's `top_region` lies at the upper shelf's lip); the base's four boxes (tops under LOW_TOP)
  are `params["low"]`: only the hand and the fingertips reach that low, so only they pair with
  them. Without `boxes` (a hand-written spec): a cradle slab on top over visual legs.
  params: half (hx, hy, hz), boxes."""
  hx, hy, hz = f.param("half", (0.12, 0.05, 0.1))
  p = _Parts(f.name)
  flat = f.param("boxes")
  low = []
  if flat:
    if len(flat) % 10:
      raise ValueError(f"fixture {f.name!r} (kind rack): params 'boxes' needs 10 numbers per box, "
                       f"got {len(flat)}")
    geoms = []
    for name, xml, top in box_geoms(f.name, flat, f.rgba):
      if top <= LOW_TOP:
        low.append(name)
        geoms.append(xml)
      else:
        geoms.append(p.add("surface", name[len(f.name) + 1:], lambda _g, xml=xml: xml))
  else:
    geoms = [p.add("surface", "top", lambda g: geom(g, "box", (hx, hy, 0.01), f.rgba,
                                                    pos=(0, 0, 2 * hz - 0.01)))]
    for k, sx in enumerate((-1, 1)):
      geoms.append(p.add("visual", f"leg{k}", lambda g, sx=sx: geom(
          g, "box", (0.01, hy, hz), f.rgba, pos=(sx * (hx - 0.01), 0, hz))))
  xml = _root_body(f, pos, geoms, [])
  return BuiltFixture(xml, tuple(p.surface), (), tuple(p.visual), (),
                      dict(half=(hx, hy, hz), top=2 * hz, low=tuple(low)))


LOW_TOP = 0.05   # a rack box whose top is this low (kind frame, m) is its base


def caddy(f: FixtureSpec, pos=(0.0, 0.0, 0.0)) -> BuiltFixture:
  """A desk caddy: an open box split front / back (floor: a surface; walls visual).
  params: half (hx, hy, hz), wall."""
  hx, hy, hz = f.param("half", (0.06, 0.12, 0.06))
  w = f.param("wall", 0.005)
  p = _Parts(f.name)
  geoms = [p.add("surface", "floor", lambda g: geom(g, "box", (hx, hy, w), f.rgba, pos=(0, 0, w)))]
  walls = (((hx - w, 0, hz), (w, hy, hz)), ((-hx + w, 0, hz), (w, hy, hz)), ((0, 0, hz), (hx, w, hz)),
           ((0, hy - w, hz), (hx, w, hz)), ((0, -hy + w, hz), (hx, w, hz)))
  for k, (c, s) in enumerate(walls):
    geoms.append(p.add("visual", f"wall{k}", lambda g, c=c, s=s: geom(g, "box", s, f.rgba, pos=c)))
  xml = _root_body(f, pos, geoms, [])
  return BuiltFixture(xml, tuple(p.surface), (), tuple(p.visual), (), dict(half=(hx, hy, hz), top=2 * w))


def _part_body(jn: str, j: JointSpec, com, mass: float, inertia: float, parts: list[str]) -> str:
  """A moving part (drawer, knob, door) on LIBERO's joint `jn`; its geoms in the root frame."""
  return (f'<body name="{jn}_part">\n  {_joint_xml(jn, j)}\n'
          f'  <inertial pos="{_f(*com)}" mass="{mass:.6g}" diaginertia="{_f(inertia, inertia, inertia)}"/>\n  '
          + "\n  ".join(parts) + "\n</body>")


def _root_body(f: FixtureSpec, pos, geoms: list[str], bodies: list[str]) -> str:
  """The fixture's root body at `pos` (else the spec's pos) and the spec's yaw; `geoms` (the
  carcass, in the kind's frame) sit in the kind's frame, `bodies` (moving parts, built from
  LIBERO's joints in the root frame) in the root frame."""
  inner = "\n  ".join(in_frame(f, geoms) + bodies)
  p = pos if any(pos) else f.pos
  return (f'<body name="{f.name}" pos="{_f(*p)}" euler="0 0 {f.yaw:.6g}">\n  {inner}\n</body>')


KINDS: dict[str, Callable[..., BuiltFixture]] = {
    "cabinet": cabinet, "stove": stove, "microwave": microwave, "rack": rack, "caddy": caddy}


def build(f: FixtureSpec, pos=(0.0, 0.0, 0.0)) -> BuiltFixture:
  if f.kind not in KINDS:
    raise KeyError(f"fixture {f.name!r}: unknown kind {f.kind!r}; known: {sorted(KINDS)}")
  return KINDS[f.kind](f, pos)
