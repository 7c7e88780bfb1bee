"""Objects and fixtures taken over from LIBERO's own collision boxes (tools/libero_boxes.py), in C
MuJoCo against figures of the LIBERO reference conversion: the moka pot's 15 boxes span exactly its
converted collision bounding box, its fingers close across two walls 7.35 cm apart (the single
cylinder it was before was 8.14 cm across, wider than the hand opens), and the flat stove's burner
plate is as high as LIBERO's, so a moka pot standing on it counts as On its cook region (it did not
on the 5 cm fitted box: origin 11.6 cm over the site, LIBERO allows 10.25). The wine rack is its
nine boxes; the microwave's shell and door stop the arm and the mug (they were visual)."""
import itertools

import mujoco
import numpy as np
import pytest

from envs.tasks import builder, libero_data, libero_suite, predicates

TASK = 8   # libero_10: put both moka pots on the stove


@pytest.fixture(scope="module")
def scene():
  spec = libero_data.tasks("libero_10")[TASK]
  built = builder.build(spec)
  return spec, built, built.mj_model


def _corners(m, d, g):
  """The 8 corners of box geom g, world frame."""
  r = d.geom_xmat[g].reshape(3, 3)
  return np.array([d.geom_xpos[g] + r @ (m.geom_size[g] * s)
                   for s in itertools.product((-1, 1), repeat=3)])


def _in_root(d, body, pts):
  return (pts - d.xpos[body]) @ d.xmat[body].reshape(3, 3)


def test_moka_pot_is_libero_s_boxes(scene):
  _, built, m = scene
  d = mujoco.MjData(m)
  mujoco.mj_kinematics(m, d)
  body = m.body("moka_pot_1").id
  boxes = [g for g in range(m.ngeom) if m.geom_bodyid[g] == body and m.geom_type[g] == 6
           and m.geom(g).name.startswith("moka_pot_1_box")]
  assert len(boxes) == 15
  pts = _in_root(d, body, np.concatenate([_corners(m, d, g) for g in boxes]))
  want = np.array(libero_data.category("moka_pot")["aabb_collision"])
  np.testing.assert_allclose(np.stack([pts.min(0), pts.max(0)]), want, atol=1e-4)
  # the fingers' pads pair with the two grip walls only; those walls are parallel, 7.35 cm apart
  # outside to outside, which the 8 cm open hand spans with room on both sides
  pads = {m.geom(n).id for n in ("left_pad", "right_pad", "left_pad_upper", "right_pad_upper")}
  pinched = sorted({int(m.pair_geom2[i]) for i in range(m.npair)
                    if m.pair_geom1[i] in pads and m.geom_bodyid[m.pair_geom2[i]] == body})
  assert [m.geom(g).name for g in pinched] == list(built.objects["moka_pot_1"].grasp)
  assert len(pinched) == 2
  thin = [d.geom_xmat[g].reshape(3, 3)[:, int(np.argmin(m.geom_size[g]))] for g in pinched]
  n = thin[0]                                                   # the walls' thin axis
  assert abs(abs(n @ thin[1]) - 1) < 1e-6
  span = [c @ n for g in pinched for c in _corners(m, d, g)]
  assert max(span) - min(span) == pytest.approx(0.0735, abs=5e-4)
  assert max(span) - min(span) < 0.08 - 2 * 0.003


def test_moka_pot_stands_on_the_burner_and_counts_as_on_it(scene):
  spec, built, m = scene
  d = mujoco.MjData(m)
  mujoco.mj_forward(m, d)
  stove = m.body("flat_stove_1").id
  site = m.site("flat_stove_1_cook_region").id
  # LIBERO's burner plate: collision_burner's top, 2.55 cm over the stove's root
  plate = m.geom("flat_stove_1_plate").id
  top = _in_root(d, stove, _corners(m, d, plate))[:, 2].max()
  assert top == pytest.approx(0.0255, abs=1e-4)
  # stand the pot 1 cm over the burner's middle and let it settle (the rest of the scene as built)
  ja = m.jnt_qposadr[m.body_jntadr[m.body("moka_pot_1").id]]
  lo = -libero_data.category("moka_pot")["aabb_collision"][0][2]    # origin over the bottom
  d.qpos[ja:ja + 3] = d.site_xpos[site] + np.array([0.0, 0.0, top + lo + 0.01])
  d.qpos[ja + 3:ja + 7] = (1.0, 0.0, 0.0, 0.0)
  for _ in range(400):
    mujoco.mj_step(m, d)
  pot = m.body("moka_pot_1").id
  assert d.xmat[pot].reshape(3, 3)[2, 2] > 0.999                     # upright
  assert d.xpos[pot][2] - d.xpos[stove][2] == pytest.approx(top + lo, abs=2e-3)
  # LIBERO's On(pot, cook_region): in the site's box, up to 10 cm over its top, touching the stove
  half = m.site_size[site]
  ok = predicates.on_site(d.xpos[pot], d.site_xpos[site], d.site_xmat[site].reshape(3, 3), half)
  touching = any({m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]} == {pot, stove}
                 for c in (d.contact[i] for i in range(d.ncon)))
  assert bool(ok) and touching


