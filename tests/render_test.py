"""envs/render.py: the JAX ray caster against MuJoCo's C ray casting (mj_ray), exact culling
(culled == brute force on the task scenes and on cluttered scenes, overflow reported, never a silent
drop), SceneInputs, plus API checks."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from envs import registry
from envs.tasks import libero_data
from envs.render import Renderer, SceneInputs

# the renderer's exactness against MuJoCo holds on every backend: rerun on a lent accelerator
pytestmark = pytest.mark.accelerator

H = W = 32
CAMS = ("fixed", "moving")
_TYPES = ("sphere", "capsule", "box", "cylinder", "ellipsoid")
_NBODIES = 12


def _free_body(name: str, t: str, rng, lo: float, hi: float) -> str:
  """A free body with one geom of type t, random size in [lo, hi] and random colour."""
  s = rng.uniform(lo, hi, 3)
  size = {"sphere": f"{s[0]}", "capsule": f"{s[0]} {s[1]}", "cylinder": f"{s[0]} {s[1]}",
          "box": f"{s[0]} {s[1]} {s[2]}", "ellipsoid": f"{s[0]} {s[1]} {s[2]}"}[t]
  c = rng.uniform(0.2, 1.0, 3)
  return (f'<body name="{name}"><freejoint/><geom type="{t}" size="{size}" '
          f'rgba="{c[0]:.3f} {c[1]:.3f} {c[2]:.3f} 1"/></body>')


def _scene_xml(seed: int = 0) -> str:
  rng = np.random.default_rng(seed)
  bodies = [_free_body(f"b{i}", _TYPES[i % len(_TYPES)], rng, 0.04, 0.15) for i in range(_NBODIES)]
  return f"""
<mujoco>
  <default><geom contype="0" conaffinity="0"/></default>
  <worldbody>
    <light dir="0.2 0.3 -1" directional="true"/>
    <geom name="floor" type="plane" size="0 0 0.1" rgba="0.5 0.5 0.5 1"/>
    <geom name="ramp" type="plane" size="0.4 0.3 0.1" pos="0.3 -0.9 0.2" euler="0.4 0.2 0"
          rgba="0.2 0.7 0.3 1"/>
    <geom name="ghost" type="sphere" size="0.3" pos="0 0 0.5" rgba="1 0 0 0"/>
    <geom name="hidden" type="sphere" size="0.3" pos="0.2 0.2 0.5" group="4" rgba="1 0 0 1"/>
    <camera name="fixed" pos="0 -2 1.5" fovy="50"/>
    {''.join(bodies)}
    <body name="rig"><freejoint/>
      <geom type="sphere" size="0.01" rgba="1 1 1 1"/>
      <camera name="moving" pos="0 0 0.05" fovy="65"/>
    </body>
  </worldbody>
