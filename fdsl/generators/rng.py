"""Portable, seeded random numbers for the renderers.

Every random draw of a renderer comes from SplitMix64 (Steele, Lea & Flood 2014), written here
in integer arithmetic so that the same seed gives the same numbers on any machine, numpy version
or numba version. Seeds for sub-streams (a category, an instance, a search attempt) are derived by
hashing the config seed with the identifying integers, so any item can be rendered alone, in any
order, in any worker.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings (stable across processes and machines)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@numba.njit(inline="always")
def next_u64(state):
    """Advance a SplitMix64 state; returns (new_state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return state, z ^ (z >> _S31)


@numba.njit(inline="always")
def next_uniform(state):
    """Advance the state; returns (new_state, a float64 uniform in [0, 1))."""
    state, z = next_u64(state)
    return state, np.float64(z >> _S11) * _INV53


@numba.njit(cache=True)
def _uniforms(seed, n):
    out = np.empty(n, np.float64)
    state = np.uint64(seed)
    for i in range(n):
        state, out[i] = next_uniform(state)
    return out


def uniforms(seed: int, n: int) -> np.ndarray:
    """`n` uniforms in [0, 1) from `seed` (float64, reproducible everywhere)."""
    return _uniforms(np.uint64(seed), n)
