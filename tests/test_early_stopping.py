import math, numpy as np, pytest, torch
from ntk_finetune.spectrum import eigendecomposition
from ntk_finetune.dynamics import kernel_gd
from ntk_finetune.early_stopping import (local_rademacher_complexity, critical_radius, rwy_stopping_time, cp_risk,
    cp_stopping_time, discrepancy_stopping_time, estimate_noise, estimate_norm, paper_optimal_stopping_time, predicted_rate,
    stopping_schedule)

def sobolev(n, seed):
    rng = np.random.default_rng(seed); x = np.sort(rng.uniform(size=n))
    return x, np.minimum(x[:, None], x[None, :]) / n

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('sigma, a, C', [(0.5, 1.0, 1.0), (0.1, 0.5, 2.0), (1.0, 0.2, 0.3)])
def test_rwy_equals_definition_scan(seed, sigma, a, C):
    _, K = sobolev(80, seed); w = eigendecomposition(K).eigvals
    T = rwy_stopping_time(w, sigma, a, C)
    t = torch.arange(1, 20 * (T + 2) + 1, dtype=torch.float64); eta = a * t
    v = local_rademacher_complexity(w, 1 / torch.sqrt(eta)) > C / (2 * math.e * sigma * eta)
    assert T == int(t[v.nonzero()[0, 0]]) - 1
    assert T == math.floor(1 / (a * critical_radius(w, sigma, C)**2))

def test_rwy_max_steps_and_bad_step():
    _, K = sobolev(50, 0); w = eigendecomposition(K).eigvals
    with pytest.warns(UserWarning, match='did not stop'): assert rwy_stopping_time(w, 0.01, 1.0, max_steps=2) == 2
    with pytest.raises(ValueError, match='RWY 2014 require'): rwy_stopping_time(w, 0.1, 1.5)

@pytest.mark.parametrize('seed', range(3))
def test_cp_is_unbiased_for_the_risk(seed):
    """Averaged over noise draws, Cp(t) - σ² equals the true in-sample risk ‖f_t - f*‖²/n (SURE)."""
    x, K = sobolev(60, seed); fstar = np.abs(x - 0.5) - 0.25; s = 0.3
    rng = np.random.default_rng(100 + seed); R = 400; steps = 40
    cp = np.zeros(steps + 1); risk = np.zeros(steps + 1)
    for _ in range(R):
        y = fstar + s * rng.standard_normal(60)
        cp += cp_risk(K, y, s, 1.0, max_steps=steps).numpy() / R
        risk += ((kernel_gd(K, y, 1.0, steps).train.numpy() - fstar)**2).mean(1) / R
    np.testing.assert_allclose(cp - s**2, risk, atol=4 * s**2 * math.sqrt(2 / 60 / R) + 2e-3)

def test_rules_against_oracle_sobolev():
    """On the RWY simulation Cp is near the oracle; RWY stops before Cp in every draw and pays more for it."""
    ratios, steps = {'cp': [], 'rwy': []}, {'cp': [], 'rwy': []}
    for seed in range(5):
        x, K = sobolev(200, seed); fstar = np.abs(x - 0.5) - 0.25
        y = fstar + 0.5 * np.random.default_rng(seed).standard_normal(200)
        err = ((kernel_gd(K, y, 1.0, 3000).train.numpy() - fstar)**2).mean(1); best = err.min()
        w = eigendecomposition(K).eigvals
        steps['cp'].append(cp_stopping_time(K, y, 0.5, 1.0, max_steps=3000)); steps['rwy'].append(rwy_stopping_time(w, 0.5, 1.0))
        for k in steps: ratios[k].append(err[steps[k][-1]] / best)
    assert np.mean(ratios['cp']) < 1.3, ratios
    assert all(r < c for r, c in zip(steps['rwy'], steps['cp'])), steps
    assert np.mean(ratios['rwy']) > np.mean(ratios['cp']), ratios

