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

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside each function: `recipe plan` imports steps/ and must stay fast
    import torch

ALPHA_METHODS = ("fixed", "entropy", "kl_symmetry", "ess_balance")
FALLBACK_ALPHA = 0.5
_EQUAL_TOL = 1e-6  # max |lp − lt| below which the two distributions count as equal


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


# ----------------------------------------------------------------------------- α methods

def alpha_entropy(lp: torch.Tensor, lt: torch.Tensor) -> torch.Tensor:
    import torch
    h_theta, h_t = entropy(lp), entropy(lt)
    total = h_theta + h_t
    return torch.where(total > 1e-12, h_theta / total.clamp(min=1e-12), torch.full_like(total, FALLBACK_ALPHA))


def _moments(lp: torch.Tensor, lt: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_q[ℓ], Var_q[ℓ]) under q_α."""
    import torch
    ell = _finite(lp) - _finite(lt)
    q = torch.softmax(mix_logits(_finite(lp), _finite(lt), alpha), dim=-1)
    mean = (q * ell).sum(-1)
    var = (q * (ell - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, var


def _equal_rows(lp: torch.Tensor, lt: torch.Tensor) -> torch.Tensor:
    return (_finite(lp) - _finite(lt)).abs().amax(-1) < _EQUAL_TOL


def _bracketed_newton(step_fn, batch: int, like: torch.Tensor, tol: float, max_iter: int,
                      alpha_tol: float = 1e-6) -> tuple[torch.Tensor, int]:
    """Root of a strictly decreasing f on [0, 1] with f(0) ≥ 0 ≥ f(1), per row.

    `step_fn(α) -> (f, f′)`. Newton steps that leave the current bracket are replaced by
    bisection, so convergence is guaranteed; Newton makes it quadratic near the root. A row is
    done when |f| < tol or its last step moved α by less than `alpha_tol` (float32 cannot
    always bring f below tol). Returns (α, iterations used).
    """
    import torch
    alpha = torch.full((batch,), FALLBACK_ALPHA, dtype=like.dtype, device=like.device)
    lo = torch.zeros_like(alpha)
    hi = torch.ones_like(alpha)
    done = torch.zeros(batch, dtype=torch.bool, device=like.device)
    for it in range(1, max_iter + 1):
        f, fprime = step_fn(alpha)
        done = done | (f.abs() < tol)
        if bool(done.all()):
            return alpha, it
        lo = torch.where(f > 0, alpha, lo)
        hi = torch.where(f > 0, hi, alpha)
        safe = fprime.abs() > 1e-12
        newton = alpha - f / torch.where(safe, fprime, torch.ones_like(fprime))
        inside = safe & (newton >= lo) & (newton <= hi)
        nxt = torch.where(done, alpha, torch.where(inside, newton, (lo + hi) / 2))
        done = done | ((nxt - alpha).abs() < alpha_tol)
        alpha = nxt
    return alpha, max_iter


def alpha_kl_symmetry(lp: torch.Tensor, lt: torch.Tensor, tol: float = 1e-6, max_iter: int = 30) -> torch.Tensor:
    """α with KL(q_α‖π_θ) = KL(q_α‖π_t): root of D(α) = −E_q[ℓ], D′ = −Var_q(ℓ)."""
    import torch

    def step(alpha):
        mean, var = _moments(lp, lt, alpha)
        return -mean, -var

    alpha, _ = _bracketed_newton(step, lp.shape[0], lp, tol, max_iter)
    return torch.where(_equal_rows(lp, lt), torch.full_like(alpha, FALLBACK_ALPHA), alpha)


def alpha_ess_balance(lp: torch.Tensor, lt: torch.Tensor, tol: float = 1e-6, max_iter: int = 40) -> torch.Tensor:
    """α with ESS_θ = ESS_t: root of g(α) = ψ(2−α) − ψ(−α), g′ = −ψ′(2−α) + ψ′(−α)."""
    import torch

    def step(alpha):
        m_hi, _ = _moments(lp, lt, 2 - alpha)
        m_lo, _ = _moments(lp, lt, -alpha)
        g = psi(lp, lt, 2 - alpha) - psi(lp, lt, -alpha)
        return g, m_lo - m_hi

    alpha, _ = _bracketed_newton(step, lp.shape[0], lp, tol, max_iter)
    return torch.where(_equal_rows(lp, lt), torch.full_like(alpha, FALLBACK_ALPHA), alpha)


def choose_alpha(method: str, lp: torch.Tensor, lt: torch.Tensor, value: float = 0.5) -> torch.Tensor:
    """α per row of [B, V] log-probs by `method` (one of ALPHA_METHODS)."""
    import torch
    if method == "fixed":
        return torch.full((lp.shape[0],), float(value), dtype=lp.dtype, device=lp.device)
    if method == "entropy":
        return alpha_entropy(lp, lt)
    if method == "kl_symmetry":
        return alpha_kl_symmetry(lp, lt)
    if method == "ess_balance":
        return alpha_ess_balance(lp, lt)
    raise ValueError(f"unknown alpha method {method!r}; expected one of {', '.join(ALPHA_METHODS)}")


def token_diagnostics(lp: torch.Tensor, lt: torch.Tensor, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row diagnostics of q_α: log q, KL to each model, ESS ratio."""
    lq = log_q(lp, lt, alpha)
    return {
        "log_q": lq,
        "kl_theta": kl(lq, lp),
        "kl_t": kl(lq, lt),
        "ess_ratio": ess_ratio(lp, lt, alpha),
    }


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
    "ALPHA_METHODS", "FALLBACK_ALPHA", "alpha_entropy", "alpha_ess_balance", "alpha_kl_symmetry",
    "chi_square_sf", "chi_square_stat", "choose_alpha", "entropy", "ess_fractions", "ess_ratio",
    "kish_ess", "kl", "log_q", "mix_logits", "psi", "token_diagnostics",
]
