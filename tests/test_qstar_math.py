"""Known values and identities of the q* α methods (steps/qstar/alpha.py)."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steps.qstar import alpha as qm

ROOT = Path(__file__).resolve().parents[1]


def logp(*probs):
    return torch.tensor([probs], dtype=torch.float64).log()


def kl_direct(q, p):
    return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p) if qi > 0)


@pytest.mark.parametrize("theta, t, expected", [
    ((0.9, 0.1), (0.2, 0.8), 0.477244),
    ((0.5, 0.5), (0.01, 0.99), 0.620212),
])
def test_kl_symmetry_bernoulli_known_values(theta, t, expected):
    alpha = qm.alpha_kl_symmetry(logp(*theta), logp(*t))
    assert alpha.item() == pytest.approx(expected, abs=1e-6)
    lq = qm.log_q(logp(*theta), logp(*t), alpha)
    gap = qm.kl(lq, logp(*theta)) - qm.kl(lq, logp(*t))
    assert abs(gap.item()) < 1e-6


def test_kl_symmetry_swapping_models_gives_one_minus_alpha():
    a = qm.alpha_kl_symmetry(logp(0.2, 0.8), logp(0.9, 0.1)).item()
    assert a == pytest.approx(1 - 0.477244, abs=1e-6)


def test_mirror_image_categoricals_give_one_half():
    p = (0.6, 0.25, 0.1, 0.05)
    alpha = qm.alpha_kl_symmetry(logp(*p), logp(*reversed(p)))
    assert alpha.item() == pytest.approx(0.5, abs=1e-9)
    assert qm.alpha_ess_balance(logp(*p), logp(*reversed(p))).item() == pytest.approx(0.5, abs=1e-9)
    assert qm.alpha_entropy(logp(*p), logp(*reversed(p))).item() == pytest.approx(0.5, abs=1e-12)


def test_identical_distributions_fall_back_to_one_half():
    p = logp(0.7, 0.2, 0.1)
    for method in ("kl_symmetry", "ess_balance", "entropy"):
        assert qm.choose_alpha(method, p, p.clone()).item() == qm.FALLBACK_ALPHA
    # a degenerate (one-hot) pair: entropies are 0
    one_hot = torch.tensor([[0.0, -1e9]], dtype=torch.float64)
    assert qm.alpha_entropy(one_hot, one_hot).item() == qm.FALLBACK_ALPHA


def test_fixed_alpha_and_unknown_method():
    p, t = logp(0.9, 0.1), logp(0.2, 0.8)
    assert qm.choose_alpha("fixed", p, t, value=0.3).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown alpha method 'nope'"):
        qm.choose_alpha("nope", p, t)


def test_kl_and_q_agree_with_direct_computation():
    theta, t, a = (0.5, 0.3, 0.2), (0.1, 0.6, 0.3), 0.37
    w = [th ** a * tt ** (1 - a) for th, tt in zip(theta, t)]
    q = [x / sum(w) for x in w]
    lq = qm.log_q(logp(*theta), logp(*t), a)
    assert lq.exp()[0].tolist() == pytest.approx(q, rel=1e-12)
    assert qm.kl(lq, logp(*theta)).item() == pytest.approx(kl_direct(q, theta), rel=1e-12)
    assert qm.kl(lq, logp(*t)).item() == pytest.approx(kl_direct(q, t), rel=1e-12)
    diag = qm.token_diagnostics(logp(*theta), logp(*t), torch.tensor([a], dtype=torch.float64))
    assert diag["kl_theta"].item() == pytest.approx(kl_direct(q, theta), rel=1e-12)


def test_ess_formulas_agree_with_direct_computation():
    theta, t, a = (0.5, 0.3, 0.2), (0.1, 0.6, 0.3), 0.37
    w = [th ** a * tt ** (1 - a) for th, tt in zip(theta, t)]
    q = [x / sum(w) for x in w]
    # ESS/N of weights w = π/q under q: (E_q w)² / E_q w² = 1 / Σ π²/q
    ess_theta = 1 / sum(th ** 2 / qi for th, qi in zip(theta, q))
    ess_t = 1 / sum(tt ** 2 / qi for tt, qi in zip(t, q))
    e_theta, e_t = qm.ess_fractions(logp(*theta), logp(*t), a)
    assert e_theta.item() == pytest.approx(ess_theta, rel=1e-12)
    assert e_t.item() == pytest.approx(ess_t, rel=1e-12)
    assert qm.ess_ratio(logp(*theta), logp(*t), a).item() == pytest.approx(ess_theta / ess_t, rel=1e-12)


def test_ess_balance_equalises_ess_and_differs_from_chernoff_point():
    p, t = logp(0.9, 0.1), logp(0.2, 0.8)
    a_ess = qm.alpha_ess_balance(p, t)
    assert qm.ess_ratio(p, t, a_ess).item() == pytest.approx(1.0, abs=1e-6)
    a_kl = qm.alpha_kl_symmetry(p, t)
    assert abs(a_ess.item() - a_kl.item()) > 1e-3  # the Chernoff point does not balance ESS in general


def test_batched_rows_are_solved_independently_in_float32():
    torch.manual_seed(0)
    lp = torch.randn(64, 50).log_softmax(-1)
    lt = (2 * torch.randn(64, 50)).log_softmax(-1)
    alpha = qm.alpha_kl_symmetry(lp, lt)
    assert alpha.dtype == torch.float32 and alpha.shape == (64,)
    assert ((alpha > 0) & (alpha < 1)).all()
    lq = qm.log_q(lp, lt, alpha)
    assert (qm.kl(lq, lp) - qm.kl(lq, lt)).abs().max().item() < 1e-4
    single = qm.alpha_kl_symmetry(lp[5:6], lt[5:6])
    assert single.item() == pytest.approx(alpha[5].item(), abs=1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 2e-5)])
@pytest.mark.parametrize("method", ["kl_symmetry", "ess_balance"])
def test_warm_started_roots_are_the_cold_roots(method, dtype, tol):
    # the sampler starts each token's solve from the previous token's α: near, far, at the ends
    torch.manual_seed(1)
    lp = (3 * torch.randn(32, 200)).log_softmax(-1).to(dtype)
    lt = (3 * torch.randn(32, 200)).log_softmax(-1).to(dtype)
    solve = qm.alpha_kl_symmetry if method == "kl_symmetry" else qm.alpha_ess_balance
    cold = solve(lp, lt)
    for start in (cold + 0.01, (cold - 0.3).clamp(0, 1), torch.zeros_like(cold), torch.ones_like(cold)):
        warm = solve(lp, lt, start=start)
        assert warm.dtype == dtype and (warm - cold).abs().max().item() < tol
    assert qm.choose_alpha(method, lp, lt, start=cold).tolist() == pytest.approx(cold.tolist(), abs=tol)
    same = qm.choose_alpha(method, lp[:1], lp[:1].clone(), start=torch.tensor([0.9], dtype=dtype))
    assert same.item() == qm.FALLBACK_ALPHA  # equal distributions: 1/2 whatever the start


def test_an_alphas_start_carries_the_root_and_a_tensor_start_is_left_as_it_was():
    torch.manual_seed(4)
    lp = (3 * torch.randn(8, 100)).log_softmax(-1)
    lt = (3 * torch.randn(8, 100)).log_softmax(-1)
    start = torch.full((8,), 0.3)
    cold = qm.alpha_kl_symmetry(lp, lt, start=start)
    assert start.tolist() == [pytest.approx(0.3)] * 8 and cold.data_ptr() != start.data_ptr()
    carried = qm.Alphas(start)
    for method in ("kl_symmetry", "ess_balance"):
        alpha = qm.choose_alpha(method, lp, lt, start=carried)
        assert alpha is carried.tensor and carried.host == pytest.approx(alpha.tolist(), abs=1e-7)
        assert alpha.tolist() == pytest.approx(qm.choose_alpha(method, lp, lt).tolist(), abs=2e-5)


def test_kl_symmetry_pins_alpha_where_the_gap_is_flat():
    # both models put 1 − 1e-5 on one token and differ only in the rest: D(α) moves by under
    # 1e-6 within ±0.05 of the root, so stopping at |D| < 1e-6 would leave α where it started
    torch.manual_seed(3)

    def dist():
        rest = (3 * torch.randn(8, 49, dtype=torch.float64)).softmax(-1) * 1e-5
        return torch.cat([torch.full((8, 1), 1 - 1e-5, dtype=torch.float64), rest], -1).log()

    lp, lt = dist(), dist()
    exact = qm.alpha_kl_symmetry(lp, lt, tol=1e-15, max_iter=200)
    lq = qm.log_q(lp, lt, exact)
    assert (qm.kl(lq, lp) - qm.kl(lq, lt)).abs().max().item() < 1e-14
    for start in (None, exact + 0.05, exact - 0.05):  # cold, and warm as the sampler calls it
        alpha = qm.alpha_kl_symmetry(lp.float(), lt.float(), start=None if start is None else start.float())
        assert (alpha.double() - exact).abs().max().item() < 1e-6


def _hard_rows(dtype):
    """32 rows of 200 tokens: peaked and flat pairs, tokens one model masks (−inf), a row where the
    two are equal and one where they differ by under 1e-6."""
    torch.manual_seed(5)
    scale = torch.linspace(0.5, 8, 32, dtype=torch.float64).unsqueeze(-1)
    lp = (scale * torch.randn(32, 200, dtype=torch.float64)).log_softmax(-1)
    lt = (scale * torch.randn(32, 200, dtype=torch.float64)).log_softmax(-1)
    lp[3, :20] = -math.inf
    lt[4, 50:] = -math.inf
    lp, lt = lp.log_softmax(-1), lt.log_softmax(-1)
    lt[7] = lp[7]
    lt[8] = lp[8] + 4e-7
    return lp.to(dtype), lt.to(dtype)


def test_compiled_rows_agree_with_the_torch_solver_and_the_exact_root():
    # float32 on the CPU takes chernoff.py's compiled per-row steps, float64 the torch solver
    from steps.qstar.chernoff import chernoff_rows

    lp, lt = _hard_rows(torch.float64)
    exact = qm.alpha_kl_symmetry(lp, lt, tol=1e-15, max_iter=200)
    assert exact[7].item() == exact[8].item() == qm.FALLBACK_ALPHA
    # 3 and 4: from α = 0 or 1 they bend sharply (see the next test) and both solvers hand them on;
    # 8: the torch solver steps it 10 times, then `settle`s it
    easy = [i for i in range(32) if i not in (3, 4, 8)]
    pair = qm.Pair.of(lp[easy].float(), lt[easy].float())
    for start in (torch.full((32,), 0.5), exact.float() + 0.01, torch.zeros(32), torch.ones(32)):
        compiled = start[easy].clone()
        # 30 steps: from 0 or 1 a row can take 14 (E_q[ℓ²] steps are short far from the root)
        assert chernoff_rows(pair.ft.numpy(), pair.ell.numpy(), compiled.numpy(), 1e-6, 0.2, 30, 1e-6)
        assert (compiled.double() - exact[easy]).abs().max().item() < 2e-6
        stepped = qm.Alphas(start[easy])
        assert qm._warm_kl_symmetry(pair, stepped, 1e-6, max_iter=30)
        assert (pair.settle(stepped.tensor) - compiled).abs().max().item() < 2e-6
        assert (qm.alpha_kl_symmetry(lp.float(), lt.float(), start=start).double() - exact).abs().max().item() < 2e-6


def test_a_step_under_the_tolerance_is_not_taken_for_the_root_where_the_gap_bends_sharply():
    # row 4: π_t rules out tokens π_θ gives mass (ℓ ≈ 1e4 there); the root is 0.9988, and from
    # 0.9, 1 or past 1 every Newton step is about 1e-4, under √tol/3. Both solvers used to stop
    # there, 1e-3 off; now they see the bend (E_q[ℓ²|ℓ|]/E_q[ℓ²] ≈ 1e4) and hand the row to the
    # bracketed solver
    from steps.qstar.chernoff import chernoff_rows

    lp, lt = _hard_rows(torch.float64)
    lp, lt = lp[4:5], lt[4:5]
    exact = qm.alpha_kl_symmetry(lp, lt, tol=1e-15, max_iter=200).item()
    assert 0.998 < exact < 0.9995
    pair = qm.Pair.of(lp.float(), lt.float())
    for start in (0.5, 0.9, 1.0):
        one = torch.tensor([start])
        assert not chernoff_rows(pair.ft.numpy(), pair.ell.numpy(), one.clone().numpy(), 1e-6, 0.2, 10, 1e-6)
        assert not qm._warm_kl_symmetry(pair, qm.Alphas(one), 1e-6)
        assert qm.alpha_kl_symmetry(lp.float(), lt.float(), start=one).item() == pytest.approx(exact, abs=1e-6)
        assert qm.alpha_kl_symmetry(lp, lt, start=one.double()).item() == pytest.approx(exact, abs=1e-7)


def test_compiled_sums_match_float64():
    # chernoff.py writes exp out (Cephes' expf) so that it vectorises: its sums against float64's
    import numpy as np

    from steps.qstar.chernoff import compiled

    _, sums = compiled()
    rng = np.random.default_rng(0)
    ft = np.concatenate([np.linspace(-100, 0, 4001), rng.normal(0, 10, 999), [-1e4]]).astype(np.float32)
    ell = rng.normal(0, 3, ft.size).astype(np.float32)
    for a in (0.0, 0.37, 1.0, -0.2, 1.2):
        x = ft.astype(np.float64) + np.float32(a) * ell.astype(np.float64)
        e = np.exp(x - x.max())
        got = sums(ft, ell, np.float32(a), np.empty(ft.size, np.float32), bits := np.empty(ft.size, np.int32),
                   bits.view(np.float32))
        el = e * ell
        assert got == pytest.approx([el.sum(), (el * ell).sum(), (el * ell * np.abs(ell)).sum()], rel=1e-5)


def test_the_compiled_solver_runs_where_its_cache_cannot_be_written():
    # numba refuses `cache=True` when it finds no writable folder (read-only install and home)
    code = ("from numba.core import caching; import numpy as np; "
            "(getattr(caching, 'CacheImpl', None) or caching._CacheImpl)._locator_classes = []; "
            "from steps.qstar.chernoff import chernoff_rows; "
            "ft = np.log(np.array([[0.5, 0.5]], np.float32)); ell = np.log(np.array([[0.9, 0.1]], np.float32)) - ft; "
            "alpha = np.full(1, 0.5, np.float32); print(chernoff_rows(ft, ell, alpha, 1e-6, 0.2, 10, 1e-6), alpha[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    ok, alpha = out.stdout.split()
    assert ok == "True" and 0 < float(alpha) < 1


def test_a_row_that_never_settles_falls_back_to_the_bracketed_solver():
    from steps.qstar.chernoff import chernoff_rows

    lp, lt = _hard_rows(torch.float32)
    lp[2, 5] = math.nan
    pair = qm.Pair.of(lp, lt)
    alpha = torch.full((32,), 0.5)
    assert not chernoff_rows(pair.ft.numpy(), pair.ell.numpy(), alpha.numpy(), 1e-6, 0.2, 10, 1e-6)
    start = torch.full((32,), 0.25)
    out = qm.alpha_kl_symmetry(lp, lt, start=start)
    assert start.tolist() == [0.25] * 32  # the bracketed solver started from the caller's α, not the stepped one
    assert out.shape == (32,) and (out[3:] - qm.alpha_kl_symmetry(lp[3:], lt[3:])).abs().max().item() < 2e-5


def test_token_step_diagnostics_agree_with_direct_computation():
    torch.manual_seed(2)
    lp = (2 * torch.randn(8, 30, dtype=torch.float64)).log_softmax(-1)
    lt = (2 * torch.randn(8, 30, dtype=torch.float64)).log_softmax(-1)
    for method in ("fixed", "entropy", "kl_symmetry", "ess_balance"):
        alpha, diag = qm.token_step(method, lp, lt, 0.3)
        assert alpha.tolist() == pytest.approx(qm.choose_alpha(method, lp, lt, 0.3).tolist(), abs=1e-9)
        lq = qm.log_q(lp, lt, alpha)
        assert torch.allclose(diag["log_q"], lq, atol=1e-12) and torch.allclose(diag["q"], lq.exp(), atol=1e-12)
        assert torch.allclose(diag["kl_theta"], qm.kl(lq, lp), rtol=1e-9, atol=1e-12)
        assert torch.allclose(diag["kl_t"], qm.kl(lq, lt), rtol=1e-9, atol=1e-12)
        assert torch.allclose(diag["kl_gap"], (qm.kl(lq, lp) - qm.kl(lq, lt)).abs(), atol=1e-12)
        assert torch.allclose(diag["ess_ratio"], qm.ess_ratio(lp, lt, alpha), rtol=1e-9)


def test_sampled_frequencies_match_q_chi_square():
    theta, t = logp(0.5, 0.2, 0.2, 0.1), logp(0.1, 0.1, 0.3, 0.5)
    alpha = qm.alpha_kl_symmetry(theta, t)
    q = qm.log_q(theta, t, alpha).exp()[0]
    gen = torch.Generator().manual_seed(1234)
    draws = torch.multinomial(q.float(), 20000, replacement=True, generator=gen)
    counts = torch.bincount(draws, minlength=4)
    stat, dof = qm.chi_square_stat(counts, q)
    assert dof == 3
    assert qm.chi_square_sf(stat, dof) > 0.001
    # and the test has power: frequencies from π_θ are rejected as samples of q
    wrong = torch.bincount(torch.multinomial(theta.exp()[0].float(), 20000, replacement=True, generator=gen),
                           minlength=4)
    assert qm.chi_square_sf(*qm.chi_square_stat(wrong, q)) < 1e-6


def test_kish_ess():
    assert qm.kish_ess([0.0, 0.0, 0.0, 0.0]) == pytest.approx(4.0)
    assert qm.kish_ess([0.0, -1000.0]) == pytest.approx(1.0)
    assert qm.kish_ess([]) == 0.0