def test_numeric_bad_inputs_one_line():
    """Degenerate kernels and arguments give one-line errors, not ZeroDivisionError or a NoneType crash."""
    Z = np.zeros((4, 4)); y = np.array([1., -1, 1, -1])
    with pytest.warns(UserWarning, match='all zeros'): assert eigendecomposition(Z).eigvals.eq(0).all()
    for call in (lambda: rwy_stopping_time([0., 0.], 1.0, 0.5), lambda: cp_stopping_time(Z, y, 1.0, 0.5),
                 lambda: estimate_noise(Z, y), lambda: critical_radius([0., 0.], 1.0)):
        with pytest.raises(ValueError) as e: call()
        assert '\n' not in str(e.value)
    K = np.eye(4) * 0.5
    with pytest.raises(ValueError, match='at least 2 examples'): estimate_noise([[1.]], [1.])
    for lams in ([], [-1.0]):
        with pytest.raises(ValueError, match='non-empty list of positive'): estimate_noise(K, y, lams=lams)
    with pytest.raises(ValueError, match='residual degrees of freedom'): estimate_noise(K, y, lams=[1e-30])
    with pytest.raises(ValueError, match='t_kernel must be an integer >= 0'): stopping_schedule(-3, 1.0, n=10)
    with pytest.raises(ValueError, match='max_steps must be'): cp_stopping_time(K, y, 1.0, 0.5, max_steps=0)

def test_rwy_tiny_sigma_closed_form_is_cheap():
    """A tiny σ puts the stop near 1e19 steps: computed from the critical radius, no scan, no huge sets."""
    _, K = sobolev(50, 0); w = eigendecomposition(K).eigvals
    T = rwy_stopping_time(w, 1e-10, 0.5)
    assert T > 1e12 and T == math.floor(1 / (0.5 * critical_radius(w, 1e-10)**2))
    assert rwy_stopping_time(w, 0.5, 0.5, norm_bound=1e4) >= 1

def test_cp_long_horizon_is_chunked(monkeypatch):
    """The default horizon can be 1e5 steps: the path is evaluated in chunks, never as one (T, n) matrix."""
    import ntk_finetune.early_stopping as ES
    rng = np.random.default_rng(0); n = 200
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]; K = (V * np.geomspace(1, 2.5e-5, n)) @ V.T   # condition 4e4
    y = np.sign(rng.standard_normal(n)); seen = []
    orig = ES._powers
    def spy(lam, a, t): seen.append(len(t)); return orig(lam, a, t)
    monkeypatch.setattr(ES, '_powers', spy)
    with pytest.warns(UserWarning, match='horizon'): t = cp_stopping_time(K, y, 1e-3, 1.0)
    assert max(seen) <= ES._T_CHUNK and sum(seen) > 50_000 and t == sum(seen) - 1

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('sigma', [0.1, 0.5])
def test_estimate_noise_known_sigma(seed, sigma):
    x, K = sobolev(300, seed); y = np.sin(2 * np.pi * x) + sigma * np.random.default_rng(seed).standard_normal(300)
    assert abs(estimate_noise(K, y) / sigma - 1) < 0.15

@pytest.mark.parametrize('seed', range(3))
def test_estimate_norm_known_norm(seed):
    """g = Σ_j c_j 𝕂(·, x_j) with 𝕂 = nK has ‖g‖²_H = cᵀ𝕂c exactly; low noise, smooth g."""
    n = 200; x, K = sobolev(n, seed); Kfull = K * n
    rng = np.random.default_rng(seed); idx = rng.choice(n, 5, replace=False); c = rng.standard_normal(5)
    g = Kfull[:, idx] @ c; true = math.sqrt(c @ Kfull[np.ix_(idx, idx)] @ c)
    y = g + 0.01 * rng.standard_normal(n)
    est = estimate_norm(K, y)
    assert 0.8 * true < est < 1.05 * true, (est, true)     # shrinkage makes it biased low, never far above

def test_paper_T_op_and_rate_and_schedule():
    assert paper_optimal_stopping_time(4.0, 1.0, 50, drift=lambda t: 0.01 * t) == 20
    g = np.r_[0, 0.01 * np.arange(1, 51)]
    assert paper_optimal_stopping_time(4.0, 1.0, 50, drift=g) == 20
    with pytest.raises(ValueError, match='drift must have'): paper_optimal_stopping_time(1.0, 1.0, 50, drift=g[:10])
    np.testing.assert_allclose(predicted_rate([0.5, 1.0], 1000), [1000**-0.5, 1000**(-2/3)])
    with pytest.raises(ValueError, match='positive'): predicted_rate(-1, 10)
    s = stopping_schedule(10, 1.0, n=100)
    assert s['optimizer_steps'] == 10 and s['epochs'] == 10
    with pytest.raises(ValueError, match='batch_size must be'): stopping_schedule(10, 1.0, n=100, batch_size=200)

