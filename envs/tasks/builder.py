"""One builder: TaskSpec -> MJCF string (table + Panda + objects + cameras + light) -> MjModel -> mjx.Model.

World frame = LIBERO's table frame: origin at the table-top centre, x away from the robot, y to its
left, z up; the table top is the plane z = 0 (a collision plane: infinite, cheapest contact).
All collisions are explicit <pair>s (every geom has contype = conaffinity = 0), so MJX checks only:
  finger pads x grasp geoms of every object, fingertip pads x surface geoms, tips + palm x table,
  support feet of every object x table, support feet x surface geoms of every OTHER object, a tall
  object's side capsule (a mug's, and its handle bar) x the table and what a task puts it on or in
  (with a basket's walls: it lies there once knocked over), arm link capsules x table, reaching
  links + palm x every object's hull and every fixture surface,
  palm + fingertip pads x a fixture's low base (the wine rack's four base boxes), reaching links +
  palm x a fixture's `blocks` (the microwave's door), and what a task puts in such a fixture (its
  hull, or the capsules the fingers pinch where MJX has no hull x box collision) x its `blocks` and
  its shell boxes.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
from mujoco import mjx

from envs import schema
from envs.robots import panda
from envs.tasks import fixtures as fixtures_lib
from envs.tasks import objects as objects_lib
from envs.tasks.spec import TaskSpec

HOLDERS = ("plate", "bowl", "basket", "pan")   # object kinds things are put on or in
# The arm's collision capsules (envs/robots/panda.xml): every link collides with the table; the
# links that reach the workspace (forearm, wrist, flange) and the palm also with every object's hull
# and every fixture surface. The shoulder and upper arm (links 1-3) stay over the robot's base,
# behind every LIBERO region, so their object pairs would only cost time.
ARM_LINKS = tuple(f"link{i}_collision" for i in range(1, 8))
_BOX_PARTNERS = frozenset({"box", "capsule", "sphere"})   # geom types MJX collides with a box
REACHING = ("link4_collision", "link5_collision", "link6_collision", "link7_collision",
            "hand_collision")


def agentview(table: str) -> tuple[tuple[float, ...], tuple[float, ...], float]:
  """LIBERO's third-person camera for a table category, in the table frame: position, the MJCF
  xyaxes (camera x and y axes), fovy (measured: envs/robots/data/libero_robot.json)."""
  c = panda.libero_facts()["tables"][table]["cameras"]["agentview"]
  x = np.asarray(c["xmat"])
  return tuple(c["pos"]), tuple(x[:, 0]) + tuple(x[:, 1]), float(c["fovy"])


def wrist_camera() -> tuple[tuple[float, ...], tuple[float, ...], float]:
  """LIBERO's eye-in-hand camera in the hand frame: position, xyaxes, fovy (measured)."""
  c = panda.libero_facts()["tables"]["table"]["cameras"]["robot0_eye_in_hand"]
  x = np.asarray(c["xmat_hand"])
  return tuple(c["pos_hand"]), tuple(x[:, 0]) + tuple(x[:, 1]), float(c["fovy"])


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
  # MuJoCo's default. Raising it (3-4) also stops a pinched bowl's slow turn in the hand, but 3
  # already lets a bottle resting on the wine rack drift 1.4 cm in 4 s on these pyramidal cones and
  # from 5 up pinches sink in and drop; the pads' rolling friction (`build_scene`'s pad pairs)
  # stops the turn instead (RESULTS.md, "A pinched object still turns in the hand").
  impratio: float = 1.0
  impl: str = "jax"
  # LIBERO's air (robosuite's world: density 1.2, viscosity 2e-5). With robosuite's coarse Panda
  # inertias (copied, envs/robots/panda.xml) MuJoCo's inertia-box drag slows the wrist's fast turns
  # noticeably, and LIBERO's controller response includes it.
  density: float = 1.2
  viscosity: float = 2e-5

  def __post_init__(self):
    # the same checks as the flag path (LIBERO envs take these fields as flat options)
    for o in PHYSICS_OPTIONS:
      o.check(getattr(self, o.name))
    self.substeps  # noqa: B018  (raises when the timestep does not divide the control period)

  @property
  def substeps(self) -> int:
    n = round(1.0 / (self.control_hz * self.timestep))
    if n < 1 or abs(n * self.timestep * self.control_hz - 1.0) > 1e-6:
      raise schema.OptionError("timestep", self.timestep, f"must divide the control period "
                               f"1/control_hz = 1/{self.control_hz} s")
    return n


