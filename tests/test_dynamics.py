import numpy as np, pytest, torch
from ntk_finetune.dynamics import kernel_gd, kernel_gd_iterate, kernel_ridge, ridge_equivalent_lambda

def _problem(seed, n=30, m=6, rank=None):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n + m, rank or 12))
    G = A @ A.T
    K, Kt = G[:n, :n] / n, G[n:, :n] / n
    return K, Kt, rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(m)

@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('rank', [None, 3])            # full rank and rank-deficient (zero eigenvalues)
@pytest.mark.parametrize('frac', [0.1, 0.9, 1.9])      # step size as a fraction of 2/λ_1... up to near the edge
def test_closed_form_matches_iteration(seed, rank, frac):
    K, Kt, y, f0, f0t = _problem(seed, rank=rank)
    a = frac / np.linalg.eigvalsh(K).max()
    p, r = kernel_gd(K, y, a, 60, f0, Kt, f0t), kernel_gd_iterate(K, y, a, 60, f0, Kt, f0t)
    torch.testing.assert_close(p.train, r.train, rtol=0, atol=1e-10 * max(1, r.train.abs().max().item()))
    torch.testing.assert_close(p.test, r.test, rtol=0, atol=1e-10 * max(1, r.test.abs().max().item()))

def test_numpy_and_torch_inputs_agree():
    K, Kt, y, f0, f0t = _problem(0)
    a = kernel_gd(K, y, 0.01, 5, f0, Kt, f0t); b = kernel_gd(torch.tensor(K), torch.tensor(y), 0.01, 5, torch.tensor(f0), torch.tensor(Kt), torch.tensor(f0t))
    torch.testing.assert_close(a.test, b.test, rtol=0, atol=0)

def test_long_run_converges_to_projection_from_f0():
    K, Kt, y, f0, f0t = _problem(1, rank=5)          # rank 5 < n: GD learns range(K) and keeps f0 on its complement
    a = 1.0 / np.linalg.eigvalsh(K).max()
    p = kernel_gd(K, y, a, 100000, f0)
    V = np.linalg.eigh(K)[1][:, -5:]; P = V @ V.T
    torch.testing.assert_close(p.train[-1], torch.tensor(f0 + P @ (y - f0)), rtol=0, atol=1e-8)

def test_divergent_step_warns():
    K, Kt, y, f0, f0t = _problem(2)
    with pytest.warns(UserWarning, match='diverges'): kernel_gd(K, y, 3 / np.linalg.eigvalsh(K).max(), 3)

def test_ridge_correspondence_improves_with_t():
    K, Kt, y, f0, f0t = _problem(3, n=60, rank=None)
    a = 1.0 / np.linalg.eigvalsh(K).max()
    for t in (10, 100, 1000):
        gd = kernel_gd(K, y, a, t, f0, Kt, f0t).test[-1]
        rr = kernel_ridge(K, y, ridge_equivalent_lambda(a, t), f0, Kt, f0t)[1]
        assert (gd - rr).norm() / (gd - torch.tensor(f0t)).norm() < 0.3

def test_bad_inputs():
    K, Kt, y, f0, f0t = _problem(0)
    with pytest.raises(ValueError, match='steps must be'): kernel_gd(K, y, 0.1, -1)
    with pytest.raises(ValueError, match='not symmetric'): kernel_gd(K + np.triu(np.ones_like(K)), y, 0.1, 2)
    with pytest.raises(ValueError, match='f0_test has'): kernel_gd(K, y, 0.1, 2, f0, Kt, f0t[:2])
    with pytest.raises(ValueError, match='t must be'): ridge_equivalent_lambda(0.1, 0)


def test_convergence_horizon_of_a_kernel_fitted_in_one_step():
    "A rank-one kernel at α = 1/λ_1: every mode above the floor converges in one step (log(0) must not be taken)."
    import torch
    from ntk_finetune.spectrum import eigendecomposition
    from ntk_finetune.dynamics import convergence_horizon, kernel_gd_curve
    v = torch.ones(6, dtype=torch.float64) / 6 ** 0.5
    K = 2.0 * torch.outer(v, v)
    assert convergence_horizon(eigendecomposition(K), 0.5) == 1
    cur = kernel_gd_curve(K, torch.arange(6.0, dtype=torch.float64), 0.5)
    assert cur.horizon >= 1 and cur.train_loss[-1] <= cur.train_loss[0]


def test_default_step_size_is_rwy_condition_and_stable():
    "α = min(1, 1/λ₁): RWY's condition, never at the 2/λ₁ divergence, and accepted by the strict step check."
    from ntk_finetune.dynamics import default_step_size, _check_step
    assert default_step_size(4.0) == 0.25 and default_step_size(0.5) == 1.0
    for lam1 in (1e-3, 0.5, 1.0, 7.0, 1e4):
        a = default_step_size(lam1)
        assert a * lam1 <= 1 and _check_step(a, lam1, strict=True) == a
    with pytest.raises(ValueError, match='diverges'):
        _check_step(0.5, 4.0, strict=True)