@pytest.mark.parametrize('bad', [[np.nan, 1.0], []])
def test_bad_eigvals(bad):
    with pytest.raises(ValueError): critical_radius(bad, 1.0)


def test_more_degenerate_spectra():
    """-I has no positive eigenvalue: warned, not silently clipped; 1e308·I is representable and is returned as such;
    a negative step size is refused by the schedule."""
    from ntk_finetune.spectrum import eigendecomposition
    with pytest.warns(UserWarning, match='no positive eigenvalue'): e = eigendecomposition(-torch.eye(4, dtype=torch.float64))
    assert torch.equal(e.eigvals, torch.zeros(4, dtype=torch.float64))
    big = eigendecomposition(1e308 * torch.eye(3, dtype=torch.float64))
    assert torch.allclose(big.eigvals, torch.full((3,), 1e308, dtype=torch.float64), rtol=1e-12)
    from ntk_finetune.early_stopping import stopping_schedule
    with pytest.raises(ValueError, match="step_size"): stopping_schedule(5, -0.1, 10)


def test_schedule_at_the_kernel_step_size_is_the_kernel_step():
    "At lr = α a kernel step is one optimizer step, and at α / 2 two: no step added by float rounding of α t / lr."
    rng = np.random.default_rng(0)
    for a, t in zip(rng.uniform(0.01, 1.0, 200), rng.integers(1, 5000, 200)):
        assert stopping_schedule(int(t), a, 64, lr=a)['optimizer_steps'] == t
        assert stopping_schedule(int(t), a, 64, lr=a / 2)['optimizer_steps'] == 2 * t
    assert stopping_schedule(10, 1.0, 64, lr=0.3)["optimizer_steps"] == 34  # 33.3…: up
    assert stopping_schedule(10**7, 0.3, 64, lr=0.1)["optimizer_steps"] == 3 * 10**7  # large counts too


# ---- the σ̂-free rules against their brute-force definitions (float64)
from ntk_finetune.early_stopping import (gcv_risk, loo_risk, loo_refit_risk, kernel_holdout_risk, sigma_free_stop,
    gcv_stopping_time, loo_stopping_time, kernel_holdout_stopping_time, _folds)
from ntk_finetune.dynamics import kernel_gd_iterate, convergence_horizon

def problem(n, seed, group=1):
    "A random PSD kernel on n examples × group outputs (example-major rows), ±1-ish targets and an offset f0."
    rng = np.random.default_rng(seed); N = n * group
    A = rng.standard_normal((N, N + 3)) / np.sqrt(N); K = A @ A.T / 2
    return K, np.sign(rng.standard_normal(N)) + 0.3 * rng.standard_normal(N), 0.2 * rng.standard_normal(N)

def dense_S(K, a, t):
    return np.eye(len(K)) - np.linalg.matrix_power(np.eye(len(K)) - a * K, t)

STEPS = [0, 1, 3, 17, 60]

@pytest.mark.parametrize('seed', range(3))
def test_gcv_equals_its_definition(seed):
    K, y, f0 = problem(20, seed); a = 1 / np.linalg.eigvalsh(K)[-1]
    got = gcv_risk(K, y, a, f0, STEPS)[1]
    for t, g in zip(STEPS, got):
        S = dense_S(K, a, t); r = (np.eye(20) - S) @ (y - f0)
        assert abs(g - (r @ r / 20) / (1 - np.trace(S) / 20) ** 2) <= 1e-10 * abs(g)

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('group', [1, 2, 3])
def test_loo_shortcut_equals_its_block_definition(seed, group):
    K, y, f0 = problem(12, seed, group); a = 0.8 / np.linalg.eigvalsh(K)[-1]; N = len(y)
    got = loo_risk(K, y, a, f0, STEPS, group=group)[1]
    for t, g in zip(STEPS, got):
        I_S = np.eye(N) - dense_S(K, a, t); r = I_S @ (y - f0)
        e = sum(np.sum(np.linalg.solve(I_S[i:i + group, i:i + group], r[i:i + group]) ** 2) for i in range(0, N, group))
        assert abs(g - e / N) <= 1e-8 * abs(g)