def _tool():
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                      "libero_boxes.py")
  spec = importlib.util.spec_from_file_location("libero_boxes", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_libero_boxes_tool_picks_the_grip_the_fingers_can_reach():
  """The conversion's own geometry, on a synthetic pot: quaternions of half turns (LIBERO writes its
  wall slabs as 180-degree turns, where a sign-from-off-diagonal formula picks the wrong axis), and
  the grip: the narrowest parallel wall pair under the open hand whose fingers, coming down outside
  the walls, miss every other box."""
  t = _tool()
  rng = np.random.default_rng(0)
  for q in [(0.0, 0.70711, 0.70711, 0.0), (0.0, -0.19372, 0.98106, 0.0),
            (0.0, 0.0, 0.23224, 0.97266), (0.0, 0.0, 0.0, 1.0)] + list(rng.normal(size=(20, 4))):
    r = t.qmat(q)
    assert np.allclose(t.qmat(t.mat_q(r)), r, atol=1e-6), q
  yaw = lambda a: t.qmat((np.cos(a / 2), 0.0, 0.0, np.sin(a / 2)))  # noqa: E731
  up = 0.06
  # a body of two wall pairs: 6 cm apart across y (a spout box in front of one of them, where a
  # finger would come down) and 7 cm apart across a diagonal; a 9 cm pair is too wide for the hand
  boxes = [(np.array([0.0, -0.027, up]), np.eye(3), np.array([0.02, 0.003, up])),
           (np.array([0.0, 0.027, up]), np.eye(3), np.array([0.02, 0.003, up])),
           (np.array([0.0, -0.045, 0.09]), np.eye(3), np.array([0.01, 0.01, 0.02])),     # spout
           (np.array([0.032, 0.0, up]) @ yaw(0.4).T, yaw(0.4), np.array([0.003, 0.015, up])),
           (np.array([-0.032, 0.0, up]) @ yaw(0.4).T, yaw(0.4), np.array([0.003, 0.015, up])),
           (np.array([0.042, 0.0, up]) @ yaw(1.2).T, yaw(1.2), np.array([0.003, 0.01, up])),
           (np.array([-0.042, 0.0, up]) @ yaw(1.2).T, yaw(1.2), np.array([0.003, 0.01, up]))]
  found = t.grips(boxes)
  widths = {(i, j): w for w, i, j, *_ in found}
  assert widths[(0, 1)] == pytest.approx(0.060, abs=1e-6)
  assert widths[(3, 4)] == pytest.approx(0.070, abs=1e-6)
  assert widths[(5, 6)] == pytest.approx(0.090, abs=1e-6)
  top = 2 * up
  clear = [(i, j) for w, i, j, *_ in found
           if w <= t.OPEN - 2 * t.SPARE and t.fingers_clear(boxes, (w, i, j, *_), top)]
  assert clear == [(3, 4)]                     # (0, 1) is narrower but the spout is in the way
  _, i, j, c, n, _, half = next(g for g in found if g[1:3] == (3, 4))
  assert abs(abs(n @ yaw(0.4)[:, 0]) - 1) < 1e-9 and half[0] == pytest.approx(0.035)


@pytest.fixture(scope="module")
def rack_scene():
  spec = libero_data.tasks("libero_goal")[9]     # put the wine bottle on the rack
  built = builder.build(spec)
  return spec, built, built.mj_model


def _libero_on_site(m, d, body, site, parent):
  """LIBERO's On(a, site) by hand (LIBERO_PREDICATES.md): d = R_site @ (p_a - p_site) -- R itself,
  not its transpose --, h_z - 0.005 < d_z < h_z + 0.10, |d_x| < h_x, |d_y| < h_y, and a contact
  between a and the site's parent."""
  r = d.site_xmat[site].reshape(3, 3)
  v = r @ (d.xpos[body] - d.site_xpos[site])
  h = m.site_size[site]
  inside = h[2] - 0.005 < v[2] < h[2] + 0.10 and abs(v[0]) < h[0] and abs(v[1]) < h[1]
  touching = any({m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]} == {body, parent}
                 for c in (d.contact[i] for i in range(d.ncon)))
  return inside and touching


