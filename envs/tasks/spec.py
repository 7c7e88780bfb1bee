"""LIBERO-style task specifications as frozen data: objects, fixtures, regions, init and goal predicates.

A task is what a BDDL file says, in Python: the movable objects (kind + size + colour), fixtures,
named placement regions on the table (LIBERO's `(:ranges (x0 y0 x1 y1))`, metres in the table frame:
x away from the robot, y to its left, z up from the table top), where each object starts, and the goal
as a conjunction of predicates. `envs.tasks.builder` turns a spec into MJCF / MjModel / mjx.Model,
`envs.tasks.predicates` evaluates the goal, `envs.tasks.libero_env.LiberoTask` runs it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

RGBA = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """A movable object (free joint) built from primitives by `envs.tasks.objects.KINDS[kind]`.

  `size` is the kind's own parameter tuple (see objects.py: bowl = (outer radius, height), plate =
  (radius, thickness), block = (half-size,)...); empty means the kind's default.
  """
  name: str
  kind: str
  rgba: RGBA = (0.5, 0.5, 0.5, 1.0)
  size: tuple[float, ...] = ()
  mass: Optional[float] = None
  category: str = ""
  # kind parameters by name (fitted to LIBERO's meshes: envs/tasks/data/FORMAT.md), as sorted
  # (key, value) pairs so the spec stays hashable; values are floats or tuples of floats
  params: tuple[tuple[str, object], ...] = ()
  sites: tuple["SiteSpec", ...] = ()

  def param(self, key: str, default=None):
    return dict(self.params).get(key, default)


@dataclasses.dataclass(frozen=True)
class JointSpec:
  """An articulation of a fixture (drawer slide, door hinge, knob), in the fixture's root frame.
  `part_lo/part_hi` bound the moving part at q = 0. LIBERO's joint name is `<fixture>_<suffix>`."""
  suffix: str
  type: str                                  # "slide" | "hinge"
  axis: tuple[float, float, float]
  pos: tuple[float, float, float]
  range: tuple[float, float]
  part_lo: tuple[float, float, float]
  part_hi: tuple[float, float, float]
  damping: float = 1.0
  armature: float = 0.01
  frictionloss: float = 0.0
  stiffness: float = 0.0


@dataclasses.dataclass(frozen=True)
class SiteSpec:
  """A named region of an object or fixture (LIBERO's `<entity>_<suffix>` sites), root frame;
  `joint` = the suffix of the joint whose moving part carries it (a drawer's region), else ""."""
  suffix: str
  pos: tuple[float, float, float]
  quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
  size: tuple[float, float, float] = (0.01, 0.01, 0.01)
  joint: str = ""


@dataclasses.dataclass(frozen=True)
class FixtureSpec:
  """A fixed (or articulated) scene element: cabinet, stove, microwave, rack, caddy, at `pos` /
  `yaw` in the table frame (a suite scene sets the pose per environment at reset)."""
  name: str
  kind: str
  region: str = ""
  yaw: float = 0.0
  pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
  rgba: RGBA = (0.5, 0.4, 0.3, 1.0)
  size: tuple[float, ...] = ()
  category: str = ""
  params: tuple[tuple[str, object], ...] = ()
  joints: tuple[JointSpec, ...] = ()
  sites: tuple[SiteSpec, ...] = ()

  def param(self, key: str, default=None):
    return dict(self.params).get(key, default)


@dataclasses.dataclass(frozen=True)
class Region:
  """An axis-aligned placement box on the table, LIBERO's `(x0, y0, x1, y1)` (table frame, metres).

  `yaw` is the (lo, hi) range of the object's random rotation about z; LIBERO's objects are placed with
  a random yaw unless the region says otherwise.
  """
  name: str
  x0: float
  y0: float
  x1: float
  y1: float
  yaw: Optional[tuple[float, float]] = (0.0, 0.0)   # None: keep the orientation it has

  @property
  def center(self) -> tuple[float, float]:
    return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

  @property
  def half_size(self) -> tuple[float, float]:
    return (0.5 * (self.x1 - self.x0), 0.5 * (self.y1 - self.y0))


# Predicates: (name, *args). Names are LIBERO's, lower-cased when evaluated.
@dataclasses.dataclass(frozen=True)
class Predicate:
  name: str
  args: tuple[str, ...]


def On(a: str, b: str) -> Predicate:  # noqa: N802  (LIBERO's spelling)
  return Predicate("on", (a, b))