@pytest.mark.parametrize('seed', range(3))
def test_loo_refit_is_brute_force_and_the_shortcut_is_close_at_t0(seed):
    K, y, f0 = problem(15, seed); a = 1 / np.linalg.eigvalsh(K)[-1]
    _, ref = loo_refit_risk(K, y, a, STEPS, f0)
    for t, g in zip(STEPS, ref):  # every example left out in turn, GD by iteration on the n − 1 others, K = G/(n − 1)
        e = 0.0
        for i in range(15):
            k = np.delete(np.arange(15), i)
            p = kernel_gd_iterate(K[np.ix_(k, k)] * 15 / 14, y[k], a, t, f0[k], K[np.ix_([i], k)] * 15 / 14, f0[[i]])
            e += float((p.test[-1, 0] - y[i]) ** 2)
        assert abs(g - e / 15) <= 1e-9 * abs(g)
    assert abs(float(loo_risk(K, y, a, f0, [0])[1][0]) - float(ref[0])) <= 1e-12  # nothing fitted: both are ‖y − f0‖²/n

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('folds', [2, 5])
def test_kernel_holdout_equals_fold_by_fold_iteration(seed, folds):
    K, y, f0 = problem(20, seed); a = 1 / np.linalg.eigvalsh(K)[-1]
    got = kernel_holdout_risk(K, y, a, f0, STEPS, folds=folds, seed=seed)[1]
    want = np.zeros(len(STEPS))
    for val in _folds(torch.as_tensor(y), 1, folds, seed):
        fit = np.setdiff1d(np.arange(20), val); s = 20 / len(fit)
        for j, t in enumerate(STEPS):
            p = kernel_gd_iterate(K[np.ix_(fit, fit)] * s, y[fit], a, t, f0[fit], K[np.ix_(val, fit)] * s, f0[val])
            want[j] += float(((p.test[-1] - torch.as_tensor(y[val])) ** 2).sum())
    np.testing.assert_allclose(got.numpy(), want / 20, rtol=1e-9)

def test_folds_are_stratified_and_partition_the_examples():
    y = torch.tensor([1.0] * 12 + [-1.0] * 8)
    F = _folds(y, 1, 4, 0)
    assert sorted(np.concatenate(F).tolist()) == list(range(20))
    assert [int((y[f] > 0).sum()) for f in F] == [3, 3, 3, 3]

@pytest.mark.parametrize('rule', ['gcv', 'loo', 'kernel_holdout'])
@pytest.mark.parametrize('seed', range(2))
def test_stop_is_the_exact_minimum_over_every_step(rule, seed):
    "The grid + refinement finds the same step as evaluating the risk at every step up to convergence."
    K, y, f0 = problem(16, seed); a = 1 / np.linalg.eigvalsh(K)[-1]
    risk = {'gcv': gcv_risk, 'loo': loo_risk, 'kernel_holdout': kernel_holdout_risk}[rule]
    T = convergence_horizon(eigendecomposition(K), a)
    every = risk(K, y, a, f0, np.arange(min(T, 20000) + 1))[1]
    m = sigma_free_stop(rule, K, y, a, f0)
    assert T <= 20000 and m['step'] == int(torch.argmin(every)) and m['at_convergence'] == (m['step'] == T)

def test_no_early_stop_needed_is_said_at_convergence():
    "Noise-free targets in the span of a rank-3 kernel: the held-out examples are predicted exactly at convergence."
    rng = np.random.default_rng(0); A = rng.standard_normal((10, 3)); K = A @ A.T / 10
    y = K @ rng.standard_normal(10)
    for f in (gcv_stopping_time, loo_stopping_time, kernel_holdout_stopping_time):
        with pytest.warns(UserWarning, match='no early stop needed'):
            assert f(K, y, 1 / np.linalg.eigvalsh(K)[-1]) == convergence_horizon(eigendecomposition(K), 1 / np.linalg.eigvalsh(K)[-1])
