import math, numpy as np, pytest, torch
from ntk_finetune.spectrum import (eigendecomposition, fit_power_law, fit_exponential, compare_decay_fits,
                                   decay_over_subsets, effective_rank, kernel_target_alignment, residual_energy)

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_eigendecomposition_reconstructs(seed, dtype):
    rng = np.random.default_rng(seed); A = rng.standard_normal((50, 20)).astype(dtype)
    K = A @ A.T / 50
    e = eigendecomposition(K, sym_tol=1e-5)
    assert e.eigvals.dtype == torch.float64 and (e.eigvals >= 0).all()
    np.testing.assert_allclose(((e.eigvecs * e.eigvals) @ e.eigvecs.T).numpy(), K.astype(np.float64), atol=1e-5 if dtype == np.float32 else 1e-12)
    assert e.n_clipped <= 30 and e.condition_number == math.inf

def test_negative_eigenvalue_warns():
    with pytest.warns(UserWarning, match='not PSD'): e = eigendecomposition(np.diag([1.0, -0.1]))
    assert e.n_clipped == 1 and e.min_raw == pytest.approx(-0.1)

@pytest.mark.parametrize('beta', [0.55, 1.0, 2.0])
def test_power_law_ci_coverage(beta):
    """Noisy power laws: the 95 % interval covers the true β in about 95 % of draws (binomial 3-sd band)."""
    rng = np.random.default_rng(int(beta * 100)); k = np.arange(1, 31); cover = 0; R = 400
    for _ in range(R):
        w = k ** (-2 * beta) * np.exp(0.005 * rng.standard_normal(30))   # small enough that the order never changes
        assert (np.diff(w) < 0).all(); f = fit_power_law(w, k_max=30)
        cover += f.ci95[0] <= beta <= f.ci95[1]
    assert abs(cover / R - 0.95) < 3 * math.sqrt(0.95 * 0.05 / R) + 0.02, cover / R

def test_exponential_vs_power():
    k = np.arange(1, 80)
    assert compare_decay_fits(np.exp(-0.2 * k))['better'] == 'exponential'
    assert compare_decay_fits(k ** -1.5)['better'] == 'power'
    assert fit_exponential(np.exp(-0.2 * k)).rate == pytest.approx(0.2, rel=1e-10)

def test_decay_over_subsets_known_kernel():
    """Sobolev kernel min(x, x') on uniform design: population eigenvalues 1/(π(k-1/2))², whose OLS fit over the same
    k-range is the known answer (β = 1 asymptotically; the (k - 1/2) makes the finite-range fit a little steeper)."""
    rng = np.random.default_rng(0); x = rng.uniform(size=500)
    d = decay_over_subsets(np.minimum(x[:, None], x[None, :]), 100, 5, seed=1, k_max=40)
    k = np.arange(1, 41); ref = fit_power_law(1 / (np.pi * (k - 0.5))**2).beta
    assert len(d['betas']) == 5 and abs(d['beta_mean'] - ref) < 0.03 and d['beta_sd'] < 0.05, (d['beta_mean'], ref)

def test_diagnostics_bad_inputs():
    with pytest.raises(ValueError, match='empty'): effective_rank([])
    with pytest.raises(ValueError, match='non-finite'): kernel_target_alignment(np.full((2, 2), np.nan), [1, 1])
    with pytest.raises(ValueError, match='not symmetric'): residual_energy(np.array([[1., 1.], [0., 1.]]), [1., 1.])
    r = residual_energy(np.eye(4), [1., 0, 0, 0]); assert r[-1] == pytest.approx(1.0)

@pytest.mark.parametrize('seed', range(3))
def test_resample_eigvals_matches_explicit_duplicates(seed):
    """The spectrum from the distinct examples and their counts is that of the explicit resampled Gram (duplicates and
    all) divided by its size; a permutation, which has no duplicates, gives the pool's own spectrum."""
    from ntk_finetune.spectrum import resample_eigvals
    rng = np.random.default_rng(seed); A = rng.standard_normal((40, 60)); G = A @ A.T
    idx = rng.integers(40, size=40); u = len(np.unique(idx))
    ref = np.linalg.eigvalsh(G[idx][:, idx] / 40)[::-1]
    got = resample_eigvals(G, idx).numpy()
    assert len(got) == u and np.allclose(got, ref[:u], rtol=1e-10, atol=1e-12 * ref[0])
    assert abs(ref[u:]).max() < 1e-10 * ref[0]   # the rest of the explicit spectrum is zero
    np.testing.assert_allclose(resample_eigvals(G, rng.permutation(40)).numpy(),
                               eigendecomposition(G / 40).eigvals.numpy(), rtol=1e-10, atol=1e-12 * ref[0])
    for bad in ([], [0, 40], [[0, 1]], [-1], [0.5, 1.7], [True, False]):
        with pytest.raises(ValueError, match='idx must be'): resample_eigvals(G, bad)

def _sobolev_pool(rng, N=100):
    x = rng.uniform(size=N); return torch.as_tensor(np.minimum(x[:, None], x[None, :]))

def test_decay_protocols_resample_leaves_the_others_alone():
    """The resamples are drawn after the subsets: turning them off changes no other protocol; bad sizes are refused."""
    from ntk_finetune.spectrum import decay_protocols
    G = _sobolev_pool(np.random.default_rng(0))
    a, b = decay_protocols(G, 50, 3, 5, n_resample=20), decay_protocols(G, 50, 3, 5, n_resample=0)
    assert 'resample' not in b and {k: v for k, v in a.items() if k != 'resample'} == b
    with pytest.raises(ValueError, match='resample_k_max must be'): decay_protocols(G, 50, resample_k_max=51)
    for kw in (dict(n_resample=-1), dict(n_resample=2.5), dict(n_subsets=0), dict(n_boot=-1)):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be an integer"): decay_protocols(G, 50, **kw)
    A = np.random.default_rng(1).standard_normal((5, 20))
    assert 'resample' not in decay_protocols(A @ A.T, 4, n_resample=0)   # a pool too small to resample, not asked to
