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


def _f(*xs: float) -> str:
  return " ".join(f"{x:.6g}" for x in xs)


def _rgba(c) -> str:
  return _f(*c)


def bowl(o: ObjectSpec, pos=(0.0, 0.0, 0.0), n_staves: int = 8) -> BuiltObject:
  """A bowl: a ring of N slanted capsule staves (the wall; what the gripper pinches), three sphere
  feet (what it stands on), and a visual base disc and rim. size = (outer radius, height)."""
  radius, height = (o.size or (0.055, 0.05))[:2]
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
  visual.append(gb)
  # inertia of a thin conical shell, roughly: mass at the mean radius and half height
  rm = 0.5 * (r0 + r1)
  izz = mass * rm * rm
  ixx = 0.5 * izz + mass * height * height / 12
  xml = (f'<body name="{name}" pos="{_f(*pos)}">\n  <freejoint name="{name}_joint"/>\n'
         f'  <inertial pos="0 0 {0.5 * height:.6g}" mass="{mass}" diaginertia="{_f(ixx, ixx, izz)}"/>\n  '
         + "\n  ".join(geoms) + "\n</body>")
  return BuiltObject(xml, tuple(support), (), tuple(grasp), tuple(visual), 0.0,
                     dict(radius=radius, height=height, n_staves=n, stave_radius=rs,
                          stave_bottom=(r0, z0), stave_top=(r1, z1)))


def plate(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  """A plate: a thin cylinder disc (the surface things rest on) on three sphere feet, with a visual
  rim ring of capsules. size = (radius, thickness)."""
  radius, thick = (o.size or (0.09, 0.008))[:2]
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
  xml = (f'<body name="{name}" pos="{_f(*pos)}">\n  <freejoint name="{name}_joint"/>\n'
         f'  <inertial pos="0 0 {zc:.6g}" mass="{mass}" diaginertia="{_f(0.5 * izz, 0.5 * izz, izz)}"/>\n  '
         + "\n  ".join(geoms) + "\n</body>")
  return BuiltObject(xml, tuple(support), (f"{name}_disc",), (), tuple(visual), 0.0,
                     dict(radius=radius, thickness=thick, top=zc + 0.5 * thick))


KINDS: dict[str, Callable[..., BuiltObject]] = {"bowl": bowl, "plate": plate}


def build(o: ObjectSpec, pos=(0.0, 0.0, 0.0)) -> BuiltObject:
  if o.kind not in KINDS:
    raise KeyError(f"object {o.name!r}: unknown kind {o.kind!r}; known: {sorted(KINDS)}")
  return KINDS[o.kind](o, pos)
