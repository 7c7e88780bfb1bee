"""Procedural pick-and-place tasks for pretraining, built from LIBERO's object categories in new
combinations and placements, and guaranteed disjoint from LIBERO's 40 evaluation tasks.

`pretrain_specs(num_tasks, seed)` draws tasks "put the <object> on the <plate | bowl>" / "... in the
basket" on LIBERO's main table: one movable object (a box, can, bottle or bowl category the scripted
experts grasp), one holder (plate, black bowl or basket) and sometimes one distractor, each in a
small region drawn anew per task. A task's goal is one On / In predicate (the skills
envs.tasks.experts has). No task has the instruction of one of the 40, nor the same goal predicate
set over the same categories (`signature`): the generator skips such draws and `check_disjoint`
asserts it.

These tasks have no LIBERO initial states; `init_states(spec)` makes 50 per task in the format of
libero_data.init_states (each entity uniform in its region, at the height and orientation LIBERO's
own states give its category), from a numpy stream seeded by the task alone: the evaluation states
of the `libero_pretrain` env. Its training resets re-draw layouts in the regions from JAX's stream
(envs.tasks.libero_suite), so training and evaluation draws never coincide.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from envs.tasks import libero_data
from envs.tasks.spec import In, On, Predicate, Region, TaskSpec

SUITE = "libero_pretrain"
NUM_STATES = 50           # evaluation states per task, as LIBERO's
MAX_TASKS = 64            # distinct instructions: 16 (object, holder) pairs x 4 templates
# Movable objects the experts grasp (kinds box, cylinder, bowl), by LIBERO category, with the
# words an instruction uses for them.
OBJECTS = {
    "alphabet_soup": "alphabet soup", "bbq_sauce": "bbq sauce", "butter": "butter",
    "chocolate_pudding": "chocolate pudding", "cookies": "cookie box",
    "cream_cheese": "cream cheese", "ketchup": "ketchup", "milk": "milk",
    "orange_juice": "orange juice", "salad_dressing": "salad dressing",
    "tomato_sauce": "tomato sauce", "glazed_rim_porcelain_ramekin": "ramekin",
    "akita_black_bowl": "black bowl",
}
# Holders: category -> (predicate, the goal's second argument as a suffix of the entity name, words)
HOLDERS = {
    "plate": ("on", "", "plate"),
    "basket": ("in", "_contain_region", "basket"),
    "akita_black_bowl": ("on", "", "black bowl"),
}
# Objects small enough to go in the bowl.
FITS_BOWL = ("butter", "cream_cheese", "chocolate_pudding")
TEMPLATES = {
    "on": ("put the {o} on the {h}", "place the {o} on the {h}",
           "pick up the {o} and put it on the {h}", "move the {o} onto the {h}"),
    "in": ("put the {o} in the {h}", "drop the {o} into the {h}",
           "pick up the {o} and put it in the {h}", "place the {o} inside the {h}"),
}
# Where regions go on the main table (table frame, metres): the arm reaches all of it in LIBERO's
# spatial and goal scenes.
AREA = ((-0.20, 0.14), (-0.28, 0.28))
REGION_HALF = 0.025
MIN_GAP = {"basket": 0.24, "plate": 0.20, "akita_black_bowl": 0.18}   # centre distance to the object
DISTRACTOR_GAP = 0.16
MAX_TEXT_BYTES = 96        # the LIBERO presets' model.max_text_len (byte tokens)


def _entity(cat: str) -> str:
  return f"{cat}_1"


def signature(spec: TaskSpec) -> frozenset:
  """The goal as a set of (predicate, argument categories): an argument naming an entity becomes
  its category, one naming an entity's site becomes (category, site suffix), a table zone stays."""
  ents = {e.name: e.category for e in spec.objects + spec.fixtures}

  def arg(a: str):
    if a in ents:
      return ents[a]
    owner = [n for n in ents if a.startswith(n + "_")]
    if owner:
      n = max(owner, key=len)
      return (ents[n], a[len(n) + 1:])
    return a

  return frozenset((p.name,) + tuple(arg(a) for a in p.args) for p in spec.goal)


@functools.lru_cache(maxsize=1)
def libero40() -> tuple[TaskSpec, ...]:
  return tuple(t for s in libero_data.SUITES for t in libero_data.tasks(s))


def check_disjoint(specs) -> None:
  """ValueError naming the task when a spec shares its instruction or its goal signature with one
  of LIBERO's 40 tasks."""
  langs = {t.language: t for t in libero40()}
  sigs = {signature(t): t for t in libero40()}
  for s in specs:
    hit = langs.get(s.language) or sigs.get(signature(s))
    if hit is not None:
      raise ValueError(f"pretraining task {s.name!r} ({s.language!r}) repeats LIBERO's "
                       f"{hit.suite} task {hit.task_id} ({hit.language!r})")


def _candidates() -> list[tuple[str, str]]:
  """(object, holder) category pairs whose goal is none of the 40's, in a fixed order."""
  sigs = {signature(t) for t in libero40()}
  out = []
  for h, (pred, suffix, _) in HOLDERS.items():
    for o in OBJECTS:
      if o == h or (h == "akita_black_bowl" and o not in FITS_BOWL):
        continue
      if h == "basket" and o == "akita_black_bowl":
        continue
      goal = frozenset({(pred, o, (h, suffix[1:]) if suffix else h)})
      if goal not in sigs:
        out.append((o, h))
  return out


