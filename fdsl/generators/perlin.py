"""Seeded 1-D Perlin (gradient) noise in numba, the noise of RCDB and VisualAtom.

The original renderers call `noise.pnoise1(x)` (the `noise` package, one octave) at uniform random
positions x. That function is Perlin's improved 1-D noise: a lattice of integer points (period
256), each with a gradient picked by hashing it through a permutation table, blended with the
quintic fade 6t^5 - 15t^4 + 10t^3 and scaled by 0.4. We keep its gradient set exactly, including
its quirk (a hash with bit 3 set gives the gradient -1, otherwise (hash & 7) + 1), so our values
have the originals' distribution; the permutation is drawn from our seed instead of being Ken
Perlin's fixed table, and is resolved once into a table of the 257 lattice gradients (no branch
per sample). Only +, *, floor and table look-ups: the same bytes on every machine.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from fdsl.generators.rng import next_u64

PERIOD = 256
"""Lattice period of the noise (the permutation table's size)."""


@numba.njit(inline="always")
def gradient(hash_value):
    """The `noise` package's 1-D gradient of a hash in 0..255: -1 if bit 3 is set, else (h & 7) + 1."""
    return -1.0 if hash_value & 8 else (hash_value & 7) + 1.0


@numba.njit(cache=True)
def _gradients(seed):
    state = np.uint64(seed)
    perm = np.arange(PERIOD).astype(np.int64)
    for i in range(PERIOD - 1, 0, -1):  # Fisher-Yates
        state, z = next_u64(state)
        j = int(z % np.uint64(i + 1))
        perm[i], perm[j] = perm[j], perm[i]
    grad = np.empty(PERIOD + 1, np.float64)
    for i in range(PERIOD + 1):
        grad[i] = gradient(perm[i % PERIOD])
    return grad


def gradients(seed: int) -> np.ndarray:
    """The gradients of lattice points 0..256 (float64, point 256 == point 0) for a seeded table."""
    return _gradients(np.uint64(seed))


@numba.njit(inline="always")
def pnoise1(x, grad):
    """1-D Perlin noise at x (|value| < 1, 0 at integers) with lattice gradients `grad`."""
    x0 = math.floor(x)
    i = int(x0) & (PERIOD - 1)
    t = x - x0
    fade = t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
    a = grad[i] * t
    b = grad[i + 1] * (t - 1.0)
    return (a + fade * (b - a)) * 0.4


@numba.njit(cache=True)
def _noise_array(xs, grad):
    out = np.empty(xs.shape[0], np.float64)
    for k in range(xs.shape[0]):
        out[k] = pnoise1(xs[k], grad)
    return out


def noise1(xs: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """`pnoise1` at every position of a 1-D array (float64)."""
    return _noise_array(np.ascontiguousarray(xs, dtype=np.float64), grad)