# MJX's warp backend (mujoco-warp, NVIDIA GPUs; it also runs on the CPU with warp-lang installed:
# checked 2026-11-30 with warp-lang 1.19 and MJX 3.17) keeps ONE contact buffer for a whole vmapped
# batch, each contact tagged with its world's index, instead of one per env; inside `jax.vmap` an
# env sees every world's contacts and not its index. This env's success predicates and grasp checks
# read their own env's contacts (predicates.contact_between) and its controller the jax backend's
# mass-matrix layout, so the backend is not offered until those read per-world data.
WARP_REFUSED = ("MJX's warp backend keeps one contact buffer for a whole vmapped batch, and this "
                "env's success predicates read each env's own contacts; not supported yet")


# PhysicsConfig's fields as env options (defaults from the dataclass: one source of truth). Bounds:
# past 10 ms a step of this contact-rich scene goes unstable; the controller runs 1-500 Hz; MJX
# solves with Newton or CG, on pyramidal or elliptic cones, in its JAX implementation here.
_P = PhysicsConfig.__dataclass_fields__
PHYSICS_OPTIONS = (
    schema.Float("timestep", _P["timestep"].default, "physics step, s (must divide 1/control_hz)",
                 lo=0.0, hi=0.01, lo_open=True),
    schema.Float("control_hz", _P["control_hz"].default, "policy actions per second",
                 lo=1.0, hi=500.0),
    schema.Choice("solver", _P["solver"].default, "MJX constraint solver", choices=("Newton", "CG")),
    schema.Int("iterations", _P["iterations"].default, "solver iterations", lo=1, hi=100),
    schema.Int("ls_iterations", _P["ls_iterations"].default, "line-search iterations", lo=1, hi=100),
    schema.Choice("cone", _P["cone"].default, "friction cone", choices=("pyramidal", "elliptic")),
    schema.Float("impratio", _P["impratio"].default, "frictional-to-normal constraint impedance",
                 lo=0.0, hi=100.0, lo_open=True),
    schema.Choice("impl", _P["impl"].default, "MJX implementation", choices=("jax",),
                  refused=(("warp", WARP_REFUSED),)),
    schema.Float("density", _P["density"].default, "air density, kg/m^3 (0: no drag)",
                 lo=0.0, hi=2000.0),
    schema.Float("viscosity", _P["viscosity"].default, "air viscosity, Pa s (0: none)",
                 lo=0.0, hi=1.0),
)
PHYSICS_FIELDS = tuple(o.name for o in PHYSICS_OPTIONS)


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


def _add_sites(body: ET.Element, owner: str, sites) -> None:
  """LIBERO's named regions of an entity, as sites `<owner>_<suffix>` on its root body or, for a
  site that rides on a moving part (a drawer's region), on that part's body."""
  parts = {b.get("name"): b for b in body.iter("body")}
  for s in sites:
    target = parts.get(f"{owner}_{s.joint}_part", body) if s.joint else body
    ET.SubElement(target, "site", name=f"{owner}_{s.suffix}", type="box",
                  pos=" ".join(f"{x:.6g}" for x in s.pos), quat=" ".join(f"{x:.6g}" for x in s.quat),
                  size=" ".join(f"{x:.6g}" for x in s.size), rgba="0 1 0 0", group="5")


# LIBERO's arena (robosuite's empty room, measured in LIBERO's world frame: floor at z = 0): walls as
# (centre x, y; direction along the wall; half length), 3 m high, 2 cm thick. The front wall (behind
# the agentview camera) is left out.
WALLS = (((-2.0, 0.0), (0.0, 1.0), 1.5), ((1.25, 3.0), (1.0, 0.0), 1.75),
         ((1.25, -3.0), (-1.0, 0.0), 1.75), ((-1.25, 2.25), (0.70710678, 0.70710678), 1.06),
         ((-1.25, -2.25), (-0.70710678, 0.70710678), 1.06))
WALL_RGBA = "0.8 0.78 0.74 1"
FLOOR_RGBA = "0.45 0.43 0.42 1"


