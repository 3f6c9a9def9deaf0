"""3-D iterated function systems and their software projection (numba), for ExFractalDB.

A system is an array `maps` (N, 12) of affine maps (a, b, ..., l) as the original code lays them out:
    x' = a x + b y + c z + j,    y' = d x + e y + f z + k,    z' = g x + h y + i z + l,
chosen with probabilities proportional to |det| of each 3x3 linear part. A point cloud is a
chaos-game orbit from the origin, min-max normalised over all coordinates together (so the shape
keeps its proportions) to [-half, half] and centred on its centroid. Images come from rotating the
cloud, projecting it through a pinhole (or orthographic) camera on the +z axis looking at the
origin and setting one pixel (or a square of point_size pixels) per point: what the original's
OpenGL point rendering draws, without OpenGL.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from fdsl.generators.rng import next_u64, next_uniform

Z_NEAR = 1.0
"""Points closer to the camera than this are not drawn (the original's OpenGL near plane)."""
_DIVERGED_DROP = 100  # points dropped before the first non-finite one (as the 2-D orbit does)


@numba.njit(cache=True)
def det_probs(maps):
    """Map probabilities proportional to |det| of each 3x3 linear part (uniform if all are 0)."""
    n_maps = maps.shape[0]
    probs = np.empty(n_maps)
    for k in range(n_maps):
        m = maps[k]
        probs[k] = abs(m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
                       + m[2] * (m[3] * m[7] - m[4] * m[6]))
    total = probs.sum()
    if not (total > 0.0 and total < np.inf):
        return np.full(n_maps, 1.0 / n_maps)
    return probs / total


@numba.njit(inline="always")
def _pick(cum, u):
    """Index of the map a uniform u selects from cumulative probabilities (no branches)."""
    k = 0
    for j in range(cum.shape[0] - 1):
        k += u >= cum[j]
    return k


@numba.njit(inline="always")
def _apply(m, x, y, z):
    return (m[0] * x + m[1] * y + m[2] * z + m[9],
            m[3] * x + m[4] * y + m[5] * z + m[10],
            m[6] * x + m[7] * y + m[8] * z + m[11])


@numba.njit(inline="always")
def _bounded(x, y, z):
    return abs(x) < 1e150 and abs(y) < 1e150 and abs(z) < 1e150  # False for inf and NaN too


@numba.njit(cache=True)
def _cumulative(probs):
    cum = np.cumsum(probs)
    cum[cum.shape[0] - 1] = 1.0
    return cum


@numba.njit(cache=True)
def orbit(maps, probs, num_points, seed, pts):
    """Chaos game from the origin: fills pts[:n] (n, 3) and returns n.

    A diverging orbit is cut at its first non-finite point, minus the 100 points before it.
    """
    cum = _cumulative(probs)
    state = np.uint64(seed)
    x = 0.0
    y = 0.0
    z = 0.0
    for i in range(num_points):
        state, u = next_uniform(state)
        x, y, z = _apply(maps[_pick(cum, u)], x, y, z)
        if not _bounded(x, y, z):
            return max(0, i - _DIVERGED_DROP)
        pts[i, 0] = x
        pts[i, 1] = y
        pts[i, 2] = z
    return num_points


@numba.njit(cache=True)
def spread(maps, probs, num_points, seed, half):
    """The smallest per-axis variance of the system's normalised cloud (see `normalize`), in one
    pass without storing the points; -1 if the orbit diverges."""
    cum = _cumulative(probs)
    state = np.uint64(seed)
    x = 0.0
    y = 0.0
    z = 0.0
    sums = np.zeros(3)
    squares = np.zeros(3)
    lo = np.inf
    hi = -np.inf
    for _ in range(num_points):
        state, u = next_uniform(state)
        x, y, z = _apply(maps[_pick(cum, u)], x, y, z)
        if not _bounded(x, y, z):
            return -1.0
        sums[0] += x
        sums[1] += y
        sums[2] += z
        squares[0] += x * x
        squares[1] += y * y
        squares[2] += z * z
        lo = min(lo, x, y, z)
        hi = max(hi, x, y, z)
    if not hi > lo:
        return 0.0
    scale = (2.0 * half / (hi - lo)) ** 2
    smallest = np.inf
    for a in range(3):
        mean = sums[a] / num_points
        smallest = min(smallest, (squares[a] / num_points - mean * mean) * scale)
    return smallest


@numba.njit(cache=True)
def normalize(pts, n, half):
    """In place: scale pts[:n] by the min/max of all coordinates into [-half, half], then subtract
    the centroid (the original's `min_max(axis=None)` and `centoroid`)."""
    if n == 0:
        return
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        for a in range(3):
            lo = min(lo, pts[i, a])
            hi = max(hi, pts[i, a])
    scale = 2.0 * half / (hi - lo) if hi > lo else 0.0
    mean = np.zeros(3)
    for i in range(n):
        for a in range(3):
            pts[i, a] = (pts[i, a] - lo) * scale - half
            mean[a] += pts[i, a]
    mean /= n
    for i in range(n):
        for a in range(3):
            pts[i, a] -= mean[a]


@numba.njit(cache=True)
def axis_variances(pts, n):
    """Population variance of each axis of pts[:n] (centred points: the mean square)."""
    var = np.zeros(3)
    mean = np.zeros(3)
    for i in range(n):
        for a in range(3):
            mean[a] += pts[i, a]
    mean /= max(n, 1)
    for i in range(n):
        for a in range(3):
            d = pts[i, a] - mean[a]
            var[a] += d * d
    return var / max(n, 1)


@numba.njit(cache=True)
def _search(seed, n_min, n_max, param_range, min_variance, num_points, half, max_tries):
    """ExFractalDB's category search: draw systems until every axis varies by more than the bar."""
    state = np.uint64(seed)
    for attempt in range(max_tries):
        state, u = next_uniform(state)
        n_maps = n_min + int(u * (n_max - n_min + 1))
        maps = np.empty((n_maps, 12), np.float64)
        for m in range(n_maps):
            for j in range(12):
                state, u = next_uniform(state)
                maps[m, j] = (2.0 * u - 1.0) * param_range
        state, orbit_seed = next_u64(state)
        if spread(maps, det_probs(maps), num_points, orbit_seed, half) > min_variance:
            return maps, attempt + 1
    return np.empty((0, 12), np.float64), max_tries


def search_system(seed: int, *, n_min: int, n_max: int, param_range: float, min_variance: float,
                  num_points: int, half: float, max_tries: int) -> np.ndarray:
    """One accepted system (N, 12); ValueError when none passes in `max_tries` draws."""
    maps, tries = _search(np.uint64(seed), n_min, n_max, float(param_range), float(min_variance),
                          num_points, float(half), max_tries)
    if len(maps) == 0:
        raise ValueError(f"variance_threshold: no system passed {min_variance} in {tries} tries; "
                         "lower variance_threshold or raise max_search_tries")
    return maps


def point_cloud(maps: np.ndarray, probs: np.ndarray, num_points: int, seed: int, half: float) -> np.ndarray:
    """The normalised, centred cloud (n, 3) of a system (n < num_points if the orbit diverged)."""
    pts = np.empty((num_points, 3), np.float64)
    n = orbit(maps, probs, num_points, np.uint64(seed), pts)
    normalize(pts, n, half)
    return pts[:n]


def rotation(u: np.ndarray, mode: str) -> np.ndarray:
    """A 3x3 rotation from three uniforms: "sphere" uniform over all rotations (Shoemake's
    quaternion), "turntable" a turn about the vertical (y) axis by 2 pi u[0]."""
    if mode == "turntable":
        c, s = math.cos(2 * math.pi * u[0]), math.sin(2 * math.pi * u[0])
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    r1, r2 = math.sqrt(1.0 - u[0]), math.sqrt(u[0])
    t1, t2 = 2 * math.pi * u[1], 2 * math.pi * u[2]
    x, y, z, w = r1 * math.sin(t1), r1 * math.cos(t1), r2 * math.sin(t2), r2 * math.cos(t2)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@numba.njit(cache=True)
def project(pts, rot, size, distance, tan_half_fov, perspective, point_size, value):
    """Rotate pts (n, 3) by `rot`, view them from (0, 0, distance) and splat each point as a
    point_size x point_size square of `value` into a (size, size) uint8 canvas, y axis up."""
    img = np.zeros((size, size), np.uint8)
    lo = (point_size - 1) // 2
    hi = point_size // 2
    half_size = 0.5 * size
    ortho = 1.0 / (distance * tan_half_fov)
    for i in range(pts.shape[0]):
        x = rot[0, 0] * pts[i, 0] + rot[0, 1] * pts[i, 1] + rot[0, 2] * pts[i, 2]
        y = rot[1, 0] * pts[i, 0] + rot[1, 1] * pts[i, 1] + rot[1, 2] * pts[i, 2]
        z = rot[2, 0] * pts[i, 0] + rot[2, 1] * pts[i, 1] + rot[2, 2] * pts[i, 2]
        depth = distance - z
        if depth < Z_NEAR:
            continue
        f = 1.0 / (depth * tan_half_fov) if perspective else ortho
        col = int(math.floor((x * f + 1.0) * half_size))
        row = int(math.floor((1.0 - y * f) * half_size))
        for r in range(max(row - lo, 0), min(row + hi + 1, size)):
            for c in range(max(col - lo, 0), min(col + hi + 1, size)):
                img[r, c] = value
    return img
