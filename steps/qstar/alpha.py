"""The math of q* sampling, per token and batched (torch only; no model code here).

For one next-token position, π_θ and π_t are given as normalised log-probabilities
`lp`, `lt` of shape [B, V]. The geometric path between them is

    q_α ∝ π_θ^α · π_t^(1−α),   log q_α = α·lp + (1−α)·lt − ψ(α),
    ψ(α) = logsumexp(α·lp + (1−α)·lt)         (ψ(0) = ψ(1) = 0, ψ convex),

and with ℓ = lp − lt, ψ′(α) = E_{q_α}[ℓ], ψ″(α) = Var_{q_α}(ℓ).

α methods (each returns α of shape [B]):
- `fixed`: a constant.
- `entropy`: α = H(π_θ) / (H(π_θ) + H(π_t)).
- `kl_symmetry`: the α with KL(q‖π_θ) = KL(q‖π_t), i.e. the Chernoff point. The gap
  D(α) = KL(q‖π_θ) − KL(q‖π_t) = −E_q[ℓ] is strictly decreasing (D′ = −Var_q ℓ), D(0) =
  KL(π_t‖π_θ) ≥ 0 and D(1) = −KL(π_θ‖π_t) ≤ 0, so a bracketed Newton step converges.
- `ess_balance`: the α where the importance weights π_θ/q and π_t/q have equal effective
  sample size. ESS_θ/N = exp(−(ψ(α)+ψ(2−α))), ESS_t/N = exp(−(ψ(α)+ψ(−α))), so balance is
  the root of g(α) = ψ(2−α) − ψ(−α), strictly decreasing with g(0) ≥ 0 ≥ g(1).

When the two distributions are equal every α gives the same q; the root-finders then
return the fallback 0.5.

Everything is float32 unless the inputs are float64 (tests use float64 for exact values).
"""
from __future__ import annotations

from operator import truediv
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside each function: `recipe plan` imports steps/ and must stay fast
    import torch

ALPHA_METHODS = ("fixed", "entropy", "kl_symmetry", "ess_balance")
FALLBACK_ALPHA = 0.5
_EQUAL_TOL = 1e-6  # max |lp − lt| below which the two distributions count as equal
_MAX_STEP = 0.2  # kl_symmetry's warm steps are cut to this (a full step from where Var_q(ℓ) is tiny overshoots)


