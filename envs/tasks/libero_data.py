"""LIBERO's 40 tasks (libero_spatial, libero_object, libero_goal, libero_10) as TaskSpecs, read from
the repository's converted data (envs/tasks/data/libero40.json + libero40_init.npz; FORMAT.md says
how they were made and what every field means). Nothing here needs LIBERO or its assets.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from envs.tasks.spec import (FixtureSpec, JointSpec, ObjectSpec, Predicate, Region, SiteSpec,
                             TaskSpec)

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
# Fixture categories that are the scene's table or floor (the builder's table plane stands in).
SURFACES = ("table", "kitchen_table", "living_room_table", "study_table", "floor")


@functools.lru_cache(maxsize=1)
def _raw() -> dict:
  path = os.path.join(DATA_DIR, "libero40.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: it ships with the repository "
                            "(regenerate it with tools/convert_libero.py)")
  with open(path) as f:
    return json.load(f)


@functools.lru_cache(maxsize=1)
def _init() -> dict[str, np.ndarray]:
  with np.load(os.path.join(DATA_DIR, "libero40_init.npz"), allow_pickle=False) as z:
    return {k: np.asarray(z[k]) for k in z.files}


def _params(cat: dict) -> tuple:
  """The kind's fitted params, plus its frame in the root frame ("frame": pos + quat) and the
  measured cross-section fill (box vs cylinder), as hashable (key, value) pairs."""
  d = dict(cat.get("params") or {})
  if cat.get("frame"):
    d["frame"] = list(cat["frame"]["pos"]) + list(cat["frame"]["quat"])
  if cat.get("cross_section_fill") is not None:
    d["cross_section_fill"] = cat["cross_section_fill"]
  out = []
  for k, v in sorted(d.items()):
    if isinstance(v, str):
      continue
    out.append((k, tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)))
  return tuple(out)


def _rgba(c) -> tuple[float, float, float, float]:
  c = list(c or (0.5, 0.5, 0.5, 1.0))
  return (float(c[0]), float(c[1]), float(c[2]), 1.0)


def _sites(cat: dict) -> tuple[SiteSpec, ...]:
  out = []
  for suffix, s in sorted((cat.get("sites") or {}).items()):
    out.append(SiteSpec(suffix, tuple(s["pos"]), tuple(s.get("quat", (1, 0, 0, 0))),
                        tuple(s.get("size", (0.01, 0.01, 0.01))), s.get("joint") or ""))
  return tuple(out)


def _joints(cat: dict) -> tuple[JointSpec, ...]:
  out = []
  for j in cat.get("joints") or ():
    lo, hi = j.get("part_aabb", [[-0.01] * 3, [0.01] * 3])
    out.append(JointSpec(j["suffix"], j["type"], tuple(j["axis"]), tuple(j["pos"]), tuple(j["range"]),
                         tuple(lo), tuple(hi), damping=float(j.get("damping", 1.0)),
                         armature=float(j.get("armature", 0.01)),
                         frictionloss=float(j.get("frictionloss", 0.0)),
                         stiffness=float(j.get("stiffness", 0.0))))
  return tuple(out)


def category(name: str) -> dict:
  cats = _raw()["categories"]
  if name not in cats:
    raise KeyError(f"unknown LIBERO category {name!r}; known: {sorted(cats)}")
  return cats[name]


def object_spec(name: str, cat_name: str) -> ObjectSpec:
  c = category(cat_name)
  # LIBERO's masses (a 6 g bowl, 9 kg cabinet) are not used: the kinds' defaults keep the
  # pinch contacts well conditioned at our 5 ms step (envs/tasks/data/FORMAT.md)
  return ObjectSpec(name, c["kind"], _rgba(c.get("rgba")), (), None, cat_name, _params(c), _sites(c))


def fixture_spec(name: str, cat_name: str) -> FixtureSpec:
  c = category(cat_name)
  return FixtureSpec(name, c["kind"], rgba=_rgba(c.get("rgba")), category=cat_name,
                     params=_params(c), joints=_joints(c), sites=_sites(c))


def _regions(t: dict) -> tuple[Region, ...]:
  out = []
  for name, r in sorted(t["regions"].items()):
    ranges = r.get("ranges") or []
    if not ranges:
      continue                        # an entity's own site (`top_region`), not a table zone
    x0, y0, x1, y1 = ranges[0]
    # LIBERO turns only fixtures by a region's yaw range; objects keep their category's fixed
    # rotation (yaw=None: the suite keeps the template state's orientation)
    yaw = tuple(r["yaw"]) if r.get("yaw") else None
    out.append(Region(name, x0, y0, x1, y1, yaw=yaw))
  return tuple(out)


def _zones(t: dict) -> tuple[SiteSpec, ...]:
  out = []
  for name, s in sorted((t.get("goal_sites") or {}).items()):
    if s.get("parent") is None:
      out.append(SiteSpec(name, tuple(s["pos"]), tuple(s.get("quat", (1, 0, 0, 0))), tuple(s["size"])))
  return tuple(out)


def _task(t: dict) -> TaskSpec:
  objects = tuple(object_spec(o["name"], o["category"]) for o in t["objects"])
  fixtures = tuple(fixture_spec(f["name"], f["category"]) for f in t["fixtures"]
                   if f["category"] not in SURFACES)
  ms = t.get("max_steps") or {}
  return TaskSpec(
      name=t["name"], language=t["language"], objects=objects, regions=_regions(t),
      init=tuple(Predicate(p[0].lower(), tuple(p[1:])) for p in t["init"]),
      goal=tuple(Predicate(p[0].lower(), tuple(p[1:])) for p in t["goal"]),
      fixtures=fixtures, suite=t["suite"], task_id=int(t["task_id"]),
      max_steps=int(ms.get("openpi_openvla_oft", 220)), zones=_zones(t),
      num_steps_wait=int(t.get("num_steps_wait", 10)), max_steps_rl=int(ms.get("simplevla_rl", 512)),
      robot_base=robot_base(t["table_category"]), table=t["table_category"])


def robot_base(table_category: str) -> tuple[float, float, float]:
  """Where LIBERO mounts the arm's base for a table category, in the table frame (measured)."""
  from envs.robots import panda  # noqa: PLC0415
  return tuple(float(x) for x in panda.libero_facts()["tables"][table_category]["link0_pos"])


