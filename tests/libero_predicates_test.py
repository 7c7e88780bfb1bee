"""LIBERO's goal predicates on fixtures and sites, through the MJX path the env uses.

A hand-built scene (a bowl, a basket, a cabinet with drawers, a stove with a knob, a table zone) is
put in hand-placed configurations, near misses included; each predicate is compiled as the env
compiles it and evaluated on mjx.forward under jit, against an oracle written here from
LIBERO_PREDICATES.md in numpy with C MuJoCo's contacts.
"""
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from envs.tasks import builder, predicates
from envs.tasks.spec import (FixtureSpec, ObjectSpec, Predicate, SiteSpec, TaskSpec)

ZONE = SiteSpec("main_table_front_region", (0.2, 0.0, -0.004), size=(0.04, 0.04, 0.007))
SPEC = TaskSpec(
    name="predicates", language="", regions=(), init=(), goal=(),
    objects=(ObjectSpec("bowl_1", "bowl", (0.1, 0.1, 0.1, 1)),
             ObjectSpec("basket_1", "basket", (0.6, 0.5, 0.3, 1),
                        sites=(SiteSpec("contain_region", (0, 0, 0.05), size=(0.08, 0.06, 0.05)),))),
    fixtures=(FixtureSpec("cabinet_1", "cabinet", pos=(-0.1, -0.3, 0.0),
                          sites=(SiteSpec("top_region", (0.0, 0.0, 0.275), size=(0.06, 0.1, 0.04),
                                          joint="top_level"),)),
              FixtureSpec("stove_1", "stove", pos=(-0.1, 0.25, 0.0),
                          sites=(SiteSpec("cook_region", (0.0, 0.0, 0.04), size=(0.075, 0.075, 0.0025)),))),
    zones=(ZONE,))
CAB, STOVE = (-0.1, -0.3, 0.0), (-0.1, 0.25, 0.0)
BASKET = (0.15, 0.3)
PREDS = {
    "open": Predicate("open", ("cabinet_1_top_region",)),
    "close": Predicate("close", ("cabinet_1_top_region",)),
    "turnon": Predicate("turnon", ("stove_1",)),
    "turnoff": Predicate("turnoff", ("stove_1",)),
    "on_stove": Predicate("on", ("bowl_1", "stove_1_cook_region")),
    "in_basket": Predicate("in", ("bowl_1", "basket_1_contain_region")),
    "in_drawer": Predicate("in", ("bowl_1", "cabinet_1_top_region")),
    "on_zone": Predicate("on", ("bowl_1", "main_table_front_region")),
}


@pytest.fixture(scope="module")
def scene():
  built = builder.build(SPEC)
  m = built.mj_model
  contact = {n: tuple(dict.fromkeys(b.support + b.surface + b.grasp)) for n, b in built.objects.items()}
  contact.update({n: tuple(dict.fromkeys(b.surface + b.grasp)) for n, b in built.fixtures.items()})
  kinds = {f.name: f.kind for f in SPEC.fixtures}
  fns = {k: predicates.compile_predicate(p, SPEC, m, contact, kinds) for k, p in PREDS.items()}
  return built, m, contact, fns


def _adr(m, joint):
  return m.jnt_qposadr[m.joint(joint).id]


def _config(m, built, *, drawer=0.0, knob=0.0, bowl=(0.3, -0.3, 0.0), settle=0):
  """C MuJoCo data for one hand-placed configuration (bowl position in the table frame)."""
  d = mujoco.MjData(m)
  d.qpos[_adr(m, "cabinet_1_top_level")] = drawer
  d.qpos[_adr(m, "stove_1_button")] = knob
  qb = _adr(m, "basket_1_joint")
  d.qpos[qb:qb + 7] = (*BASKET, 0, 1, 0, 0, 0)
  qa = _adr(m, "bowl_1_joint")
  d.qpos[qa:qa + 7] = (*bowl, 1, 0, 0, 0)
  # hold everything but the bowl while it settles
  hold = d.qpos.copy()
  for _ in range(settle):
    mujoco.mj_step(m, d)
    keep = np.ones(m.nq, bool)
    keep[qa:qa + 7] = False
    d.qpos[keep] = hold[keep]
  d.qvel[:] = 0
  mujoco.mj_forward(m, d)
  return d


def _oracle(m, built, d, contact) -> dict:
  """LIBERO_PREDICATES.md, in numpy on C MuJoCo's data."""
  def touching(a, b):
    ga = {m.geom(g).id for g in contact[a]}
    gb = {m.geom(g).id for g in contact[b]}
    return any(((c.geom1 in ga and c.geom2 in gb) or (c.geom1 in gb and c.geom2 in ga)) and c.dist < 0
               for c in d.contact[:d.ncon])

  def site(name):
    i = m.site(name).id
    return d.site_xpos[i], d.site_xmat[i].reshape(3, 3), m.site_size[i]

  def on_site(p, pos, mat, h):
    v = mat @ (p - pos)
    return bool(h[2] - 0.005 < v[2] < h[2] + 0.10 and abs(v[0]) < h[0] and abs(v[1]) < h[1])

  def in_site(p, pos, mat, h):
    e = np.abs(mat @ h)
    lb, ub = pos - e, pos + e
    lb[2] -= 0.01
    return bool(np.all((lb < p) & (p < ub)))

  p = d.xpos[m.body("bowl_1").id]
  q_drawer = d.qpos[_adr(m, "cabinet_1_top_level")]
  q_knob = d.qpos[_adr(m, "stove_1_button")]
  zone_mat = np.eye(3)
  return {
      "open": bool(q_drawer < -0.14), "close": bool(q_drawer > 0.0),
      "turnon": bool(q_knob >= 0.5), "turnoff": bool(q_knob < 0.0),
      "on_stove": on_site(p, *site("stove_1_cook_region")) and touching("stove_1", "bowl_1"),
      "in_basket": in_site(p, *site("basket_1_contain_region")),
      "in_drawer": in_site(p, *site("cabinet_1_top_region")),
      "on_zone": on_site(p, np.asarray(ZONE.pos), zone_mat, np.asarray(ZONE.size)),
  }