def _arena(world: ET.Element, spec: TaskSpec) -> None:
  """The room as LIBERO frames the task's table: the collision plane at the table top (z = 0;
  for floor tasks it is the floor), the table's slab and legs down to the floor, the robot's
  pedestal, the floor and LIBERO's walls. Table size, height and colour are LIBERO's per category
  (envs/tasks/data/libero40.json); everything but the plane is visual."""
  from envs.tasks import libero_data  # noqa: PLC0415  (libero_data does not import the builder)
  cat = libero_data.category(spec.table)
  tp = cat["params"]
  on_floor = spec.table == "floor"
  h = float(tp["height"])
  top = np.asarray(tp.get("top_center_world", (0.0, 0.0, h)), float)
  hx, hy = (3.0, 3.0) if on_floor else tuple(tp["half"])
  colour = FLOOR_RGBA if on_floor else " ".join(f"{x:.4g}" for x in cat["rgba"])
  vis = dict(contype="0", conaffinity="0")
  # third size = the renderer's checker tile (envs/render.py): 10 cm on tables, 50 cm on floors
  tile = 0.5 if on_floor else 0.1
  ET.SubElement(world, "geom", name="table", type="plane", size=f"{hx} {hy} {tile}", rgba=colour,
                condim="3", friction="1 0.005 0.0001", **vis)
  if not on_floor:
    thick = float(tp["thickness"])
    ET.SubElement(world, "geom", name="table_slab", type="box", size=f"{hx} {hy} {thick / 2}",
                  pos=f"0 0 {-thick / 2 - 0.001}", rgba=colour, **vis)
    ET.SubElement(world, "geom", name="floor", type="plane", size="3 3 0.5", pos=f"0 0 {-h}",
                  rgba=FLOOR_RGBA, **vis)
    for i, (sx, sy) in enumerate([(1, 1), (1, -1), (-1, 1), (-1, -1)]):
      x, y = sx * (hx - 0.05), sy * (hy - 0.05)
      ET.SubElement(world, "geom", name=f"table_leg{i}", type="capsule", size="0.025",
                    fromto=f"{x} {y} {-thick} {x} {y} {-h}", rgba="0.3 0.25 0.2 1", **vis)
  base = spec.robot_base
  if base[2] + h > 0.05:
    ET.SubElement(world, "geom", name="robot_pedestal", type="capsule", size="0.09",
                  fromto=f"{base[0] - 0.02} {base[1]} {-h} {base[0] - 0.02} {base[1]} {base[2] - 0.02}",
                  rgba="0.25 0.25 0.27 1", **vis)
  for i, ((cx, cy), (ax, ay), half) in enumerate(WALLS):
    ET.SubElement(world, "geom", name=f"wall{i}", type="box", size=f"{half} 1.5 0.01",
                  pos=f"{cx - top[0]:.6g} {cy - top[1]:.6g} {1.5 - top[2]:.6g}",
                  xyaxes=f"{ax} {ay} 0 0 0 1", rgba=WALL_RGBA, **vis)


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
  _arena(world, spec)
  cam_pos, cam_axes, fovy = agentview(spec.table)
  ET.SubElement(world, "camera", name="agentview", pos=" ".join(f"{x:.6g}" for x in cam_pos),
                xyaxes=" ".join(f"{x:.6g}" for x in cam_axes), fovy=f"{fovy:.6g}")
  # The controller's end-effector target lives in mocap_pos/quat[0] so that it is part of
  # mjx.Data (brax's auto-reset then restores it with the rest of the pipeline state).
  target = ET.SubElement(world, "body", name="ee_target", mocap="true")
  ET.SubElement(target, "site", name="ee_target_site", size="0.005", rgba="0 1 0 0", group="5")
  # Robot.
  w_pos, w_axes, w_fovy = wrist_camera()
  for cam in robot.iter("camera"):
    if cam.get("name") == "wrist":
      cam.set("pos", " ".join(f"{x:.6g}" for x in w_pos))
      cam.set("xyaxes", " ".join(f"{x:.6g}" for x in w_axes))
      cam.set("fovy", f"{w_fovy:.6g}")
  for child in robot.find("worldbody"):
    if child.get("name") == "panda_link0":
      child.set("pos", " ".join(f"{x:.6g}" for x in spec.robot_base))
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
  # Contact pairs, each listed once: two rules may both want one (a mug's handle bar lies on the
  # microwave's floor like its side capsule, and meets the shell as a pinched capsule), and a
  # repeated <pair> is a second constraint on the same contact: twice the stiffness, twice the cost.
  contact = ET.SubElement(root, "contact")
  listed: dict[frozenset, dict] = {}

  def pair(g1: str, g2: str, **kw) -> None:
    key = frozenset((g1, g2))
    if key in listed:
      if listed[key] != kw:
        raise ValueError(f"contact pair ({g1}, {g2}) is asked for twice with different "
                         f"parameters: {listed[key]} and {kw}")
      return
    listed[key] = kw
    ET.SubElement(contact, "pair", geom1=g1, geom2=g2, **kw)

  pads = ("left_pad", "right_pad", "left_pad_upper", "right_pad_upper")
  # Rolling friction 0.03 on the pads: a pinched object otherwise rolls about the pads' contact
  # tangent (mostly about the tool axis) under its own weight, 0-20 degrees in 2 s; at 0.03 it
  # turns at most 1.8 (tests/grasp_contact_test.py; RESULTS.md, "A pinched object still turns").
  # The capsule pads touch at points, where a real pad's area resists the roll.
  # an object against the table, another object or a fixture
  rest_kw = dict(condim="3", friction="1 1 0.005 0.0001 0.0001")
  pad_kw = dict(condim="6", friction="1.5 1.5 0.01 0.03 0.03", solref="0.01 1",
                solimp="0.95 0.99 0.001 0.5 2")
  for pad in pads[:2]:
    pair(pad, "table", condim="3")
  for g in ARM_LINKS + ("hand_collision",):
    pair(g, "table", condim="3")
  for b in list(built.values()):
    for g in REACHING:
      pair(g, b.hull, condim="3")
  for fb in fixtures.values():
    for sg in fb.surface:
      for g in REACHING:
        pair(g, sg, condim="3")
    for sg in fb.params.get("low", ()):   # a fixture's base near the table: the hand and the
      for g in ("hand_collision", "left_pad", "right_pad"):   # fingertips are all that reach it
        pair(g, sg, condim="3")
    for sg in fb.params.get("blocks", ()):   # a moving part the arm must not pass (a door)
      for g in REACHING:
        pair(g, sg, condim="3")
  names = [o.name for o in spec.objects]
  groups = [set(g) for g in spec.groups]

  def together(a: str, b: str) -> bool:
    return not groups or any(a in g and b in g for g in groups)

  relations = set(spec.relations)
  holders = {o.name for o in spec.objects if o.kind in HOLDERS}

  def related(a: str, b: str) -> bool:
    """Does some task's init or goal put a on or in b (TaskSpec.relations; else every pair)?"""
    return (a, b) in relations if relations else together(a, b)

  def rests(a: str, b: str) -> bool:
    """May a's feet rest on b's surfaces? What a task relates, and the holders of its own tasks."""
    return related(a, b) or (b in holders and together(a, b))

  for n in names:
    b = built[n]
    for g in b.grasp:
      for pad in pads:
        pair(pad, g, **pad_kw)
    for g in b.surface:
      # fingertips only (enough to keep the hand out of surfaces); not the floor inside a bowl or
      # a mug, where the fingers reach in around the wall they pinch
      if g not in b.grasp and g not in b.params.get("inner_surfaces", ()):
        for pad in pads[:2]:
          pair(pad, g, **pad_kw)
    if b.side:
      # a tall object knocked over lies on the table, or on (and inside the walls of) what a
      # task's init or goal puts it on or in: a can that tips over as it drops into the basket
      # stays in it. (Only those: a side capsule's pairs with a basket's five boxes are 10 contact
      # slots, as many as all its other pairs.)
      lies_on = ["table"]
      for m in names:
        if m != n and related(n, m):
          lies_on += list(built[m].surface) + list(built[m].params.get("walls", ()))
      for fname, fb in fixtures.items():
        if related(n, fname):
          lies_on += list(fb.surface)
      for s in lies_on:
        for g in (b.side,) + tuple(b.params.get("lying", ())):   # (a mug's handle bar too)
          pair(g, s, **rest_kw)
    for g in b.support:
      pair(g, "table", **rest_kw)
      for m in names:
        if m != n and rests(n, m):
          for s in built[m].surface:
            pair(g, s, **rest_kw)
      for fname, fb in fixtures.items():
        if not rests(n, fname):
          continue
        for s in fb.surface:
          pair(g, s, **rest_kw)
    # what a task puts in a fixture with a door (a box) meets the door and every box of the shell
    # (floor, roof, back, sides): through the hull where MJX collides it with a box, else through
    # the capsules the fingers pinch (a mug's hull is a cylinder). Feet and side capsule alone
    # left a tilted mug's wall free to pass into the floor box, and a door swept it there.
    enclosed = [s for fname, fb in fixtures.items()
                if related(n, fname) and fb.params.get("blocks")
                for s in tuple(fb.params["blocks"]) + tuple(fb.surface)]
    if enclosed:
      types = {g.get("name"): g.get("type", "sphere") for g in ET.fromstring(b.xml).iter("geom")}
      blockers = [b.hull] if types.get(b.hull) in _BOX_PARTNERS else \
          [g for g in b.grasp if types.get(g) in _BOX_PARTNERS]
      for s in enclosed:
        for g in blockers:
          pair(g, s, **rest_kw)
  for fb in fixtures.values():
    for g in fb.grasp:               # handles, doors, knobs: the fingers push and pull them
      for pad in pads:
        pair(pad, g, condim="3")
    for s in fb.surface:             # fingertips stay out of cabinet tops, drawer floors, plates
      for pad in pads[:2]:
        pair(pad, s, condim="3")
  ET.indent(root)
  return ET.tostring(root, encoding="unicode"), built, fixtures


def build(spec: TaskSpec, physics: PhysicsConfig = PhysicsConfig()) -> BuiltTask:
  xml, built, fixtures = build_scene(spec, physics)
  mj_model = mujoco.MjModel.from_xml_string(xml)
  return BuiltTask(spec, xml, mj_model, built, physics, fixtures)