def _z_to(axis):
  """A quaternion turning +z onto `axis`."""
  z = axis / np.linalg.norm(axis)
  x = np.cross([1.0, 0.0, 0.0], z) if abs(z[0]) < 0.9 else np.cross([0.0, 1.0, 0.0], z)
  x /= np.linalg.norm(x)
  q = np.zeros(4)
  mujoco.mju_mat2Quat(q, np.stack([x, np.cross(z, x), z], 1).ravel())
  return q


def test_wine_rack_is_libero_s_boxes_and_holds_a_bottle_the_expert_s_way(rack_scene):
  """LIBERO's wine rack is nine boxes (a base, a back post, two shelves sloping 31 degrees, a lip at
  each shelf's low edge); it was one flat slab over visual legs the arm passed through. Its boxes
  span the converted collision bounding box; the base pairs only with the hand and the fingertips;
  and a bottle set down as the expert aims it (experts._Rack: along the upper shelf's slope, neck
  uphill, its base at the lip, 6 cm across from the site's centre) stays there and counts as On
  LIBERO's top_region, while the same bottle lying across the shelf against the lip does not."""
  import types
  from envs.tasks import experts
  _, built, m = rack_scene
  d = mujoco.MjData(m)
  mujoco.mj_forward(m, d)
  rack = m.body("wine_rack_1").id
  boxes = [g for g in range(m.ngeom) if m.geom_bodyid[g] == rack and m.geom_type[g] == 6]
  assert len(boxes) == 9
  pts = _in_root(d, rack, np.concatenate([_corners(m, d, g) for g in boxes]))
  want = np.array(libero_data.category("wine_rack")["aabb_collision"])
  np.testing.assert_allclose(np.stack([pts.min(0), pts.max(0)]), want, atol=1e-4)
  low = set(built.fixtures["wine_rack_1"].params["low"])
  assert len(low) == 4
  for i in range(m.npair):
    g1, g2 = m.geom(m.pair_geom1[i]).name, m.geom(m.pair_geom2[i]).name
    if g2 in low:
      assert g1 in ("hand_collision", "left_pad", "right_pad"), g1
  arm = {m.geom(m.pair_geom1[i]).name for i in range(m.npair)
         if m.geom(m.pair_geom2[i]).name == "wine_rack_1_box8"}          # the post
  assert {"link4_collision", "link7_collision", "hand_collision"} <= arm

  site = m.site("wine_rack_1_top_region").id
  bottle = m.body("wine_bottle_1").id
  ja = m.jnt_qposadr[m.body_jntadr[bottle]]
  shape = types.SimpleNamespace(radius=libero_data.category("wine_bottle")["params"]["radius"])
  corner, n, t, e = (np.asarray(v) for v in experts._Rack(types.SimpleNamespace(mj_model=m),
                                                            "wine_rack_1_top_region").frame(d))
  assert np.degrees(np.arccos(t[2])) == pytest.approx(90 - 31.2, abs=0.5)     # the shelf's slope
  results = {}
  for name, axis, start in (
      ("along", t, corner + (shape.radius + 0.004) * n + 0.003 * t + experts.RACK_ACROSS * e),
      ("across", e, corner + (shape.radius + 0.004) * (n + t) - 0.07 * e)):
    mujoco.mj_resetData(m, d)
    d.qpos[ja:ja + 3] = start
    d.qpos[ja + 3:ja + 7] = _z_to(axis)
    for _ in range(800):                                                  # 4 s
      mujoco.mj_step(m, d)
    moved = np.linalg.norm(d.xpos[bottle] - start)
    results[name] = (_libero_on_site(m, d, bottle, site, rack), moved,
                     float(d.xmat[bottle].reshape(3, 3)[:, 2] @ axis))
  on, moved, cos = results["along"]
  assert on and moved < 0.01 and cos > np.cos(np.radians(5)), results
  assert not results["across"][0] and results["across"][1] < 0.01, results