</mujoco>"""


def _lookat_quat(pos, target, rng):
  z = pos - target
  z = z / np.linalg.norm(z)
  up = np.array([0.0, 0.0, 1.0]) + 0.3 * rng.normal(size=3)
  x = np.cross(up, z)
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  q = np.zeros(4)
  mujoco.mju_mat2Quat(q, np.stack([x, y, z], 1).flatten())
  return q


def _ring(rng, rmin, lo, hi):
  p = rng.uniform(lo, hi)
  n = np.linalg.norm(p[:2])
  if n < rmin:
    p[:2] *= rmin / max(n, 1e-6)
  return p


def _random_state(m, seed):
  """Random object poses, a random fixed-camera pose and a moving (body-attached) camera."""
  rng = np.random.default_rng(seed)
  d = mujoco.MjData(m)
  for i in range(_NBODIES):
    adr = m.jnt_qposadr[m.body_jntadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"b{i}")]]
    d.qpos[adr:adr + 3] = rng.uniform([-0.8, -0.8, 0.0], [0.8, 0.8, 0.8])
    q = rng.normal(size=4)
    d.qpos[adr + 3:adr + 7] = q / np.linalg.norm(q)
  adr = m.jnt_qposadr[m.body_jntadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "rig")]]
  pos = _ring(rng, 1.4, [-2, -2, 0.8], [2, 2, 2])
  d.qpos[adr:adr + 3] = pos
  d.qpos[adr + 3:adr + 7] = _lookat_quat(pos, rng.uniform(-0.3, 0.3, 3) + [0, 0, 0.3], rng)
  cpos = _ring(rng, 1.5, [-2.5, -2.5, 0.5], [2.5, 2.5, 2.5])
  m.cam_pos[0] = cpos
  m.cam_quat[0] = _lookat_quat(cpos, np.array([0.0, 0.0, 0.3]), rng)
  mujoco.mj_forward(m, d)
  return d


def _mj_ray_image(m, d, cam):
  """Per-pixel mj_ray through pixel centres; depth along the camera's -z axis, inf for a miss."""
  cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam)
  tan_y = np.tan(np.deg2rad(m.cam_fovy[cid]) / 2)
  tan_x = tan_y * W / H
  rot = d.cam_xmat[cid].reshape(3, 3)
  pnt = d.cam_xpos[cid].copy()
  depth = np.full((H, W), np.inf)
  seg = np.full((H, W), -1, np.int32)
  gid = np.zeros(1, np.int32)
  groups = np.array([1, 1, 1, 0, 0, 0], np.uint8)
  for r in range(H):
    for c in range(W):
      v = np.array([((c + 0.5) / W * 2 - 1) * tan_x, (1 - (r + 0.5) / H * 2) * tan_y, -1.0])
      n = np.linalg.norm(v)
      dist = mujoco.mj_ray(m, d, pnt, rot @ (v / n), groups, 1, -1, gid)
      if dist >= 0:
        depth[r, c] = dist / n
        seg[r, c] = gid[0]
  return depth, seg


@pytest.fixture(scope="module")
def scene():
  m = mujoco.MjModel.from_xml_string(_scene_xml())
  states = []
  for seed in range(4):
    d = _random_state(m, seed)
    refs = {cam: _mj_ray_image(m, d, cam) for cam in CAMS}
    states.append((mjx.put_data(m, d), refs))
  return m, states


@pytest.fixture(scope="module")
def renderer(scene):
  return Renderer(scene[0], CAMS, H, W, tile=8)          # shipped default capacity ("auto")


@pytest.fixture(scope="module")
def render_fn(renderer):
  return jax.jit(renderer.render)


def test_depth_and_segmentation_match_mj_ray(scene, renderer, render_fn):
  m, states = scene
  overflow = jax.jit(renderer.overflow)
  for dx, refs in states:
    out = render_fn(dx)
    assert int(overflow(dx)) == 0
    for cam in CAMS:
      ref_depth, ref_seg = refs[cam]
      seg = np.asarray(out[cam]["segmentation"])
      depth = np.asarray(out[cam]["depth"])
      assert seg.dtype == np.int32 and seg.shape == (H, W)
      assert depth.dtype == np.float32 and np.all(np.isfinite(depth))
      both_miss = (ref_seg < 0) & (seg < 0)
      close = np.abs(np.where(seg >= 0, depth, 0) - np.where(ref_seg >= 0, ref_depth, 0)) < 1e-3
      agree = (seg == ref_seg) & (close | both_miss)
      assert agree.mean() >= 0.99, (cam, agree.mean())
      assert (ref_seg >= 0).mean() > 0.3       # the scene is actually in view
      assert np.all(depth[seg < 0] == np.float32(1e3))     # miss: the `far` value


def test_culling_equals_brute_force(scene):
  m, states = scene
  r = Renderer(m, CAMS, H, W, tile=8, max_candidates=8)
  culled = jax.jit(lambda d: r.render(d, with_overflow=True))
  brute = jax.jit(Renderer(m, CAMS, H, W, cull=False).render)
  for dx, _ in states:
    (a, ov), b = culled(dx), brute(dx)
    assert int(ov) == 0
    for cam in CAMS:
      np.testing.assert_array_equal(a[cam]["segmentation"], b[cam]["segmentation"])
      np.testing.assert_allclose(a[cam]["depth"], b[cam]["depth"], rtol=1e-5, atol=1e-5)
      assert np.abs(a[cam]["rgb"].astype(int) - b[cam]["rgb"].astype(int)).max() <= 1