def _cases(m, built):
  stove_top = built.fixtures["stove_1"].params["top"]
  cook = np.asarray(STOVE) + np.array([0.0, 0.0, 0.0])
  drawer_site = np.array(CAB) + np.array([0.0, 0.0, 0.275])
  return [
      # name, configuration, predicates that must hold (every other one must not)
      ("drawer open past -0.14", dict(drawer=-0.15), {"open"}),
      ("drawer at -0.13: neither", dict(drawer=-0.13), set()),
      ("drawer at exactly 0: not closed (strict)", dict(drawer=0.0), set()),
      ("drawer at +0.005: closed", dict(drawer=0.005), {"close"}),
      ("knob at 0.5: on", dict(knob=0.5, drawer=-0.05), {"turnon"}),
      ("knob at 0.49: neither", dict(knob=0.49, drawer=-0.05), set()),
      ("knob at -0.004: off", dict(knob=-0.004, drawer=-0.05), {"turnoff"}),
      ("bowl resting on the cook plate", dict(drawer=-0.05, knob=0.2,
                                            bowl=(cook[0], cook[1], stove_top + 0.002), settle=60),
       {"on_stove"}),
      ("bowl 2 cm above the cook plate: no contact", dict(drawer=-0.05, knob=0.2,
                                                          bowl=(cook[0], cook[1], stove_top + 0.02)), set()),
      ("bowl beside the stove on the table", dict(drawer=-0.05, knob=0.2,
                                                  bowl=(cook[0], cook[1] - 0.25, 0.0), settle=40), set()),
      ("bowl in the basket", dict(drawer=-0.05, knob=0.2, bowl=(BASKET[0], BASKET[1], 0.03)),
       {"in_basket"}),
      ("bowl just outside the basket's region", dict(drawer=-0.05, knob=0.2,
                                                     bowl=(BASKET[0] + 0.09, BASKET[1], 0.03)), set()),
      ("bowl in the drawer, drawer open: rides with it",
       dict(drawer=-0.15, knob=0.2, bowl=(drawer_site[0] - 0.15, drawer_site[1], drawer_site[2])),
       {"open", "in_drawer"}),
      ("same bowl position, drawer shut: not in it",
       dict(drawer=0.005, knob=0.2, bowl=(drawer_site[0] - 0.15, drawer_site[1], drawer_site[2])),
       {"close"}),
      ("bowl on the table zone", dict(drawer=-0.05, knob=0.2, bowl=(0.21, 0.01, 0.0), settle=20),
       {"on_zone"}),
      ("bowl 5 cm beside the zone", dict(drawer=-0.05, knob=0.2, bowl=(0.26, 0.0, 0.0), settle=20), set()),
  ]


def test_fixture_and_site_predicates_match_libero(scene):
  built, m, contact, fns = scene
  cases = _cases(m, built)
  datas, oracles = [], []
  for _, cfg, _ in cases:
    d = _config(m, built, **cfg)
    oracles.append(_oracle(m, built, d, contact))
    datas.append(mjx.put_data(m, d, impl=built.physics.impl))
  mx = built.mjx_model()

  @jax.jit
  def evaluate(batch):
    def one(d):
      d = mjx.forward(mx, d)
      return {k: f(d) for k, f in fns.items()}
    return jax.vmap(one)(batch)

  batch = jax.tree.map(lambda *x: jnp.stack(x), *datas)
  got = jax.device_get(evaluate(batch))
  for i, (name, _, want) in enumerate(cases):
    for k in PREDS:
      expected = k in want
      assert oracles[i][k] == expected, f"{name}: oracle {k} = {oracles[i][k]} (the case is wrong)"
      assert bool(got[k][i]) == expected, f"{name}: {k} = {bool(got[k][i])} through MJX"


def test_unknown_predicate_arguments_fail_clearly(scene):
  built, m, contact, _ = scene
  with pytest.raises(KeyError, match="neither an object, a fixture"):
    predicates.compile_predicate(Predicate("on", ("bowl_1", "no_such_region")), SPEC, m, contact, {})
  with pytest.raises(ValueError, match="not an articulated fixture"):
    predicates.compile_predicate(Predicate("open", ("bowl_1",)), SPEC, m, contact,
                                 {"cabinet_1": "cabinet", "stove_1": "stove"})
