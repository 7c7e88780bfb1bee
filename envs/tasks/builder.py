"""One builder: TaskSpec -> MJCF string (table + Panda + objects + cameras + light) -> MjModel -> mjx.Model.

World frame = LIBERO's table frame: origin at the table-top centre, x away from the robot, y to its
left, z up; the table top is the plane z = 0 (a collision plane: infinite, cheapest contact).
All collisions are explicit <pair>s (every geom has contype = conaffinity = 0), so MJX checks only:
  finger pads x grasp geoms of every object, fingertip pads x surface geoms, tips + palm x table,
  support feet of every object x table, support feet x surface geoms of every OTHER object.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
from mujoco import mjx

from envs.robots import panda
from envs.tasks import fixtures as fixtures_lib
from envs.tasks import objects as objects_lib
from envs.tasks.spec import TaskSpec

HOLDERS = ("plate", "bowl", "basket", "pan")   # object kinds things are put on or in
TABLE_HALF = (0.5, 0.6)                 # visual table top half-extent (x, y)
TABLE_THICK = 0.05
# Camera "agentview": in front of the table, looking back at it and the robot (LIBERO's third
# person view); pos, look-at point.
AGENTVIEW = ((0.70, 0.0, 0.68), (-0.22, 0.0, 0.06))
AGENTVIEW_FOVY = 45.0


@dataclasses.dataclass(frozen=True)
class PhysicsConfig:
  """Solver and timestep: 5 ms semi-implicit Euler (LIBERO's integrator; joint damping implicit) +
  Newton with few iterations. MJX's fluid drag (LIBERO's air, below) needs Euler."""
  timestep: float = 0.005
  control_hz: float = 20.0
  solver: str = "Newton"            # Newton | CG
  iterations: int = 4
  ls_iterations: int = 6
  cone: str = "pyramidal"
  impratio: float = 1.0             # MuJoCo default (10 made pinches penetrate and fail)
  impl: str = "jax"
  # LIBERO's air (robosuite's world: density 1.2, viscosity 2e-5). With robosuite's coarse Panda
  # inertias (copied, envs/robots/panda.xml) MuJoCo's inertia-box drag slows the wrist's fast turns
  # noticeably, and LIBERO's controller response includes it.
  density: float = 1.2
  viscosity: float = 2e-5

  @property
  def substeps(self) -> int:
    n = round(1.0 / (self.control_hz * self.timestep))
    if abs(n * self.timestep * self.control_hz - 1.0) > 1e-6:
      raise ValueError(f"timestep {self.timestep} does not divide the control period "
                       f"1/{self.control_hz} s")
    return n


@dataclasses.dataclass(frozen=True)
class BuiltTask:
  spec: TaskSpec
  xml: str
  mj_model: mujoco.MjModel
  objects: dict                     # name -> objects_lib.BuiltObject
  physics: PhysicsConfig
  fixtures: dict = dataclasses.field(default_factory=dict)   # name -> fixtures_lib.BuiltFixture

  def mjx_model(self) -> mjx.Model:
    return mjx.put_model(self.mj_model, impl=self.physics.impl)


def _xyaxes(pos, target) -> str:
  p, t = np.asarray(pos, float), np.asarray(target, float)
  f = (t - p) / np.linalg.norm(t - p)
  right = np.cross(f, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  up = np.cross(right, f)
  return " ".join(f"{x:.6g}" for x in (*right, *up))


def _add_sites(body: ET.Element, owner: str, sites) -> None:
  """LIBERO's named regions of an entity, as sites `<owner>_<suffix>` on its root body or, for a
  site that rides on a moving part (a drawer's region), on that part's body."""
  parts = {b.get("name"): b for b in body.iter("body")}
  for s in sites:
    target = parts.get(f"{owner}_{s.joint}_part", body) if s.joint else body
    ET.SubElement(target, "site", name=f"{owner}_{s.suffix}", type="box",
                  pos=" ".join(f"{x:.6g}" for x in s.pos), quat=" ".join(f"{x:.6g}" for x in s.quat),
                  size=" ".join(f"{x:.6g}" for x in s.size), rgba="0 1 0 0", group="5")


def build_xml(spec: TaskSpec, physics: PhysicsConfig = PhysicsConfig()) -> tuple[str, dict]:
  """The task's MJCF string and its built objects (fixtures: `build_scene`)."""
  xml, objs, _ = build_scene(spec, physics)
  return xml, objs


def build_scene(spec: TaskSpec, physics: PhysicsConfig = PhysicsConfig()) -> tuple[str, dict, dict]:
  """The task's (or a suite's union scene's) MJCF string, built objects and built fixtures."""
  robot = ET.fromstring(panda.load_xml())
  root = ET.Element("mujoco", model=spec.name)
  ET.SubElement(root, "compiler", angle="radian", autolimits="true", inertiafromgeom="false")
  opt = ET.SubElement(root, "option", timestep=f"{physics.timestep}", integrator="Euler",
                      solver=physics.solver, iterations=str(physics.iterations),
                      ls_iterations=str(physics.ls_iterations), cone=physics.cone,
                      impratio=f"{physics.impratio}", density=f"{physics.density}",
                      viscosity=f"{physics.viscosity}")
  # userdata: the controller's gripper command level and direction (envs/tasks/libero_env.py)
  ET.SubElement(root, "size", memory="2M", nuserdata="2")
  vis = ET.SubElement(root, "visual")
  ET.SubElement(vis, "headlight", ambient="0.3 0.3 0.3", diffuse="0.5 0.5 0.5", specular="0 0 0")
  ET.SubElement(vis, "global", offwidth="256", offheight="256")
  root.append(robot.find("default"))
  world = ET.SubElement(root, "worldbody")
  ET.SubElement(world, "light", name="top", pos="0 0 1.5", dir="0 0 -1", directional="true",
                diffuse="0.6 0.6 0.6", specular="0.1 0.1 0.1")
  # Table: collision plane at z = 0, visual slab and legs below it.
  ET.SubElement(world, "geom", name="table", type="plane", size=f"{TABLE_HALF[0]} {TABLE_HALF[1]} 0.01",
                rgba="0.55 0.42 0.3 1", contype="0", conaffinity="0", condim="3",
                friction="1 0.005 0.0001")
  ET.SubElement(world, "geom", name="table_slab", type="box",
                size=f"{TABLE_HALF[0]} {TABLE_HALF[1]} {TABLE_THICK / 2}",
                pos=f"0 0 {-TABLE_THICK / 2 - 0.001}", rgba="0.55 0.42 0.3 1", contype="0",
                conaffinity="0")
  ET.SubElement(world, "geom", name="floor", type="plane", size="3 3 0.1", pos="0 0 -0.8",
                rgba="0.35 0.35 0.38 1", contype="0", conaffinity="0")
  for i, (sx, sy) in enumerate([(1, 1), (1, -1), (-1, 1), (-1, -1)]):
    ET.SubElement(world, "geom", name=f"table_leg{i}", type="capsule", size="0.025",
                  fromto=f"{sx * (TABLE_HALF[0] - 0.05)} {sy * (TABLE_HALF[1] - 0.05)} -0.05 "
                         f"{sx * (TABLE_HALF[0] - 0.05)} {sy * (TABLE_HALF[1] - 0.05)} -0.8",
                  rgba="0.3 0.25 0.2 1", contype="0", conaffinity="0")
  base = spec.robot_base
  ET.SubElement(world, "geom", name="robot_pedestal", type="capsule", size="0.09",
                fromto=f"{base[0] - 0.02} {base[1]} -0.8 {base[0] - 0.02} {base[1]} {base[2] - 0.02}",
                rgba="0.25 0.25 0.27 1", contype="0", conaffinity="0")
  cam_pos, cam_at = AGENTVIEW
  ET.SubElement(world, "camera", name="agentview", pos=" ".join(f"{x:.6g}" for x in cam_pos),
                xyaxes=_xyaxes(cam_pos, cam_at), fovy=f"{AGENTVIEW_FOVY}")
  # The controller's end-effector target lives in mocap_pos/quat[0] so that it is part of
  # mjx.Data (brax's auto-reset then restores it with the rest of the pipeline state).
  target = ET.SubElement(world, "body", name="ee_target", mocap="true")
  ET.SubElement(target, "site", name="ee_target_site", size="0.005", rgba="0 1 0 0", group="5")
  # Robot.
  for child in robot.find("worldbody"):
    if child.get("name") == "panda_link0":
      child.set("pos", " ".join(f"{x:.6g}" for x in base))
    world.append(child)
  # Objects (free bodies) and fixtures (welded bodies with jointed parts; a suite poses them per
  # environment through the model's body_pos / body_quat), each with LIBERO's named sites.
  def place(entities, build_fn) -> dict:
    out = {}
    for e in entities:
      out[e.name] = build_fn(e)
      el = ET.fromstring(out[e.name].xml)
      _add_sites(el, e.name, e.sites)
      world.append(el)
    return out

  built = place(spec.objects, objects_lib.build)
  fixtures = place(spec.fixtures, fixtures_lib.build)
  for tag in ("tendon", "equality", "actuator"):
    root.append(robot.find(tag))
  # Contact pairs.
  contact = ET.SubElement(root, "contact")
  pads = ("left_pad", "right_pad", "left_pad_upper", "right_pad_upper")
  pad_kw = dict(condim="3", friction="1.5 1.5 0.005 0.0001 0.0001", solref="0.01 1",
                solimp="0.95 0.99 0.001 0.5 2")
  for pad in pads[:2]:
    ET.SubElement(contact, "pair", geom1=pad, geom2="table", condim="3")
  ET.SubElement(contact, "pair", geom1="hand_collision", geom2="table", condim="3")
  names = [o.name for o in spec.objects]
  groups = [set(g) for g in spec.groups]

  def together(a: str, b: str) -> bool:
    return not groups or any(a in g and b in g for g in groups)

  relations = set(spec.relations)
  holders = {o.name for o in spec.objects if o.kind in HOLDERS}

  def rests(a: str, b: str) -> bool:
    """May a's feet rest on b's surfaces? (see TaskSpec.relations)"""
    if not relations:
      return together(a, b)
    return (a, b) in relations or (b in holders and together(a, b))

  for n in names:
    b = built[n]
    for g in b.grasp:
      for pad in pads:
        ET.SubElement(contact, "pair", geom1=pad, geom2=g, **pad_kw)
    for g in b.surface:
      # fingertips only (enough to keep the hand out of surfaces); not the floor inside a bowl or
      # a mug, where the fingers reach in around the wall they pinch
      if g not in b.grasp and g not in b.params.get("inner_surfaces", ()):
        for pad in pads[:2]:
          ET.SubElement(contact, "pair", geom1=pad, geom2=g, **pad_kw)
    for g in b.support:
      ET.SubElement(contact, "pair", geom1=g, geom2="table", condim="3",
                    friction="1 1 0.005 0.0001 0.0001")
      for m in names:
        if m != n and rests(n, m):
          for s in built[m].surface:
            ET.SubElement(contact, "pair", geom1=g, geom2=s, condim="3",
                          friction="1 1 0.005 0.0001 0.0001")
      for fname, fb in fixtures.items():
        if not rests(n, fname):
          continue
        for s in fb.surface:
          ET.SubElement(contact, "pair", geom1=g, geom2=s, condim="3",
                        friction="1 1 0.005 0.0001 0.0001")
  for fb in fixtures.values():
    for g in fb.grasp:               # handles, doors, knobs: the fingers push and pull them
      for pad in pads:
        ET.SubElement(contact, "pair", geom1=pad, geom2=g, condim="3")
    for s in fb.surface:             # fingertips stay out of cabinet tops, drawer floors, plates
      for pad in pads[:2]:
        ET.SubElement(contact, "pair", geom1=pad, geom2=s, condim="3")
  ET.indent(root)
  return ET.tostring(root, encoding="unicode"), built, fixtures


def build(spec: TaskSpec, physics: PhysicsConfig = PhysicsConfig()) -> BuiltTask:
  xml, built, fixtures = build_scene(spec, physics)
  mj_model = mujoco.MjModel.from_xml_string(xml)
  return BuiltTask(spec, xml, mj_model, built, physics, fixtures)
