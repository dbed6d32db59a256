"""Every public numeric function accepts the arrays and scalars users actually pass, and gives exactly the result it
gives for the float64 version of the same values."""
import dataclasses, math, warnings
import numpy as np, pytest, torch
from ntk_finetune import spectrum as S, dynamics as D, early_stopping as ES

rng = np.random.default_rng(0)
A = rng.standard_normal((12, 12)); K64 = A @ A.T / 12 + 0.05 * np.eye(12)
KT64 = rng.standard_normal((5, 12)) @ A.T / 12
y64 = np.sign(rng.standard_normal(12)); f064 = 0.1 * rng.standard_normal(12); f0t64 = 0.1 * rng.standard_normal(5)
w64 = np.linalg.eigvalsh(K64)[::-1].copy()
step = 0.5 / w64[0]

def _rev(x): return np.ascontiguousarray(np.asarray(x)[::-1])[::-1] if np.ndim(x) == 1 else np.asfortranarray(x)
ARRAY_KINDS = {
    'numpy': lambda x: np.asarray(x),
    'strided_view': lambda x: (np.repeat(np.asarray(x), 2, 0)[::2] if np.ndim(x) == 1
                               else np.repeat(np.repeat(np.asarray(x), 2, 0), 2, 1)[::2, ::2]),
    'negative_stride': lambda x: np.ascontiguousarray(np.asarray(x)[::-1])[::-1],
    'fortran': lambda x: np.asfortranarray(x),
    'list': lambda x: np.asarray(x).tolist(),
    'float32_tensor': lambda x: torch.tensor(np.asarray(x), dtype=torch.float32),
    'float16_tensor': lambda x: torch.tensor(np.asarray(x), dtype=torch.float16),
    'bfloat16_tensor': lambda x: torch.tensor(np.asarray(x), dtype=torch.bfloat16),
    'noncontiguous_tensor': lambda x: torch.tensor(np.asarray(x)).T.contiguous().T if np.ndim(x) == 2 else torch.tensor(np.stack([x, x], 1))[:, 0],
    'int_array': lambda x: np.round(np.asarray(x) * 1000).astype(np.int64),
    'cuda_tensor': lambda x: torch.tensor(np.asarray(x), device='cuda'),
}
SCALAR_KINDS = {'float': float, 'np.float32': np.float32, 'np.float64': np.float64, '0-d tensor': lambda v: torch.tensor(v),
                '0-d bf16 tensor': lambda v: torch.tensor(v, dtype=torch.bfloat16), 'one-element array': lambda v: np.array([v])}

def f64(x): return torch.as_tensor(np.array(x.detach().cpu().double() if isinstance(x, torch.Tensor) else x, dtype=np.float64))