@functools.lru_cache(maxsize=None)
def tasks(suite: str) -> tuple[TaskSpec, ...]:
  """The suite's 10 tasks in LIBERO's order."""
  if suite not in SUITES:
    raise ValueError(f"unknown LIBERO suite {suite!r}; known: {list(SUITES)}")
  return tuple(_task(t) for t in _raw()["tasks"] if t["suite"] == suite)


def _index(spec: TaskSpec) -> int:
  for i, t in enumerate(_raw()["tasks"]):
    if t["suite"] == spec.suite and int(t["task_id"]) == spec.task_id:
      return i
  raise KeyError(f"{spec.suite}/{spec.task_id} is not one of the 40 LIBERO tasks")


def init_states(spec: TaskSpec) -> dict[str, np.ndarray]:
  """LIBERO's 50 initial states of the task, converted: `pose` f32[50, E, 7] (objects then
  fixtures, table frame, w-x-y-z quaternion), `joint_qpos` f32[50, J] (`joint_names`), `robot_qpos`
  f32[50, 9], plus the entity and joint names."""
  i = _index(spec)
  t = _raw()["tasks"][i]
  z = _init()
  return {"pose": z[f"t{i}_pose"], "joint_qpos": z[f"t{i}_joint_qpos"],
          "robot_qpos": z[f"t{i}_robot_qpos"],
          "entities": tuple(o["name"] for o in t["objects"]) + tuple(f["name"] for f in t["fixtures"]
                                                                    if f["category"] not in SURFACES),
          "joint_names": tuple(t.get("joints") or ())}


def source() -> dict:
  return dict(_raw().get("source") or {})
