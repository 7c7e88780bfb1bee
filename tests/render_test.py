"""envs/render.py: the JAX ray caster against MuJoCo's C ray casting (mj_ray), plus API checks."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from envs.render import Renderer

H = W = 32
CAMS = ("fixed", "moving")
_TYPES = ("sphere", "capsule", "box", "cylinder", "ellipsoid")
_NBODIES = 12


def _scene_xml(seed: int = 0) -> str:
  rng = np.random.default_rng(seed)
  bodies = []
  for i in range(_NBODIES):
    t = _TYPES[i % len(_TYPES)]
    s = rng.uniform(0.04, 0.15, 3)
    size = {"sphere": f"{s[0]}", "capsule": f"{s[0]} {s[1]}", "cylinder": f"{s[0]} {s[1]}",
            "box": f"{s[0]} {s[1]} {s[2]}", "ellipsoid": f"{s[0]} {s[1]} {s[2]}"}[t]
    c = rng.uniform(0.2, 1.0, 3)
    bodies.append(f'<body name="b{i}"><freejoint/><geom type="{t}" size="{size}" '
                  f'rgba="{c[0]:.3f} {c[1]:.3f} {c[2]:.3f} 1"/></body>')
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
  # small K so the per-tile top-K path is exercised (4 spheres, 3 of most other classes)
  return Renderer(scene[0], CAMS, H, W, tile=8, max_candidates=2)


@pytest.fixture(scope="module")
def render_fn(renderer):
  return jax.jit(renderer.render)


def test_depth_and_segmentation_match_mj_ray(scene, render_fn):
  m, states = scene
  for dx, refs in states:
    out = render_fn(dx)
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
  culled = jax.jit(Renderer(m, CAMS, H, W, tile=8, max_candidates=8).render)
  brute = jax.jit(Renderer(m, CAMS, H, W, cull=False).render)
  for dx, _ in states:
    a, b = culled(dx), brute(dx)
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
  sh = jax.jit(Renderer(m, CAMS, H, W, tile=8, max_candidates=2, shadows=True).render)(dx)["fixed"]
  np.testing.assert_array_equal(lit["segmentation"], sh["segmentation"])
  a = np.asarray(lit["rgb"]).astype(int)
  b = np.asarray(sh["rgb"]).astype(int)
  assert np.all(b <= a + 1)
  assert np.sum(b.sum(-1) < a.sum(-1) - 10) > 0           # some pixels lie in a shadow