# name -> (function, args from an array converter a(.) and a scalar converter s(.))
CASES = {
    'eigendecomposition': (S.eigendecomposition, lambda a, s: (a(K64),)),
    'fit_power_law': (S.fit_power_law, lambda a, s: (a(np.abs(w64) + 1),)),
    'fit_exponential': (S.fit_exponential, lambda a, s: (a(np.abs(w64) + 1),)),
    'compare_decay_fits': (S.compare_decay_fits, lambda a, s: (a(np.abs(w64) + 1),)),
    'decay_over_subsets': (lambda G: S.decay_over_subsets(G, subset_size=8, n_subsets=2), lambda a, s: (a(K64),)),
    'fit_power_law_origin': (S.fit_power_law_origin, lambda a, s: (a(np.abs(w64) + 1),)),
    'decay_protocols': (lambda G: S.decay_protocols(G, subset_size=8, n_subsets=2, n_boot=3), lambda a, s: (a(K64),)),
    'effective_rank': (S.effective_rank, lambda a, s: (a(np.abs(w64) + 1),)),
    'kernel_target_alignment': (S.kernel_target_alignment, lambda a, s: (a(K64), a(y64))),
    'residual_energy': (S.residual_energy, lambda a, s: (a(K64), a(y64), a(f064))),
    'kernel_gd': (lambda *x: D.kernel_gd(x[0], x[1], x[2], 5, *x[3:]), lambda a, s: (a(K64), a(y64), s(step), a(f064), a(KT64), a(f0t64))),
    'kernel_gd_iterate': (lambda *x: D.kernel_gd_iterate(x[0], x[1], x[2], 5, *x[3:]), lambda a, s: (a(K64), a(y64), s(step), a(f064), a(KT64), a(f0t64))),
    'kernel_ridge': (D.kernel_ridge, lambda a, s: (a(K64), a(y64), s(0.1), a(f064), a(KT64), a(f0t64))),
    'ridge_equivalent_lambda': (lambda st: D.ridge_equivalent_lambda(st, 4), lambda a, s: (s(step),)),
    'local_rademacher_complexity': (ES.local_rademacher_complexity, lambda a, s: (a(np.abs(w64)), a(np.array([0.1, 0.5])))),
    'critical_radius': (ES.critical_radius, lambda a, s: (a(np.abs(w64)), s(0.5), s(1.5))),
    'rwy_stopping_time': (ES.rwy_stopping_time, lambda a, s: (a(np.abs(w64)), s(0.5), s(step))),
    'cp_risk': (lambda *x: ES.cp_risk(*x, max_steps=50), lambda a, s: (a(K64), a(y64), s(0.5), s(step), a(f064))),
    'cp_stopping_time': (lambda *x: ES.cp_stopping_time(*x, max_steps=5000), lambda a, s: (a(K64), a(y64), s(0.5), s(step), a(f064))),
    'discrepancy_stopping_time': (lambda *x: ES.discrepancy_stopping_time(*x, max_steps=5000), lambda a, s: (a(K64), a(y64), s(0.5), s(step), a(f064))),
    'estimate_noise': (ES.estimate_noise, lambda a, s: (a(K64), a(y64), a(f064))),
    'estimate_norm': (ES.estimate_norm, lambda a, s: (a(K64), a(y64), a(f064), s(0.05))),
    'paper_optimal_stopping_time': (lambda C, st, g: ES.paper_optimal_stopping_time(C, st, 9, g), lambda a, s: (s(2.0), s(step), a(np.linspace(0, 3, 10)))),
    'predicted_rate': (ES.predicted_rate, lambda a, s: (a(np.array([0.3, 0.6])), a(np.array([100, 400])))),
    'stopping_schedule': (lambda st, lr: ES.stopping_schedule(7, st, 12, lr, 4), lambda a, s: (s(step), s(0.01))),
}

SCALE_BOUND = ('rwy_stopping_time', 'cp_risk', 'cp_stopping_time', 'discrepancy_stopping_time', 'kernel_gd', 'kernel_gd_iterate')

def same(a, b):
    if dataclasses.is_dataclass(a): return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict): return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor): return torch.equal(a, b)
    if isinstance(a, np.ndarray): return np.array_equal(a, b)
    if isinstance(a, float) and math.isnan(a): return math.isnan(b)
    return a == b

@pytest.mark.parametrize('kind', list(ARRAY_KINDS))
@pytest.mark.parametrize('name', list(CASES))
def test_array_kinds(name, kind):
    if kind == 'cuda_tensor' and not torch.cuda.is_available(): pytest.skip('needs a CUDA device')
    if kind == 'int_array' and name in SCALE_BOUND: pytest.skip('integer-scaled K would need another step size')
    fn, args = CASES[name]
    conv = ARRAY_KINDS[kind]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        got = fn(*args(conv, float))
        want = fn(*args(lambda x: f64(conv(x)), float))        # the same values, as float64
    assert same(got, want)

@pytest.mark.parametrize('kind', list(SCALAR_KINDS))
@pytest.mark.parametrize('name', [n for n in CASES if n not in ('eigendecomposition', 'fit_power_law', 'fit_exponential',
    'compare_decay_fits', 'decay_over_subsets', 'fit_power_law_origin', 'decay_protocols', 'effective_rank', 'kernel_target_alignment', 'residual_energy',
    'local_rademacher_complexity', 'estimate_noise', 'predicted_rate')])
def test_scalar_kinds(name, kind):
    fn, args = CASES[name]
    conv = SCALAR_KINDS[kind]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        got = fn(*args(np.asarray, conv))
        want = fn(*args(np.asarray, lambda v: float(f64(conv(v)).reshape(()))))
    assert same(got, want)

@pytest.mark.parametrize('kind', [k for k in ARRAY_KINDS if k != 'cuda_tensor'])
def test_plot_spectrum_takes_every_kind(kind):
    """plot_spectrum draws the same curve from every array kind (its only output is the figure)."""
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    w = np.abs(w64) + 1
    ax = S.plot_spectrum(ARRAY_KINDS[kind](w))
    x, yv = ax.lines[0].get_data()
    want = f64(ARRAY_KINDS[kind](w)).numpy()
    assert np.array_equal(yv, want / want[0])
    plt.close('all')
