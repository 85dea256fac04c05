"""kl_symmetry's α (the Chernoff point) per row, compiled with numba, for float32 on the CPU.

The torch solver in alpha.py (`_warm_kl_symmetry`) steps all rows together: each step is three
tensor ops over the whole batch, each mostly fixed cost at small vocabularies, and the batch
takes as many steps as its worst row. Here each row takes its own steps, and a step is one pass
over the row's vocabulary with no dispatch: in the benchmark's sampling loop (16 rows, 286
tokens) 79-92 µs a token became about 30. The iteration is the torch solver's, row by row:

    α ← α − E_q[ℓ] / E_q[ℓ²],   q ∝ exp(lt + α·ℓ),   ℓ = lp − lt,

a step cut to `max_step`, α kept in [0, 1], and done by `_warm_kl_symmetry`'s test (the stepped
α is kept). The sums need no normalisation: E_q[ℓ]/E_q[ℓ²] = Σe·ℓ / Σe·ℓ². A row whose two
distributions are equal (|ℓ| < `equal_tol` everywhere) gets 1/2, as `Pair.settle` gives it.

exp is Cephes' expf (a range reduction and a polynomial; within 4 ulp of exp), written out so
that LLVM vectorises the pass: with numba's own exp, a libm call per element, the solve took
57 µs a token. e below e⁻⁸⁷ is 0, as in torch's softmax.
"""
from __future__ import annotations

import functools

import numpy as np

# reassoc lets LLVM split the sums into vector lanes; no nnan/ninf, so a nan log-prob stays a nan
# (the row never converges and the torch solver runs)
_VECTOR = {"reassoc", "contract", "nsz", "arcp"}
_F = np.float32


def _sums(f, l, a, poly, bits, scale):  # noqa: E741 (ℓ)
    """(Σe·ℓ, Σe·ℓ², Σe·ℓ²·|ℓ|) over one row, e = exp(f + a·ℓ − max); `poly`/`bits` are scratch,
    `scale` is `bits` read as float32 (2^n built from its exponent bits)."""
    top = _F(-3.0e38)
    for v in range(f.shape[0]):
        top = max(top, f[v] + a * l[v])
    for v in range(f.shape[0]):
        x = f[v] + a * l[v] - top
        n = np.floor(x * _F(1.4426950408889634) + _F(0.5))
        r = x - n * _F(0.693359375) - n * _F(-2.12194440e-4)
        p = ((((_F(1.9875691500e-4) * r + _F(1.3981999507e-3)) * r + _F(8.3334519073e-3)) * r
              + _F(4.1665795894e-2)) * r + _F(1.6666665459e-1)) * r + _F(5.0000001201e-1)
        poly[v] = p * r * r + r + _F(1.0)
        bits[v] = 0 if x < _F(-87.0) else (np.int32(n) + np.int32(127)) << np.int32(23)
    s1, s2, s3 = _F(0.0), _F(0.0), _F(0.0)
    for v in range(f.shape[0]):
        el = poly[v] * scale[v] * l[v]
        el2 = el * l[v]
        s1 += el
        s2 += el2
        s3 += el2 * abs(l[v])
    return s1, s2, s3


def chernoff_rows(ft, ell, alpha, tol, max_step, max_iter, equal_tol) -> bool:
    """Each row's α of [B, V] float32 `ft` (lt, −inf floored) and `ell` (ℓ), stepped in place
    from `alpha` ([B] float32, the warm start). False when a row takes over `max_iter` steps
    (rows before it are solved; the caller's bracketed solver starts again from its own copy)."""
    return compiled()[0](ft, ell, alpha, tol, max_step, max_iter, equal_tol)


def _rows(ft, ell, alpha, tol, max_step, max_iter, equal_tol):
    V = ft.shape[1]
    poly = np.empty(V, np.float32)
    bits = np.empty(V, np.int32)
    scale = bits.view(np.float32)
    accept = tol ** 0.5 / 3
    for b in range(ft.shape[0]):
        f, l = ft[b], ell[b]  # noqa: E741
        if np.abs(l).max() < equal_tol:
            alpha[b] = 0.5
            continue
        a = np.float64(alpha[b])
        for _ in range(max_iter):
            s1, s2, s3 = _compiled_sums(f, l, np.float32(a), poly, bits, scale)
            step = 0.0 if s2 <= 0 else np.float64(s1) / np.float64(s2)  # Σe·ℓ² = 0: ℓ = 0 wherever q is
            a = min(max(a - min(max(step, -max_step), max_step), 0.0), 1.0)
            if abs(step) < accept and (step * step * s3 < tol * s2 or s2 <= 0):
                break
        else:
            return False
        alpha[b] = a
    return True


_compiled_sums = None  # `_sums` compiled, which the compiled `_rows` calls


@functools.cache
def compiled():
    """(`_rows`, `_sums`) compiled on first use, so that numba is imported when a q* step first
    needs it, not when `recipe plan` imports the step library; the machine code is cached beside
    this file (a fresh checkout compiles once, in about 1.5 s)."""
    global _compiled_sums
    _compiled_sums = _jit(_sums, fastmath=_VECTOR)
    return _jit(_rows), _compiled_sums


def _jit(fn, **options):
    from numba import njit

    try:
        return njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:  # nowhere to write the cache (a read-only install and home): compile in each process
        return njit(nogil=True, **options)(fn)