def test_rgb_shows_geom_colours(scene, renderer, render_fn):
  m, states = scene
  dx, _ = states[0]
  out = render_fn(dx)
  for cam in CAMS:
    rgb = np.asarray(out[cam]["rgb"]).astype(np.float64)
    seg = np.asarray(out[cam]["segmentation"])
    assert out[cam]["rgb"].dtype == np.uint8 and rgb.shape == (H, W, 3)
    hit = seg >= 0
    assert np.all(rgb[hit].max(-1) > 0)                     # ambient light: nothing hit is black
    assert np.all(rgb[~hit] == 0)                           # default background
    # each visible pixel's colour is its geom's rgb scaled by a shade factor
    want = renderer.geom_rgba[seg[hit], :3]
    got = rgb[hit] / 255.0
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert np.mean(cos > 0.98) > 0.97
  # colour override (domain randomisation): all red
  red = jnp.tile(jnp.array([1.0, 0.0, 0.0, 1.0]), (m.ngeom, 1))
  rgb = np.asarray(jax.jit(renderer.render_rgb)(dx, rgba=red)["fixed"])
  assert rgb[..., 0].max() > 100 and rgb[..., 1:].max() == 0


def test_vmap_equals_per_env_and_kwargs(scene, renderer, render_fn):
  m, states = scene
  batch = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[dx for dx, _ in states[:3]])
  batched = jax.jit(jax.vmap(renderer.render))(batch)
  for i in range(3):
    one = render_fn(states[i][0])
    for cam in CAMS:
      for k in ("rgb", "depth", "segmentation"):
        np.testing.assert_allclose(np.asarray(batched[cam][k][i], np.float64),
                                   np.asarray(one[cam][k], np.float64), atol=1, rtol=1e-5)
  # render_rgb (with a light override): same shapes, the light changes the shading only
  light = jnp.array([0.5, -0.2, -1.0])
  rgb_only = jax.jit(jax.vmap(lambda d: renderer.render_rgb(d, light_dir=light)))(batch)
  for cam in CAMS:
    assert rgb_only[cam].shape == (3, H, W, 3) and rgb_only[cam].dtype == np.uint8
    hit = np.asarray(batched[cam]["segmentation"]) >= 0
    assert np.all((np.asarray(rgb_only[cam]).max(-1) > 0) == hit)
    assert np.any(np.asarray(rgb_only[cam]) != np.asarray(batched[cam]["rgb"]))
  # cam_offset moves the camera: same as moving cam_xpos in the data
  dx = states[0][0]
  off = jnp.array([[0.05, -0.03, 0.02], [0.0, 0.0, 0.0]])
  a = jax.jit(renderer.render)(dx, cam_offset=off)
  b = render_fn(dx.replace(cam_xpos=dx.cam_xpos + off))
  for cam in CAMS:
    np.testing.assert_array_equal(a[cam]["segmentation"], b[cam]["segmentation"])
    np.testing.assert_array_equal(a[cam]["rgb"], b[cam]["rgb"])


def test_shadows_only_darken(scene, render_fn):
  m, states = scene
  dx, _ = states[1]
  lit = render_fn(dx)["fixed"]
  sh = jax.jit(Renderer(m, CAMS, H, W, tile=8, shadows=True).render)(dx)["fixed"]
  np.testing.assert_array_equal(lit["segmentation"], sh["segmentation"])
  a = np.asarray(lit["rgb"]).astype(int)
  b = np.asarray(sh["rgb"]).astype(int)
  assert np.all(b <= a + 1)
  assert np.sum(b.sum(-1) < a.sum(-1) - 10) > 0           # some pixels lie in a shadow


# ----------------------------------------------------------------------------------------------
# Exact culling.

def _seg_agreement(a, b, cams):
  return {cam: float(np.mean(np.asarray(a[cam]["segmentation"]) == np.asarray(b[cam]["segmentation"])))
          for cam in cams}


def _stack(items):
  return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *items)