def In(a: str, b: str) -> Predicate:  # noqa: N802
  return Predicate("in", (a, b))


def Open(x: str) -> Predicate:  # noqa: N802
  return Predicate("open", (x,))


def Close(x: str) -> Predicate:  # noqa: N802
  return Predicate("close", (x,))


def TurnOn(x: str) -> Predicate:  # noqa: N802
  return Predicate("turnon", (x,))


def TurnOff(x: str) -> Predicate:  # noqa: N802
  return Predicate("turnoff", (x,))


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One LIBERO task. `init` are On(object, region) placements (the object's origin is drawn
  uniformly in the region); `goal` is the conjunction checked every control step."""
  name: str
  language: str
  objects: tuple[ObjectSpec, ...]
  regions: tuple[Region, ...]
  init: tuple[Predicate, ...]
  goal: tuple[Predicate, ...]
  fixtures: tuple[FixtureSpec, ...] = ()
  suite: str = ""
  max_steps: int = 220   # openpi / openvla-oft limits: 220 spatial, 280 object, 300 goal, 520 libero_10
  task_id: int = 0       # index within the suite (LIBERO's task order)
  # LIBERO's table zones named in init / goal predicates (`main_table_stove_front_region`), as sites
  # in the table frame; `suffix` holds the zone's full name
  zones: tuple[SiteSpec, ...] = ()
  num_steps_wait: int = 10          # LIBERO's no-op warm-up steps before an evaluation episode
  max_steps_rl: int = 512           # SimpleVLA-RL's horizon for every suite
  # a union scene of several tasks (envs.tasks.libero_suite): the entity names of each task; the
  # builder pairs contacts only between entities that share a task (empty: all share one)
  groups: tuple[tuple[str, ...], ...] = ()
  # with `groups`: (object, entity) pairs some task's init or goal puts one on or in the other;
  # an object's feet collide with another entity's surfaces only for these, and for the holders
  # (plates, bowls, baskets) of its own tasks (empty: every pair that shares a task)
  relations: tuple[tuple[str, str], ...] = ()
  # the arm's base (panda_link0) in the table frame: LIBERO mounts it per table (MountedPanda 0.66 m
  # behind a main / kitchen table's centre, 12 mm above its top; envs/robots/data/libero_robot.json)
  robot_base: tuple[float, float, float] = (-0.66, 0.0, 0.012)
  # LIBERO's table category (its cameras are posed per table): table | kitchen_table |
  # living_room_table | study_table | floor
  table: str = "table"

  def object(self, name: str) -> ObjectSpec:
    for o in self.objects:
      if o.name == name:
        return o
    raise KeyError(f"task {self.name!r} has no object {name!r}")

  def region(self, name: str) -> Region:
    for r in self.regions:
      if r.name == name:
        return r
    raise KeyError(f"task {self.name!r} has no region {name!r}")

  def placement(self, obj: str) -> Region:
    for p in self.init:
      if p.name == "on" and p.args[0] == obj:
        return self.region(p.args[1])
    raise KeyError(f"task {self.name!r} does not place {obj!r}")


# ------------------------------------------------------------------------------------------------
# Tasks.

BLACK = (0.06, 0.06, 0.07, 1.0)
WHITE = (0.92, 0.92, 0.9, 1.0)

# LIBERO-spatial-like: one black bowl and a plate, each in a small region (wider here than LIBERO's
# 2 cm ranges so initial layouts vary: the env's randomisation is the region).
BOWL_ON_PLATE = TaskSpec(
    name="pick_up_the_black_bowl_and_place_it_on_the_plate",
    language="pick up the black bowl and place it on the plate",
    suite="libero_spatial",
    objects=(
        ObjectSpec("akita_black_bowl_1", "bowl", BLACK),
        ObjectSpec("plate_1", "plate", WHITE),
    ),
    regions=(
        Region("bowl_region", -0.14, -0.20, 0.02, -0.04, yaw=(-3.14159, 3.14159)),
        Region("plate_region", -0.10, 0.08, 0.06, 0.20),
    ),
    init=(On("akita_black_bowl_1", "bowl_region"), On("plate_1", "plate_region")),
    goal=(On("akita_black_bowl_1", "plate_1"),),
    max_steps=220,
)

TASKS: dict[str, TaskSpec] = {BOWL_ON_PLATE.name: BOWL_ON_PLATE}