def _region_centres(rng: np.random.Generator, holder: str, distractor: bool):
  """Centres of the object's, the holder's (and the distractor's) regions, apart enough."""
  (x0, x1), (y0, y1) = AREA
  for _ in range(1000):
    pts = rng.uniform((x0, y0), (x1, y1), size=(3 if distractor else 2, 2))
    if np.linalg.norm(pts[0] - pts[1]) < MIN_GAP[holder]:
      continue
    if distractor and min(np.linalg.norm(pts[2] - pts[0]), np.linalg.norm(pts[2] - pts[1])) < \
       DISTRACTOR_GAP + (0.06 if holder == "basket" else 0.0):
      continue
    return pts
  raise RuntimeError("no layout found")   # unreachable for the AREA above


def _region(name: str, c) -> Region:
  return Region(name, float(round(c[0] - REGION_HALF, 4)), float(round(c[1] - REGION_HALF, 4)),
                float(round(c[0] + REGION_HALF, 4)), float(round(c[1] + REGION_HALF, 4)), yaw=None)


def pretrain_specs(num_tasks: int, seed: int = 0) -> tuple[TaskSpec, ...]:
  """`num_tasks` distinct procedural tasks (a pure function of (num_tasks, seed): the first n of
  a longer list are the same tasks). Each task's entities are `<category>_1`, so one category is one
  body in a LiberoSuite's union scene. Raises ValueError for num_tasks outside [1, MAX_TASKS]."""
  if not isinstance(num_tasks, (int, np.integer)) or not 1 <= num_tasks <= MAX_TASKS:
    raise ValueError(f"num_tasks={num_tasks!r}: must be an integer in [1, {MAX_TASKS}]")
  rng = np.random.default_rng([int(seed), 0x9E7])
  pairs = _candidates()
  langs40 = {t.language for t in libero40()}
  seen, out = set(), []
  limit = len(pairs) * max(len(v) for v in TEMPLATES.values())
  if num_tasks > limit:
    raise ValueError(f"num_tasks={num_tasks}: only {limit} distinct pretraining instructions exist")
  while len(out) < num_tasks:
    o, h = pairs[rng.integers(len(pairs))]
    pred, suffix, hwords = HOLDERS[h]
    lang = TEMPLATES[pred][rng.integers(len(TEMPLATES[pred]))].format(o=OBJECTS[o], h=hwords)
    distractor = bool(rng.random() < 0.5)
    pts = _region_centres(rng, h, distractor)
    if lang in seen or lang in langs40:
      continue
    seen.add(lang)
    cats = [o, h]
    if distractor:
      others = [c for c in OBJECTS if c not in (o, h)]
      cats.append(others[rng.integers(len(others))])
    objects = tuple(libero_data.object_spec(_entity(c), c) for c in cats)
    regions = tuple(_region(f"main_table_{_entity(c)}_init_region", p) for c, p in zip(cats, pts))
    init = tuple(On(_entity(c), r.name) for c, r in zip(cats, regions))
    goal_fn = In if pred == "in" else On
    goal = (goal_fn(_entity(o), _entity(h) + suffix),)
    k = len(out)
    out.append(TaskSpec(
        name=f"pretrain_{k:03d}_" + lang.replace(" ", "_"), language=lang, objects=objects,
        regions=regions, init=init, goal=goal, suite=SUITE, max_steps=220, task_id=k,
        num_steps_wait=10, max_steps_rl=512, robot_base=libero_data.robot_base("table"),
        table="table"))
  specs = tuple(out)
  check_disjoint(specs)
  return specs


@functools.lru_cache(maxsize=None)
def _rest_pose(cat: str) -> np.ndarray:
  """f32[7]: the lowest pose (table frame, w-x-y-z) LIBERO's converted initial states give an
  object of category `cat`: resting on its surface, in LIBERO's orientation for its mesh."""
  best = None
  for t in libero40():
    names = [o.name for o in t.objects if o.category == cat]
    if not names:
      continue
    st = libero_data.init_states(t)
    for n in names:
      p = st["pose"][:, st["entities"].index(n)]
      i = int(np.argmin(p[:, 2]))
      if best is None or p[i, 2] < best[2]:
        best = np.array(p[i], np.float32)
  if best is None:
    raise KeyError(f"category {cat!r} is in none of LIBERO's 40 tasks' initial states")
  return best


def init_states(spec: TaskSpec) -> dict:
  """NUM_STATES evaluation states of a pretraining task, in libero_data.init_states' format
  (`pose` f32[N, E, 7], `joint_qpos` f32[N, 0], `robot_qpos` f32[N, 9], `entities`, `joint_names`):
  each object uniform in its region (yaw as LIBERO holds its category), 5 mm above its rest height
  (the reset's warm-up settles it). Seeded by the task's name and regions only."""
  if spec.suite != SUITE:
    raise ValueError(f"{spec.name!r} is not a pretraining task (suite {spec.suite!r})")
  key = zlib.crc32(repr((spec.name, spec.regions)).encode())
  rng = np.random.default_rng([key, 0xE7A1])
  ents = tuple(o.name for o in spec.objects)
  pose = np.zeros((NUM_STATES, len(ents), 7), np.float32)
  for e, o in enumerate(spec.objects):
    r = spec.placement(o.name)
    rest = _rest_pose(o.category)
    pose[:, e, 0] = rng.uniform(r.x0, r.x1, NUM_STATES)
    pose[:, e, 1] = rng.uniform(r.y0, r.y1, NUM_STATES)
    pose[:, e, 2] = rest[2] + 0.005
    pose[:, e, 3:] = rest[3:]
  return {"pose": pose, "joint_qpos": np.zeros((NUM_STATES, 0), np.float32),
          "robot_qpos": np.zeros((NUM_STATES, 9), np.float32), "entities": ents, "joint_names": ()}