# the LIBERO suites' scenes are checked the same way in libero_suite_test (on their own states;
# libero_10's in `make test`); these one-scene tasks in `make test-slow` (test time: about 4 minutes
# each on the 2-core CI machine)
@pytest.mark.slow
@pytest.mark.parametrize("name", [
    n for n in registry.names() if n.startswith("libero_") and n not in libero_data.SUITES])
def test_task_scene_culled_equals_brute_force(name):
  """Shipped settings: the env's own renderer on reset states and after random-action steps
  equals brute force (segmentation) on >= 99.9% of pixels, with no overflow."""
  cams = ("agentview", "wrist")
  env = registry.make(name, image_size=128, cameras=cams)
  r = env._renderer
  nreset, nsteps = 6, 3
  states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(7), nreset))
  d0 = states.pipeline_state

  @jax.jit
  def random_steps(d, key):
    def body(d, k):
      a = jax.random.uniform(k, (nreset, env.action_size), minval=-1.0, maxval=1.0)
      d = jax.vmap(lambda d, a: env.physics_steps(env.apply_action(d, a), env.substeps))(d, a)
      return d, r.scene_inputs(d)
    return jax.lax.scan(body, d, jax.random.split(key, nsteps))[1]

  after = random_steps(d0, jax.random.PRNGKey(3))                    # [nsteps, nreset, ...]
  after = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), after)
  scenes = _stack([jax.vmap(r.scene_inputs)(d0), after])
  brute = Renderer(env.mj_model, cams, 128, 128, cull=False)
  img, ov = jax.jit(jax.vmap(lambda s: r.render(s, with_overflow=True)))(scenes)
  ref = jax.jit(jax.vmap(brute.render))(scenes)
  r.check_overflow(ov, scenes)
  assert np.all(np.asarray(ov) == 0)
  agree = _seg_agreement(img, ref, cams)
  assert min(agree.values()) >= 0.999, agree
  for cam in cams:
    assert np.mean(np.asarray(ref[cam]["segmentation"]) >= 0) > 0.5      # the scene is in view


_NCLUTTER = {"box": 24, "sphere": 8, "capsule": 8, "cylinder": 6, "ellipsoid": 6}


def _clutter_xml() -> str:
  """Free bodies (one geom each) thrown into a small region the cameras look at; a camera rig
  whose own geoms (sphere, box, capsule, and a cylinder) enclose or touch the camera."""
  rng = np.random.default_rng(11)
  bodies = []
  for t, n in _NCLUTTER.items():
    for i in range(n):
      bodies.append(_free_body(f"{t}{i}", t, rng, 0.01, 0.05))
  return f"""
<mujoco>
  <default><geom contype="0" conaffinity="0"/></default>
  <worldbody>
    <light dir="0.2 0.3 -1" directional="true"/>
    <geom name="floor" type="plane" size="0 0 0.1" rgba="0.5 0.5 0.5 1"/>
    <camera name="fixed" pos="0 -0.8 0.6" xyaxes="1 0 0 0 0.6 0.8" fovy="40"/>
    {''.join(bodies)}
    <body name="rig"><freejoint/>
      <camera name="rigcam" pos="0 0 0" fovy="60"/>
      <geom type="sphere" size="0.3" rgba="1 0 0 1"/>
      <geom type="box" size="0.05 0.05 0.05" rgba="0 1 0 1"/>
      <geom type="capsule" size="0.02 0.1" pos="0.01 0 0" euler="0 90 0" rgba="0 0 1 1"/>
      <geom type="cylinder" size="0.03 0.02" pos="0 -0.05 -0.06" rgba="1 1 0 1"/>
      <geom type="ellipsoid" size="0.02 0.03 0.01" pos="0 0 0.05" rgba="0 1 1 1"/>
    </body>
  </worldbody>
</mujoco>"""