@pytest.fixture(scope="module")
def microwave_scene():
  spec = libero_data.tasks("libero_10")[9]     # the mug into the microwave, then its door shut
  built = builder.build(spec)
  return spec, built, built.mj_model


def test_microwave_shell_and_door_stop_the_arm_and_the_mug(microwave_scene):
  """The microwave's roof, back and sides were visual: the arm and the mug passed through them, and
  the door swung shut through a mug. In C MuJoCo: a mug set on the roof stays on it; a mug standing
  in the door's sweep stops the door swung shut by a hinge torque short of LIBERO's Close range
  (q > -0.005), while without the mug the same torque closes it; the reaching links and the palm
  pair with every shell box and the door."""
  _, built, m = microwave_scene
  d = mujoco.MjData(m)
  shell = list(built.fixtures["microwave_1"].surface)
  assert len(shell) == 6, shell
  pairs = {(m.geom(m.pair_geom1[i]).name, m.geom(m.pair_geom2[i]).name) for i in range(m.npair)}
  for g in shell + ["microwave_1_door"]:
    for link in builder.REACHING:
      assert (link, g) in pairs, (link, g)
  mug = m.body("white_yellow_mug_1").id
  ja = m.jnt_qposadr[m.body_jntadr[mug]]
  roof = max((m.geom(g).id for g in shell), key=lambda g: m.geom_pos[g][2])
  hinge = m.joint("microwave_1_microjoint").id
  qa, va = m.jnt_qposadr[hinge], m.jnt_dofadr[hinge]

  mujoco.mj_resetData(m, d)
  mujoco.mj_forward(m, d)
  roof_top = d.geom_xpos[roof][2] + m.geom_size[roof][2]
  d.qpos[ja:ja + 3] = d.geom_xpos[roof][:2].tolist() + [roof_top + 0.01]
  d.qpos[ja + 3:ja + 7] = (1, 0, 0, 0)
  for _ in range(300):                                                  # 1.5 s
    mujoco.mj_step(m, d)
  assert d.xpos[mug][2] > roof_top - 0.005, (d.xpos[mug][2], roof_top)

  def swing(with_mug: bool) -> float:
    mujoco.mj_resetData(m, d)
    d.qpos[qa] = -1.6                                                     # open (LIBERO: < -1.3)
    mujoco.mj_forward(m, d)
    # the mug on the table just in front of the opening, in the door's sweep (4 m away if not)
    floor = min((m.geom(g).id for g in shell), key=lambda g: m.geom_pos[g][2])
    front = d.geom_xpos[floor] - [0.0, 0.14, 0.0]
    d.qpos[ja:ja + 3] = [front[0], front[1], 0.0] if with_mug else [4.0, 0.0, 0.0]
    d.qpos[ja + 3:ja + 7] = (1, 0, 0, 0)
    for _ in range(600):                                                  # 3 s
      d.qfrc_applied[va] = 2.0                                            # toward closed (q -> 0)
      mujoco.mj_step(m, d)
    return float(d.qpos[qa])

  assert swing(False) > -0.005
  assert swing(True) < -0.2


def _capsule_extent(m, d, gids, axis: int, top: bool) -> float:
  """The largest (top) or smallest world coordinate along axis over capsule geoms gids."""
  ends = []
  for g in gids:
    a = abs(d.geom_xmat[g].reshape(3, 3)[axis, 2] * m.geom_size[g][1])    # centre to end
    r = m.geom_size[g][0]
    ends.append(d.geom_xpos[g][axis] + a + r if top else d.geom_xpos[g][axis] - a - r)
  return float(max(ends) if top else min(ends))