def _col(alpha: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    import torch
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if a.dim() == 0:
        a = a.expand(like.shape[0])
    return a.unsqueeze(-1)


def _finite(x: torch.Tensor) -> torch.Tensor:
    # −inf log-probs (masked tokens) would give inf − inf = nan in ℓ; a large finite floor keeps
    # the algebra exact for every token that has any mass and harmless for the rest.
    return x.clamp(min=-1e4)


def mix_logits(lp: torch.Tensor, lt: torch.Tensor, alpha) -> torch.Tensor:
    """Unnormalised α·lp + (1−α)·lt (α broadcast per row)."""
    a = _col(alpha, lp)
    return a * lp + (1 - a) * lt


def psi(lp: torch.Tensor, lt: torch.Tensor, alpha) -> torch.Tensor:
    """ψ(α) = logsumexp(α·lp + (1−α)·lt), shape [B]. α may lie outside [0, 1]."""
    import torch
    return torch.logsumexp(mix_logits(_finite(lp), _finite(lt), alpha), dim=-1)


def log_q(lp: torch.Tensor, lt: torch.Tensor, alpha) -> torch.Tensor:
    """log q_α, normalised over the last axis: log_softmax(α·lp + (1−α)·lt)."""
    return mix_logits(lp, lt, alpha).log_softmax(dim=-1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    import torch
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def kl(lq: torch.Tensor, lother: torch.Tensor) -> torch.Tensor:
    """KL(q‖other) = Σ q·(log q − log other), shape [B]; terms with q = 0 contribute 0."""
    import torch
    q = lq.exp()
    diff = torch.where(q > 0, lq - _finite(lother), torch.zeros_like(lq))
    return (q * diff).sum(-1)


def ess_fractions(lp: torch.Tensor, lt: torch.Tensor, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """(ESS_θ/N, ESS_t/N) of the importance weights π_θ/q and π_t/q under q_α, shape [B] each."""
    import torch
    p_a = psi(lp, lt, alpha)
    a = torch.as_tensor(alpha, dtype=lp.dtype, device=lp.device)
    ess_theta = torch.exp(-(p_a + psi(lp, lt, 2 - a)))
    ess_t = torch.exp(-(p_a + psi(lp, lt, -a)))
    return ess_theta, ess_t


def ess_ratio(lp: torch.Tensor, lt: torch.Tensor, alpha) -> torch.Tensor:
    """ESS_θ / ESS_t = exp(ψ(−α) − ψ(2−α)), shape [B]."""
    import torch
    a = torch.as_tensor(alpha, dtype=lp.dtype, device=lp.device)
    return torch.exp(psi(lp, lt, -a) - psi(lp, lt, 2 - a))


# ----------------------------------------------------------------------------- one position, all rows

class Pair:
    """π_θ and π_t at one position, from their log-probs stacked as [2, B, V], with what every
    evaluation of q_α reuses computed once: log q_α = lt + α·ℓ − ψ(α) with ℓ = lp − lt (−inf
    floored by `_finite`). ℓ, ℓ² and ℓ²·|ℓ| sit in one [3, B, V] tensor, `moments`, so that
    their means under q come from one vecdot (the last two are filled by the solvers that use them)."""

    def __init__(self, logps: torch.Tensor):
        import torch
        self.logps = logps
        self.finite = _finite(logps)
        self.ft = self.finite[1]
        self.moments = self.finite.new_empty((3, *self.ft.shape))
        self.ell = torch.sub(self.finite[0], self.ft, out=self.moments[0])
        self._ell_sq = None
        self.unequal = False  # True once every row is known to differ by more than _EQUAL_TOL somewhere

    @classmethod
    def of(cls, lp: torch.Tensor, lt: torch.Tensor) -> Pair:
        import torch
        return cls(torch.stack([lp, lt]))

    @property
    def ell_sq(self) -> torch.Tensor:
        """ℓ², in `moments[1]` (computed on first use: only the root-finders need it)."""
        import torch
        if self._ell_sq is None:
            self._ell_sq = torch.square(self.ell, out=self.moments[1])
        return self._ell_sq

    def mix(self, alpha: torch.Tensor) -> torch.Tensor:
        """α·lp + (1−α)·lt, unnormalised, for α of shape [..., B]."""
        import torch
        return torch.addcmul(self.ft, alpha.unsqueeze(-1), self.ell)

    def at(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log q_α, q_α, ψ(α), E_q[ℓ])."""
        import torch
        x = self.mix(alpha)
        p = torch.logsumexp(x, dim=-1)
        lq = x - p.unsqueeze(-1)
        q = lq.exp()
        return lq, q, p, torch.linalg.vecdot(q, self.ell)

    def slope(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[ℓ], Var_q[ℓ]): ψ′ and ψ″ for a Newton step, from one softmax."""
        import torch
        q = torch.softmax(self.mix(alpha), dim=-1)
        mean = torch.linalg.vecdot(q, self.ell)
        return mean, torch.linalg.vecdot(q, self.ell_sq).addcmul_(mean, mean, value=-1)

    def settle(self, alpha: torch.Tensor) -> torch.Tensor:
        """α with the rows whose two distributions are equal set to 1/2 (every α gives the same q
        there); one max per row unless `unequal`, and a mask only when some row is equal."""
        if self.unequal:
            return alpha
        gap = self.ell_sq.amax(-1)
        if min(gap.tolist()) >= _EQUAL_TOL ** 2:
            return alpha
        return alpha.masked_fill(gap < _EQUAL_TOL ** 2, FALLBACK_ALPHA)


class Alphas:
    """Each row's α carried from one token to the next, the root-finders' warm start: `tensor`
    ([B], what the sampler records), `col` ([B, 1], what a mix multiplies) and `host` (the same
    values as floats). The warm kl_symmetry solver steps `host` and writes it back into `tensor`
    (through a numpy view on CPU): one copy a step instead of three tensor ops, and nothing made
    per token. The sampler keeps one per batch; a tensor start is copied into a new one."""

    def __init__(self, start: torch.Tensor):
        self.tensor = start.detach().clone()
        self.col = self.tensor.unsqueeze(-1)
        self.host: list[float] = self.tensor.tolist()
        self.view = self.tensor.numpy() if self.tensor.device.type == "cpu" else None

    def set(self, values: list[float] | torch.Tensor) -> torch.Tensor:
        """α := `values` (host floats or a tensor); returns `tensor`."""
        import torch
        self.host = values if isinstance(values, list) else values.tolist()
        if self.view is not None:
            self.view[:] = self.host
        else:
            self.tensor.copy_(torch.tensor(self.host, dtype=self.tensor.dtype))
        return self.tensor


# ----------------------------------------------------------------------------- α methods

def alpha_entropy(lp: torch.Tensor, lt: torch.Tensor) -> torch.Tensor:
    """α = H(π_θ) / (H(π_θ) + H(π_t)) per row."""
    return _entropy(Pair.of(lp, lt))


def _entropy(pair: Pair) -> torch.Tensor:
    import torch
    neg_h = torch.linalg.vecdot(pair.logps.exp(), pair.finite)  # Σ p·log p = −H; a p = 0 term is 0·(−1e4)
    neg_theta = neg_h[0]
    neg_total = neg_theta + neg_h[1]
    return torch.where(neg_total < -1e-12, neg_theta / neg_total, FALLBACK_ALPHA)  # H(π_θ) / (H(π_θ) + H(π_t))


def _bracketed_newton(step_fn, batch: int, like: torch.Tensor, tol: float, max_iter: int,
                      alpha_tol: float = 1e-6, start: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Root of a strictly decreasing f on [0, 1] with f(0) ≥ 0 ≥ f(1), per row.

    `step_fn(α) -> (f, f′)`. Newton steps that leave the current bracket are replaced by
    bisection, so convergence is guaranteed; Newton makes it quadratic near the root. A row is
    done when |f| < tol or its last step moved α by less than `alpha_tol` (float32 cannot
    always bring f below tol). `start` (per row; default 1/2) is the first iterate. Returns (α,
    iterations used).
    """
    import torch
    if start is None:
        alpha = torch.full((batch,), FALLBACK_ALPHA, dtype=like.dtype, device=like.device)
    else:
        alpha = start.to(like.dtype).clamp(0, 1)
    lo = torch.zeros_like(alpha)
    hi = torch.ones_like(alpha)
    done = torch.zeros(batch, dtype=torch.bool, device=like.device)
    for it in range(1, max_iter + 1):
        f, fprime = step_fn(alpha)
        done = done | (f.abs() < tol)
        if bool(done.all()):
            return alpha, it
        above = f > 0  # the root lies above α
        lo = torch.where(above, alpha, lo)
        hi = torch.where(above, hi, alpha)
        safe = fprime.abs() > 1e-12
        newton = alpha - f / torch.where(safe, fprime, torch.ones_like(fprime))
        inside = safe & (newton >= lo) & (newton <= hi)
        nxt = torch.where(done, alpha, torch.where(inside, newton, (lo + hi) / 2))
        done = done | ((nxt - alpha).abs() < alpha_tol)
        alpha = nxt
    return alpha, max_iter


def _warm_newton(newton, alpha: torch.Tensor, tol: float, max_iter: int = 10, accept: float = 1e-3):
    """Plain Newton from a warm start (the previous token's α, usually within a few hundredths
    of the root): `newton(α) -> (f, f/f′)`. Once the largest step (rows with |f| < tol take
    none) is under `accept`, α − step is returned without another evaluation: Newton's error
    after a step s is about |f″/2f′|·s², far below float32's resolution of α here. None when
    that takes more than `max_iter` steps (the bracketed solver runs then). Keeping no bracket,
    a step costs a third of `_bracketed_newton`'s tensor ops, and it stops one evaluation sooner."""
    import torch
    for _ in range(max_iter):
        f, step = newton(alpha)
        step = step.masked_fill(f.abs() < tol, 0)
        alpha = (alpha - step).clamp(0, 1)
        if float(torch.linalg.vector_norm(step, float("inf"))) < accept:
            return alpha
    return None


def _root(pair: Pair, f_and_slope, tol: float, max_iter: int, start: torch.Tensor | None):
    """The root in [0, 1] of a strictly decreasing f per row (`f_and_slope(α) -> (f, f′)`):
    `_warm_newton` from `start`, else (or when that fails) the bracketed solver; 1/2 where the
    two distributions are equal."""
    def plain(alpha):
        f, fprime = f_and_slope(alpha)
        return f, f / fprime.clamp(max=-1e-30)

    alpha = None if start is None else _warm_newton(plain, start.to(pair.ft.dtype), tol)
    if alpha is None:
        alpha, _ = _bracketed_newton(f_and_slope, pair.ft.shape[0], pair.ft, tol, max_iter, start=start)
    return pair.settle(alpha)


def _warm_kl_symmetry(pair: Pair, alphas: Alphas, tol: float, max_iter: int = 10, max_step: float = _MAX_STEP) -> bool:
    """The Chernoff point from the previous token's α (in the benchmark a median 0.006 from the
    root), all rows at once: α ← α − E_q[ℓ]/E_q[ℓ²]. That is Newton's step D/D′ = E_q[ℓ]/Var_q(ℓ)
    with Var_q(ℓ) = E_q[ℓ²] − E_q[ℓ]² replaced by E_q[ℓ²]: the same to third order near the root
    (E_q[ℓ] → 0 there), shorter far from it, and free of the cancellation that can make Var_q(ℓ)
    ≤ 0 in float32 when q is nearly one-hot. chernoff.py runs the same iteration row by row.

    A step is three tensor ops (addcmul, softmax, one vecdot of q with ℓ, ℓ² and ℓ²·|ℓ| over the
    vocabulary) and one copy of the 3·B moments to the host, where α is stepped (`alphas`). A
    step over `max_step` is cut to it (a full step from where Var_q(ℓ) is tiny overshoots, and can
    cycle between 0 and 1), and α is kept in [0, 1], where the root is. The stepped α is kept
    without another evaluation once the largest step s is under √tol/3 and the error Newton
    leaves, about |ψ‴/2ψ″|·s², is under tol/2 by the bound E_q[ℓ²·|ℓ|]/E_q[ℓ²]·s²/2. The second
    test matters where ℓ is huge (a token one model all but rules out): there ψ bends so sharply
    that a step of 1e-4 can be 1e-3 short of the root. False after `max_iter` steps: the
    bracketed solver runs then."""
    import torch
    ft, ell, moments, col = pair.ft, pair.ell, pair.moments, alphas.col
    torch.mul(pair.ell_sq, ell.abs(), out=moments[2])
    accept = tol ** 0.5 / 3
    al = alphas.host
    for _ in range(max_iter):
        q = torch.softmax(torch.addcmul(ft, col, ell), dim=-1)
        means, squares, cubes = torch.linalg.vecdot(q, moments).tolist()
        # E_q[ℓ²] = 0: ℓ = 0 wherever q is, any α is the root there (`settle` makes it 1/2)
        denoms = squares if min(squares) > 0 else [sq or 1.0 for sq in squares]
        steps = list(map(truediv, means, denoms))
        largest = max(max(steps), -min(steps))
        al = [min(max(a - min(max(st, -max_step), max_step), 0.0), 1.0) for a, st in zip(al, steps)]
        alphas.set(al)
        if largest < accept and max(st * st * c / d for st, c, d in zip(steps, cubes, denoms)) < tol:
            pair.unequal = min(squares) >= 2 * _EQUAL_TOL ** 2  # E_q[ℓ²] ≤ max ℓ²
            return True
    return False


def _kl_symmetry(pair: Pair, tol: float, max_iter: int, start: Alphas | torch.Tensor | None) -> torch.Tensor:
    """Warm Newton from `start` (default 1/2) until α is within about tol/2 of the root, also
    where D is flat (`_warm_kl_symmetry`), else the bracketed solver (|D| < tol).
    Float32 on the CPU, each row takes its own steps in compiled code (chernoff.py); elsewhere
    (float64, CUDA) all rows step together in torch (`_warm_kl_symmetry`). With an `Alphas` start
    the result is written into it (its `tensor` is returned)."""
    import torch

    def f_and_slope(alpha):  # D(α) = −E_q[ℓ], D′ = −Var_q(ℓ)
        mean, var = pair.slope(alpha)
        return -mean, -var

    if not isinstance(start, Alphas):
        start = Alphas(torch.full_like(pair.ft[:, 0], FALLBACK_ALPHA) if start is None else start.to(pair.ft.dtype))
    origin = start.host  # the warm steps replace the list, never change it
    if start.view is not None and pair.ft.dtype == start.tensor.dtype == torch.float32:
        from steps.qstar.chernoff import chernoff_rows

        if chernoff_rows(pair.ft.numpy(), pair.ell.numpy(), start.view, tol, _MAX_STEP, 10, _EQUAL_TOL):
            start.host = start.view.tolist()
            return start.tensor  # equal rows are 1/2 already
    elif _warm_kl_symmetry(pair, start, tol):
        settled = pair.settle(start.tensor)
        return start.tensor if settled is start.tensor else start.set(settled)
    like = start.tensor
    alpha, _ = _bracketed_newton(f_and_slope, like.shape[0], like, tol, max_iter, start=like.new_tensor(origin))
    return start.set(pair.settle(alpha))


def alpha_kl_symmetry(lp: torch.Tensor, lt: torch.Tensor, tol: float = 1e-6, max_iter: int = 30,
                      start: torch.Tensor | None = None) -> torch.Tensor:
    """α with KL(q_α‖π_θ) = KL(q_α‖π_t): root of D(α) = −E_q[ℓ], D′ = −Var_q(ℓ)."""
    return _kl_symmetry(Pair.of(lp, lt), tol, max_iter, start)


def alpha_ess_balance(lp: torch.Tensor, lt: torch.Tensor, tol: float = 1e-6, max_iter: int = 40,
                      start: torch.Tensor | None = None) -> torch.Tensor:
    """α with ESS_θ = ESS_t: root of g(α) = ψ(2−α) − ψ(−α), g′ = −ψ′(2−α) + ψ′(−α)."""
    return _ess_balance(Pair.of(lp, lt), tol, max_iter, start)


def _ess_balance(pair: Pair, tol: float, max_iter: int, start: torch.Tensor | None) -> torch.Tensor:
    def f_and_slope(alpha):
        _, _, p_hi, m_hi = pair.at(2 - alpha)
        _, _, p_lo, m_lo = pair.at(-alpha)
        return p_hi - p_lo, m_lo - m_hi

    return _root(pair, f_and_slope, tol, max_iter, start)


def choose_alpha(method: str, lp: torch.Tensor, lt: torch.Tensor, value: float = 0.5,
                 start: torch.Tensor | None = None) -> torch.Tensor:
    """α per row of [B, V] log-probs by `method` (one of ALPHA_METHODS); `start` warm-starts
    the root-finders (the previous token's α: the same root, found in fewer steps)."""
    return _choose(method, Pair.of(lp, lt), value, start)


def _choose(method: str, pair: Pair, value: float, start: Alphas | torch.Tensor | None) -> torch.Tensor:
    import torch
    if method == "fixed":
        return torch.full(pair.ft.shape[:1], float(value), dtype=pair.ft.dtype, device=pair.ft.device)
    if method == "entropy":
        return _entropy(pair)
    if method == "kl_symmetry":
        return _kl_symmetry(pair, 1e-6, 30, start)
    if method == "ess_balance":
        if isinstance(start, Alphas):
            return start.set(_ess_balance(pair, 1e-6, 40, start.tensor))
        return _ess_balance(pair, 1e-6, 40, start)
    raise ValueError(f"unknown alpha method {method!r}; expected one of {', '.join(ALPHA_METHODS)}")


def position(method: str, logps: torch.Tensor, value: float = 0.5, start: Alphas | torch.Tensor | None = None,
             psi_out: torch.Tensor | None = None, mean_out: torch.Tensor | None = None):
    """One position of q* sampling from both models' log-probs stacked as [2, B, V]: α by
    `method` (`choose_alpha`; a root-finder's α is also left in an `Alphas` start), log q_α and
    q_α [B, V], ψ at (α, −α, 2−α) [3, B] and E_q[ℓ] [B], the last two written into `psi_out`
    and `mean_out` when given (the sampler's per-token record; `diagnostics` turns them into
    KLs and the ESS ratio after the last token)."""
    pair = Pair(logps)
    alpha = _choose(method, pair, value, start)
    return (alpha, *_q_at(pair, alpha, psi_out, mean_out))


def _q_at(pair: Pair, alpha: torch.Tensor, psi_out=None, mean_out=None):
    """(log q_α, q_α, ψ at (α, −α, 2−α), E_q[ℓ]) for α of shape [B], from one log_softmax."""
    import torch
    x = pair.mix(torch.stack([alpha, -alpha, 2 - alpha]))
    lx = x.log_softmax(dim=-1)  # x − ψ: at the largest x, ψ = x − lx without cancellation
    p = torch.sub(x.amax(-1), lx.amax(-1), out=psi_out)
    lq = lx[0]
    q = lq.exp()
    return lq, q, p, torch.linalg.vecdot(q, pair.ell, out=mean_out)


def diagnostics(alpha: torch.Tensor, psi3: torch.Tensor, mean: torch.Tensor) -> dict[str, torch.Tensor]:
    """KL to each model, their gap and the ESS ratio from `position`'s α, ψ at (α, −α, 2−α) and
    E_q[ℓ] (any leading shape; ψ's three values on the axis before the rows). With log q = lt +
    α·ℓ − ψ(α): KL(q‖π_θ) = −(1−α)·E_q[ℓ] − ψ(α) and KL(q‖π_t) = α·E_q[ℓ] − ψ(α), and their gap is
    |E_q[ℓ]|; ESS_θ/ESS_t = exp(ψ(−α) − ψ(2−α))."""
    import torch
    p0, p1, p2 = psi3.unbind(-2)
    neg_p = -p0
    return {
        "kl_theta": torch.addcmul(neg_p, alpha - 1, mean),
        "kl_t": torch.addcmul(neg_p, alpha, mean),
        "kl_gap": mean.abs(),
        "ess_ratio": torch.exp(p1 - p2),
    }


def token_diagnostics(lp: torch.Tensor, lt: torch.Tensor, alpha) -> dict[str, torch.Tensor]:
    """Per-row diagnostics of q_α: log q and q, KL to each model and their gap, ESS ratio."""
    import torch
    a = torch.as_tensor(alpha, dtype=lp.dtype, device=lp.device).expand(lp.shape[0])
    lq, q, p, mean = _q_at(Pair.of(lp, lt), a)
    return {"log_q": lq, "q": q, **diagnostics(a, p, mean)}


def token_step(method: str, lp: torch.Tensor, lt: torch.Tensor, value: float = 0.5,
               start: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """α (`choose_alpha`) and `token_diagnostics` of one position, sharing their set-up."""
    import torch
    alpha, lq, q, p, mean = position(method, torch.stack([lp, lt]), value, start)
    return alpha, {"log_q": lq, "q": q, **diagnostics(alpha, p, mean)}


def kish_ess(log_weights) -> float:
    """Kish effective sample size (Σw)²/Σw² from log-weights, computed stably."""
    import torch
    lw = torch.as_tensor(log_weights, dtype=torch.float64)
    if lw.numel() == 0:
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def chi_square_stat(counts, probs) -> tuple[float, int]:
    """Pearson χ² of observed counts against expected probabilities; returns (stat, dof)."""
    import torch
    counts = torch.as_tensor(counts, dtype=torch.float64)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    expected = counts.sum() * probs
    keep = expected > 0
    stat = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    return stat, int(keep.sum()) - 1


def chi_square_sf(stat: float, dof: int) -> float:
    """Survival function of χ²(dof) via the regularised upper incomplete gamma (no scipy)."""
    import torch
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                        torch.tensor(stat / 2, dtype=torch.float64)))


__all__ = [
    "ALPHA_METHODS", "FALLBACK_ALPHA", "Alphas", "alpha_entropy", "alpha_ess_balance", "alpha_kl_symmetry",
    "chi_square_sf", "chi_square_stat", "choose_alpha", "entropy", "ess_fractions", "ess_ratio",
    "diagnostics", "kish_ess", "kl", "log_q", "mix_logits", "position", "psi", "token_diagnostics", "token_step",
]