def _clutter_states(m, n, seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    d = mujoco.MjData(m)
    spread = rng.uniform(0.05, 0.2)
    for b in range(1, m.nbody - 1):
      adr = m.jnt_qposadr[m.body_jntadr[b]]
      d.qpos[adr:adr + 3] = np.array([0.0, 0.0, 0.15]) + rng.uniform(-spread, spread, 3)
      q = rng.normal(size=4)
      d.qpos[adr + 3:adr + 7] = q / np.linalg.norm(q)
    adr = m.jnt_qposadr[m.body_jntadr[m.nbody - 1]]
    pos = _ring(rng, 0.5, [-0.8, -0.8, 0.2], [0.8, 0.8, 0.8])
    d.qpos[adr:adr + 3] = pos
    d.qpos[adr + 3:adr + 7] = _lookat_quat(pos, rng.uniform(-0.05, 0.05, 3) + [0, 0, 0.15], rng)
    mujoco.mj_kinematics(m, d)
    mujoco.mj_camlight(m, d)
    out.append(d)
  return out


CL = 64          # clutter image size
CL_CAMS = ("fixed", "rigcam")


@pytest.fixture(scope="module")
def clutter():
  m = mujoco.MjModel.from_xml_string(_clutter_xml())
  ds = _clutter_states(m, 6, 0)
  batch = _stack([jax.tree_util.tree_map(lambda x: x[None], mjx.put_data(m, d)) for d in ds])
  # a capacity that just fits these states, with lists on every class: 1 slot per tile, and the
  # most crowded tiles (as many as these states have with > 1 overlap) room for the worst tile
  counts = Renderer(m, CL_CAMS, CL, CL, max_candidates=1).tile_counts(ds)
  levels = {f"{cam}:{c}": ((64, 1), (int((v > 1).sum(-1).max()), int(v.max())))
            if v.max() > 1 else 1 for cam in CL_CAMS for c, v in counts[cam].items()}
  return m, ds, batch, counts, levels


def test_cluttered_scene_exact(clutter):
  m, ds, batch, counts, lv = clutter
  assert max(int(counts[cam]["box"].max()) for cam in CL_CAMS) >= 10        # crowded tiles
  assert all(max(int(counts[cam][c].max()) for cam in CL_CAMS) >= 3 for c in _NCLUTTER)
  r = Renderer(m, CL_CAMS, CL, CL, calibration_data=ds)                   # "auto", calibrated
  r_lv = Renderer(m, CL_CAMS, CL, CL, max_candidates=lv)
  assert all(len(r_lv.capacity[cam][c]) == 2 for cam in CL_CAMS for c in _NCLUTTER)
  brute = Renderer(m, CL_CAMS, CL, CL, cull=False)
  ref = jax.jit(jax.vmap(brute.render))(batch)
  assert all(np.mean(np.asarray(ref[c]["segmentation"]) >= 0) > 0.3 for c in CL_CAMS)
  for rr in (r, r_lv):
    img, ov = jax.jit(jax.vmap(lambda d: rr.render(d, with_overflow=True)))(batch)
    assert np.all(np.asarray(ov) == 0)
    rr.check_overflow(ov)
    for cam in CL_CAMS:
      np.testing.assert_array_equal(img[cam]["segmentation"], ref[cam]["segmentation"])
      np.testing.assert_allclose(img[cam]["depth"], ref[cam]["depth"], rtol=1e-5, atol=1e-6)


def test_overflow_reported_not_silent(clutter):
  m, ds, batch, _, _ = clutter
  small = Renderer(m, CL_CAMS, CL, CL, max_candidates=2)
  brute = Renderer(m, CL_CAMS, CL, CL, cull=False)
  (img, ov), ref = (jax.jit(jax.vmap(lambda d: small.render(d, with_overflow=True)))(batch),
                    jax.jit(jax.vmap(brute.render))(batch))
  per = np.asarray(jax.jit(jax.vmap(lambda d: small.overflow(d, per_class=True)))(batch))
  ov = np.asarray(ov)
  assert per.shape == (len(ds), len(CL_CAMS), len(small.overflow_classes))
  np.testing.assert_array_equal(per.sum((1, 2)), ov)
  np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(small.overflow))(batch)), ov)
  rgb_ov = np.asarray(jax.jit(jax.vmap(lambda d: small.render_rgb(d, with_overflow=True)[1]))(batch))
  np.testing.assert_array_equal(rgb_ov, ov)
  assert np.all(ov > 0)
  assert per[:, :, small.overflow_classes.index("box")].sum() > 0
  # the count is the one the host computes from the same states
  counts = small.tile_counts(ds)
  host = sum((counts[cam][c] > 2).sum(-1) for cam in CL_CAMS for c in small.overflow_classes)
  np.testing.assert_array_equal(host, ov)
  # the images really are wrong where it overflows (so an overflow must be an error) ...
  assert any(np.any(np.asarray(img[c]["segmentation"]) != np.asarray(ref[c]["segmentation"]))
             for c in CL_CAMS)
  # ... and check_overflow says so, naming camera, class and a capacity that fits
  with pytest.raises(ValueError, match="capacity exceeded") as e:
    small.check_overflow(ov, ds)
  assert "box" in str(e.value) and "max_candidates=" in str(e.value)
  with pytest.raises(ValueError, match="box"):
    small.check_overflow(per, per_class=True)
  small.check_overflow(np.zeros(3, np.int32))                  # no overflow: no error