def test_a_mug_meets_the_microwave_shell_with_its_wall(microwave_scene):
  """The mug met the shell only with its feet: its wall (the staves and handle the fingers pinch)
  passed into the floor box, which stands 2 cm clear of the table, so the door swept a mug standing
  in front of the opening 12 cm into it, and a mug lying on its side sank into the floor. In C
  MuJoCo: sliding at the floor box's front face (no gravity: nothing else stops it), the mug stops
  there (without the pairs it slid on through the floor box and the back wall); laid on its side
  on the floor inside, it stays on top of it. Every stave and handle capsule pairs with every shell
  box and the door."""
  spec, built, _ = microwave_scene
  m = mujoco.MjModel.from_xml_string(built.xml)     # its own: the test turns gravity off
  # the microwave where LIBERO's first initial state stands it (on its feet, 2 cm up)
  init = libero_data.init_states(spec)
  pose = init["pose"][0][init["entities"].index("microwave_1")]
  root = m.body("microwave_1").id
  m.body_pos[root], m.body_quat[root] = pose[:3], pose[3:]
  d = mujoco.MjData(m)
  shell = list(built.fixtures["microwave_1"].surface)
  wall = list(built.objects["white_yellow_mug_1"].grasp)
  assert len(wall) == 13, wall                     # 10 staves, 2 handle arms, the bar
  pairs = {(m.geom(m.pair_geom1[i]).name, m.geom(m.pair_geom2[i]).name) for i in range(m.npair)}
  for g in wall:
    for s in shell + ["microwave_1_door"]:
      assert (g, s) in pairs, (g, s)
  mug = m.body("white_yellow_mug_1").id
  ja, va = m.jnt_qposadr[m.body_jntadr[mug]], m.jnt_dofadr[m.body_jntadr[mug]]
  floor = min((m.geom(g).id for g in shell), key=lambda g: m.geom_pos[g][2])
  wid = [m.geom(g).id for g in wall]

  def wall_extent(axis: int, top: bool) -> float:
    return _capsule_extent(m, d, wid, axis, top)

  mujoco.mj_resetData(m, d)
  mujoco.mj_forward(m, d)
  face = float(d.geom_xpos[floor][1] - m.geom_size[floor][1])   # the floor box's front face (y)
  floor_top = float(d.geom_xpos[floor][2] + m.geom_size[floor][2])
  centre = d.geom_xpos[floor].copy()
  assert centre[2] - m.geom_size[floor][2] > 0.015                      # clear of the table
  # upright on the table, 2 cm in front of the face, sliding at it (the door's push, without a door)
  m.opt.gravity[:] = 0.0
  d.qpos[ja + 3:ja + 7] = (1, 0, 0, 0)
  d.qpos[ja:ja + 3] = (centre[0], 0.0, 0.001)
  hinge = m.joint("microwave_1_microjoint").id
  d.qpos[m.jnt_qposadr[hinge]] = init["joint_qpos"][0][0]                # open, as LIBERO starts
  mujoco.mj_forward(m, d)
  d.qpos[ja + 1] = face - 0.02 - (wall_extent(1, True) - d.qpos[ja + 1])
  d.qvel[va + 1] = 0.3
  for _ in range(300):                                                    # 1.5 s
    mujoco.mj_step(m, d)
  assert wall_extent(1, True) < face + 0.004, (wall_extent(1, True), face)
  # on its side (axis along x) 5 mm over the floor, inside
  m.opt.gravity[:] = (0.0, 0.0, -9.81)
  mujoco.mj_resetData(m, d)
  d.qpos[ja + 3:ja + 7] = (np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0)
  d.qpos[ja:ja + 3] = (centre[0] - 0.04, centre[1], 0.1)
  mujoco.mj_forward(m, d)
  d.qpos[ja + 2] += floor_top + 0.005 - wall_extent(2, False)
  for _ in range(300):                                                    # 1.5 s
    mujoco.mj_step(m, d)
  assert wall_extent(2, False) > floor_top - 0.004, (wall_extent(2, False), floor_top)


@pytest.fixture(scope="module")
def libero10_scene():
  """libero_10's one-scene model (every object and fixture of its ten tasks)."""
  return builder.build(libero_suite.union_spec(libero_data.tasks("libero_10")))


