"""Every place where two batches meet, against explicit per-example Jacobians computed here, each batch at its own
length: a kernel between a batch of 8 tokens and one of 12 must not be the kernel of a padded batch."""
import pytest, torch
from ntk_finetune.models import tiny_model, select_params
from ntk_finetune.outputs import tiny_output_fn, HeadOutput
from ntk_finetune.entk import empirical_ntk, train_test_ntk

ARCHS = ['gpt2', 'llama', 'gpt-neo', 'bert']


def batch(n, T, seed, pad):
    "n random examples of T tokens; with `pad`, every other example ends in padding (right-padded)."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (n, T), generator=g)
    mask = torch.ones_like(ids)
    if pad:
        for i in range(0, n, 2):
            mask[i, max(2, T - 2 - i):] = 0
    return {'input_ids': ids, 'attention_mask': mask}


def logits(m, b):
    return m(**b).logits  # (n, T, V)


OUTPUTS = {  # three ways an output function reads a sequence
    'position -1': lambda m, b: logits(m, b)[:, -1, 3],
    'last real token': lambda m, b: logits(m, b)[torch.arange(b['input_ids'].shape[0]), b['attention_mask'].sum(1) - 1, 3],
    'pooled': lambda m, b: (logits(m, b)[..., 3] * b['attention_mask']).sum(1) / b['attention_mask'].sum(1),
}


def jac(m, b, fn, sel):
    "(n, P) explicit per-example Jacobian: each example alone, at its batch's length, by autograd."
    rows = []
    for i in range(b['input_ids'].shape[0]):
        f = fn(m, {k: v[i:i + 1] for k, v in b.items()})[0]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, list(sel.values()))]))
    return torch.stack(rows)


def close(G, want, tol=1e-10):
    return float((G - want).abs().max()) <= tol * float(want.abs().max())


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('out', list(OUTPUTS))
@pytest.mark.parametrize('T2', [12, 6])
def test_cross_kernel_at_each_batchs_own_length(arch, out, T2):
    m = tiny_model(arch, dtype=torch.float64, seed=3)
    fn, pad = OUTPUTS[out], out != 'position -1'  # position -1 of a padded example reads a pad token by design
    b8, b2 = batch(3, 8, 0, pad), batch(4, T2, 1, pad)
    sel = select_params(m, 'attention')
    want = jac(m, b8, fn, sel) @ jac(m, b2, fn, sel).T  # (3, 4)
    for method in ('structured', 'reference'):
        assert close(empirical_ntk(m, b8, fn, 'attention', b2, method=method, progress=False), want), method
    Gtr, Gte = train_test_ntk(m, b8, b2, fn, 'attention', progress=False)
    assert close(Gte, want.T) and Gtr.shape == (3, 3)


def test_multitask_kernel_blocks_at_each_tasks_length():
    from ntk_finetune.task_vectors import multitask_kernel
    m = tiny_model('gpt2', dtype=torch.float64, seed=4)
    fa, fb = OUTPUTS['position -1'], lambda mm, b: logits(mm, b)[:, -1, 7]
    ba, bb, bc = batch(3, 8, 0, False), batch(4, 12, 1, False), batch(2, 5, 2, False)
    sel = select_params(m, 'attention')
    J = [jac(m, ba, fa, sel), jac(m, bb, fb, sel), jac(m, bc, fa, sel)]
    blocks = multitask_kernel(m, [ba, bb, bc], [fa, fb, fa], 'attention', progress=False)
    for a in range(3):
        for c in range(3):
            assert close(blocks[a, c], J[a] @ J[c].T), (a, c)


def test_analyze_train_and_test_prompts_of_different_lengths():
    "analyze's G_test (test × train) from a train batch of 8 tokens and a test batch of 11, against explicit Jacobians."
    from ntk_finetune.analysis import analyze
    m = tiny_model('llama', dtype=torch.float64, seed=5)
    fn = tiny_output_fn()
    tr, te = batch(8, 8, 0, True), batch(6, 11, 1, True)
    y, yt = torch.tensor([0, 1] * 4), torch.tensor([1, 0] * 3)
    from ntk_finetune.outputs import _TinyVocab
    a = analyze((m, _TinyVocab()), tr, labels=y, test_data=te, test_labels=yt, label_words=(' a', ' bb'), progress=False)
    sel = select_params(m, 'attention')
    Jtr, Jte = jac(m, tr, fn, sel), jac(m, te, fn, sel)
    assert close(a.G, Jtr @ Jtr.T) and close(a.G_test, Jte @ Jtr.T)


def test_compare_kernel_prediction_uses_the_true_cross_kernel():
    "compare's kernel-GD test curve, rebuilt from explicit Jacobians of train (T 8) and test (T 11) at their lengths."
    from ntk_finetune.compare import compare
    from ntk_finetune.finetune import TaskData
    from ntk_finetune.dynamics import kernel_gd
    m = tiny_model('gpt2', dtype=torch.float64, seed=6)
    fn = OUTPUTS['last real token']
    tr, va, te = batch(8, 8, 0, True), batch(4, 9, 2, True), batch(6, 11, 1, True)
    y, yv, yt = (torch.tensor([0, 1] * k) for k in (4, 2, 3))
    sel = select_params(m, 'attention')
    with torch.no_grad():
        f0, f0t = fn(m, tr), fn(m, te)
    Jtr, Jte = jac(m, tr, fn, sel), jac(m, te, fn, sel)
    r = compare(m, None, data=TaskData(tr, y, va, yv, te, yt), output_fn=fn, steps=5, progress=False)
    pred = kernel_gd(Jtr @ Jtr.T / 8, 2.0 * y - 1, r['lr'], 5, f0, Jte @ Jtr.T / 8, f0t)
    torch.testing.assert_close(torch.tensor(r['kernel_gd_test_loss'], dtype=torch.float64), pred.test_mse(2.0 * yt - 1) / 2, rtol=1e-8, atol=0)
