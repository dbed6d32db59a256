"""The `lora` module's properties: adapters start at the model they wrap, eq. (1)'s expected LoRA-kernel scale against
a Monte-Carlo simulation with PEFT's own draw of A, and `kernel_distance` against its closed forms."""
import math
import pytest, torch
from torch import nn
from ntk_finetune.lora import with_lora, lora_kernel_scale, kernel_distance, attention_modules
from ntk_finetune.models import tiny_model, select_params
from ntk_finetune.outputs import tiny_output_fn, HeadOutput


@pytest.mark.parametrize('arch, kind', [('llama', 'lm'), ('bert', 'classification')])
@pytest.mark.parametrize('r', [1, 8])
def test_adapters_start_at_the_model(arch, kind, r):
    m = tiny_model(arch, kind=kind, dtype=torch.float64, seed=0)
    fn = tiny_output_fn() if kind == 'lm' else HeadOutput()
    ids = torch.randint(1, 128, (3, 6), generator=torch.Generator().manual_seed(0))
    b = {'input_ids': ids, 'attention_mask': torch.ones_like(ids)}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    pm = with_lora(m, r, seed=3)
    torch.testing.assert_close(fn(pm, b), fn(m, b), rtol=0, atol=1e-12)  # B = 0: the same function
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())  # the wrapped model is a copy
    lo = select_params(pm, 'lora')
    assert lo and all(('lora_A' in n or 'lora_B' in n) for n in lo)
    assert {n.split('.lora_')[0].removeprefix('base_model.model.') for n in lo} == set(attention_modules(m))
    a = lambda s: torch.cat([p.flatten() for n, p in with_lora(m, r, seed=s).named_parameters() if 'lora_A' in n])
    assert torch.equal(a(3), a(3)) and not torch.equal(a(3), a(4))  # the seed fixes the draw of A


@pytest.mark.parametrize('bad', [0, -2, 2.5, '4'])
def test_with_lora_rejects_a_bad_rank(bad):
    with pytest.raises(ValueError, match='positive integer'):
        with_lora(tiny_model('llama', kind='lm', seed=0), bad)


@pytest.mark.parametrize('r, alpha', [(1, None), (4, None), (4, 1.0), (16, 8.0)])
def test_eq1_scale_against_a_simulation(r, alpha):
    """One linear layer f(x) = v·(W + (alpha/r) B A) x at B = 0: the kernel of B is (alpha/r)^2 |v|^2 (Ax)·(Ax'),
    that of W is |v|^2 x·x'. Averaged over PEFT's draws of A, their ratio is eq. (1) on every pair (x, x')."""
    d_in, d_out, draws = 12, 5, 600
    torch.manual_seed(0)
    X = torch.randn(4, d_in, dtype=torch.float64)
    v = torch.randn(d_out, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(d_in, d_out, bias=False).double())
    K_W = (v @ v) * X @ X.T  # (4, 4)
    ratios = []
    for s in range(draws):
        pm = with_lora(net, r, alpha, targets=['0'], seed=s)
        A = next(p for n, p in pm.named_parameters() if 'lora_A' in n).detach()  # (r, d_in)
        scaling = (2 * r if alpha is None else alpha) / r
        K_r = scaling**2 * (v @ v) * (X @ A.T) @ (A @ X.T)
        ratios.append((K_r / K_W)[torch.eye(4, dtype=torch.bool)])  # the diagonal: K_W > 0 there
    ratios = torch.stack(ratios)  # (draws, 4)
    mean, se = ratios.mean(0), ratios.std(0) / math.sqrt(draws)
    expected = lora_kernel_scale(r, alpha, d_in)
    assert ((mean - expected).abs() < 4 * se).all(), (mean, se, expected)  # four standard errors


@pytest.mark.parametrize('c', [1e-3, 0.5, 7.0])
def test_kernel_distance_closed_forms(c):
    torch.manual_seed(1)
    Z = torch.randn(6, 3, dtype=torch.float64)
    G = Z @ Z.T
    W = torch.randn(6, 6, dtype=torch.float64)
    H = c * (G + 0.3 * (W + W.T))
    d = kernel_distance(G, H)
    cos = float((G * H).sum() / (G.norm() * H.norm()))
    assert d['scale'] == pytest.approx(float(H.norm() / G.norm()), rel=1e-12)
    assert d['alignment'] == pytest.approx(cos, rel=1e-12)
    assert d['distance'] == pytest.approx(math.sqrt(2 - 2 * cos), rel=1e-9)  # two unit vectors at cosine cos
    assert kernel_distance(H, G)['distance'] == pytest.approx(d['distance'], rel=1e-12)  # symmetric
    assert kernel_distance(G, c * G)['distance'] == pytest.approx(0.0, abs=1e-12)  # blind to scale
    assert kernel_distance(G, c * G)['scale'] == pytest.approx(c, rel=1e-12)


def test_kernel_distance_rejects_bad_input():
    with pytest.raises(ValueError, match='same examples'):
        kernel_distance(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match='zero'):
        kernel_distance(torch.eye(3), torch.zeros(3, 3))