def test_a_handled_object_s_hull_stands_on_its_body(libero10_scene):
  """The arm meets a round object through its hull, a cylinder as wide as its body. LIBERO puts a
  mug's or a frying pan's origin off the body's axis (1.4-1.7 cm for the mugs, 7.6 cm for the
  pan), and the hull stood on the origin: the arm passed 1.7 cm into a mug's wall on one side
  and met nothing 1.7 cm beyond it on the other, and met the pan 7.6 cm off its disc. Each wall
  capsule of the three mugs lies inside its hull's cylinder, and the pan's disc stands on its
  hull's axis (C MuJoCo, libero_10's scene)."""
  built = libero10_scene
  m = built.mj_model
  d = mujoco.MjData(m)
  mujoco.mj_forward(m, d)
  kinds = {o.name: o.kind for o in built.spec.objects}
  mugs = [n for n, k in kinds.items() if k == "mug"]
  pans = [n for n, k in kinds.items() if k == "pan"]
  assert len(mugs) == 3 and len(pans) == 1, kinds
  for name in mugs + pans:
    hull = m.geom(f"{name}_hull").id
    axis, radius = d.geom_xpos[hull][:2], m.geom_size[hull][0]
    if name in pans:
      disc = m.geom(f"{name}_disc").id
      assert np.linalg.norm(d.geom_xpos[disc][:2] - axis) < 1e-4, name
      assert radius >= m.geom_size[disc][0] - 1e-6, name
      continue
    for g in built.objects[name].grasp:
      if "stave" not in g:
        continue
      gid = m.geom(g).id
      out = np.linalg.norm(d.geom_xpos[gid][:2] - axis) + m.geom_size[gid][0] - radius
      assert out < 1e-4, (name, g, out)


def _repeated_pairs(m) -> list[tuple[str, str]]:
  seen, out = set(), []
  for i in range(m.npair):
    key = frozenset((m.pair_geom1[i], m.pair_geom2[i]))
    if key in seen:
      out.append((m.geom(m.pair_geom1[i]).name, m.geom(m.pair_geom2[i]).name))
    seen.add(key)
  return out


def test_no_contact_pair_is_listed_twice(microwave_scene, libero10_scene):
  """Two rules of the builder wanted the mug's handle bar against the microwave's shell (it lies
  on the floor like the side capsule; it is a pinched capsule, which meets the shell): each such
  pair was a second constraint on one contact, twice as stiff and twice the cost (12 in task 9's
  scene, 6 in libero_10's one-scene model). Neither holds a pair twice."""
  _, _, m = microwave_scene
  assert not _repeated_pairs(m), _repeated_pairs(m)
  suite = libero10_scene.mj_model
  assert not _repeated_pairs(suite), _repeated_pairs(suite)
  # both rules still reach the bar: the floor box is among its partners, once
  bar, floor = m.geom("white_yellow_mug_1_handle_bar").id, m.geom("microwave_1_box4").id
  assert sum({m.pair_geom1[i], m.pair_geom2[i]} == {bar, floor} for i in range(m.npair)) == 1


def test_a_knocked_over_mug_lies_on_the_table():
  """A mug's wall and handle pair with the fingers, not the table (its feet carry it upright), so a
  mug knocked over sank into the table (3.6 cm, the porcelain mug). Now it lies on a side capsule
  inside its body and on its handle bar. In C MuJoCo, each of LIBERO's three mugs dropped lying
  down (handle to the side, up and down): at rest no wall or handle capsule is more than 2 cm below
  the table. Not 0: the capsule's round ends let the base's rim dip, most (1.6 cm) for the
  yellow-white mug with its handle up, too short for more than a ball as wide as its body."""
  spec = libero_data.tasks("libero_10")[4]    # the white, red and yellow-white mugs on plates
  built = builder.build(spec)
  m = built.mj_model
  d = mujoco.MjData(m)
  mugs = [o.name for o in spec.objects if o.kind == "mug"]
  assert len(mugs) == 3, mugs
  for name in mugs:
    bid = m.body(name).id
    caps = [m.geom(g).id for g in built.objects[name].grasp]          # staves, handle arms, bar
    ja = m.jnt_qposadr[m.body_jntadr[bid]]
    for roll in (0.0, np.pi / 2, -np.pi / 2):   # axis along y, handle along x; handle up / down
      mujoco.mj_resetData(m, d)
      for k, o in enumerate(spec.objects):                              # the others far away
        j = m.jnt_qposadr[m.body_jntadr[m.body(o.name).id]]
        d.qpos[j:j + 3] = (2.0 + k, 2.0, 0.3)
        d.qpos[j + 3:j + 7] = (1.0, 0.0, 0.0, 0.0)
      lie = np.array([np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0])    # z -> -y
      turn = np.array([np.cos(roll / 2), 0.0, 0.0, np.sin(roll / 2)])     # about the mug's own axis
      q = np.zeros(4)
      mujoco.mju_mulQuat(q, lie, turn)
      d.qpos[ja:ja + 3] = (0.0, 0.0, 0.12)
      d.qpos[ja + 3:ja + 7] = q
      for _ in range(400):                                                # 2 s
        mujoco.mj_step(m, d)
      assert abs(d.xmat[bid].reshape(3, 3)[2, 2]) < 0.5, (name, roll)     # it does lie
      low = _capsule_extent(m, d, caps, 2, False)
      assert low > -0.02, (name, roll, low)