def test_scene_inputs_path_bit_identical(clutter, scene):
  m, ds, batch, _, _ = clutter
  # small capacity with crowded-tile levels (a small graph: compile time); overflows do not matter
  r = Renderer(m, CL_CAMS, 32, 32, max_candidates={c: ((16, 1), (6, 3)) for c in _NCLUTTER})
  sc = jax.jit(jax.vmap(r.scene_inputs))(batch)
  assert isinstance(sc, SceneInputs)
  g = len(r.geom_ids)
  assert sc.geom_xpos.shape == (len(ds), g, 3) and sc.geom_xmat.shape == (len(ds), g, 9)
  assert sc.cam_xpos.shape == (len(ds), 2, 3) and sc.cam_xmat.shape == (len(ds), 2, 9)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(sc))
  rgba = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (m.ngeom, 4)), jnp.float32)
  kw = dict(rgba=rgba, light_dir=jnp.array([0.3, -0.2, -1.0]),
            cam_offset=jnp.array([[0.01, 0.0, -0.02], [0.0, 0.01, 0.0]]))
  f = jax.jit(jax.vmap(lambda d: (r.render(d, with_overflow=True, **kw),
                                   r.overflow(d, cam_offset=kw["cam_offset"], per_class=True))))
  a, b = f(batch), f(sc)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  # render_rgb, unbatched, scene_inputs taken outside jit, a Data with invisible geoms
  m2, states = scene
  r2 = Renderer(m2, CAMS, H, W)
  dx = states[0][0]
  one = jax.jit(lambda d: r2.render_rgb(d, with_overflow=True))
  for x, y in zip(jax.tree_util.tree_leaves(one(dx)),
                  jax.tree_util.tree_leaves(one(r2.scene_inputs(dx)))):
    np.testing.assert_array_equal(x, y)
  assert len(r2.geom_ids) < m2.ngeom                   # the invisible geoms are not stored


def test_capacity_api(clutter):
  m, ds, _, _, _ = clutter
  r = Renderer(m, CL_CAMS, CL, CL, max_candidates={"box": 4, "rigcam:sphere": ((64, 1), (8, 3))},
               calibration_data=ds)
  assert r.capacity["fixed"]["box"] == ((64, 4),) and r.capacity["rigcam"]["box"] == ((64, 4),)
  assert r.capacity["rigcam"]["sphere"] == ((64, 1), (8, 3))
  assert r.capacity["fixed"]["sphere"][0][0] == 64                  # planned ("auto")
  for bad in ({"bogus": 3}, {"box": ((64, 4), (8, 2))}, {"box": 0}, "most"):
    with pytest.raises(ValueError):
      Renderer(m, CL_CAMS, CL, CL, max_candidates=bad)
  # slots are capped at the class size: then there is nothing to overflow
  big = Renderer(m, CL_CAMS, CL, CL, max_candidates=1000)
  assert all(lv == ((64, len(big.culled[c])),)
             for c, lv in zip(big._culled, big.capacity["fixed"].values()))