# LIBERO's microwave (articulated_objects/microwave.xml, class micro_collision), its object frame:
# (centre, half sizes) of the six shell boxes, and the door's box in the frame of its hinge body
# (at -0.1725, -0.088, 0.096), shut.
LIBERO_MICROWAVE_SHELL = [((-0.158, 0.0115, 0.0935), (0.0145, 0.09955, 0.0935)),   # left wall
                          ((0.118, 0.0115, 0.0935), (0.0545, 0.09955, 0.0935)),    # control panel
                          ((-0.0405, 0.0955, 0.0935), (0.1035, 0.015, 0.0935)),    # back
                          ((-0.04, -0.0035, 0.1775), (0.1035, 0.0845, 0.0095)),    # roof
                          ((-0.04, -0.004, 0.012), (0.1035, 0.084, 0.012)),        # floor
                          ((0.13, -0.0985, 0.0935), (0.0425, 0.012, 0.0935))]      # panel's front
LIBERO_MICROWAVE_DOOR = ((0.1295, -0.013, 0.0), (0.1295, 0.012, 0.0925))
LIBERO_DOOR_HINGE = (-0.1725, -0.088, 0.096)


def test_microwave_is_libero_s_boxes(microwave_scene):
  """The built microwave collides through LIBERO's own six shell boxes and its 2.4 cm door, where
  LIBERO has them in the microwave's frame (the fitted shell was a 30 cm wide cavity without the
  10.9 cm control-panel block, and a 6.4 cm door that took in the handle): checked on the compiled
  model, door shut, against LIBERO's numbers; the handle bar is a grasp capsule 5.4 cm out from
  the door's hinge line."""
  _, built, m = microwave_scene
  d = mujoco.MjData(m)
  mujoco.mj_resetData(m, d)
  hinge = m.joint("microwave_1_microjoint").id
  d.qpos[m.jnt_qposadr[hinge]] = 0.0
  mujoco.mj_kinematics(m, d)
  root = m.body("microwave_1").id
  r0, p0 = d.xmat[root].reshape(3, 3), d.xpos[root]

  def local(g):
    """(centre, half sizes along the root's axes) of box geom g, the microwave's frame."""
    r = r0.T @ d.geom_xmat[g].reshape(3, 3)
    return r0.T @ (d.geom_xpos[g] - p0), np.abs(r) @ m.geom_size[g]

  shell = [m.geom(g).id for g in built.fixtures["microwave_1"].surface]
  got = sorted((tuple(np.round(c, 4)), tuple(np.round(h, 4))) for c, h in map(local, shell))
  want = sorted((tuple(np.round(c, 4)), tuple(np.round(h, 4))) for c, h in LIBERO_MICROWAVE_SHELL)
  assert got == want, (got, want)
  c, h = local(m.geom("microwave_1_door").id)
  np.testing.assert_allclose(c, np.add(LIBERO_DOOR_HINGE, LIBERO_MICROWAVE_DOOR[0]), atol=1e-4)
  np.testing.assert_allclose(h, LIBERO_MICROWAVE_DOOR[1], atol=1e-4)
  bar = m.geom("microwave_1_handle").id
  assert "microwave_1_handle" in built.fixtures["microwave_1"].grasp
  y_bar = (r0.T @ (d.geom_xpos[bar] - p0))[1]
  assert abs(y_bar - (LIBERO_DOOR_HINGE[1] - 0.054)) < 1e-4, y_bar
