"""Per-step cost of full-batch GD fine-tuning against one forward+backward of the same batch.

    python bench/finetune.py          # SmolLM2-135M attention, 64 rt-sentiment examples of 64 tokens; appends to BENCHMARKS.md

The training loop records, per step, the train outputs (from the training forward itself), the displacement, and the
validation/test outputs (32 + 64 extra forward-only examples); `eval_every=1`. Peak memory is the process's ru_maxrss.
"""
import os, resource, sys, time
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

if __name__ == '__main__':
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from entk import machine
    from ntk_finetune.models import load_model, select_params
    from ntk_finetune.outputs import make_output_fn
    from ntk_finetune.finetune import prepare_task, finetune, FinetuneConfig, _loss_acc
    model, tok = load_model('smollm2-135m')
    data = prepare_task(tok, 'rt-sentiment', 64, 32, 64, 64, seed=0)
    T = data.train['input_ids'].shape[1]
    if T < 64:
        pad = 64 - T
        for b in (data.train, data.val, data.test):
            b['input_ids'] = torch.nn.functional.pad(b['input_ids'], (0, 64 - b['input_ids'].shape[1]), value=tok.pad_token_id)
            b['attention_mask'] = torch.nn.functional.pad(b['attention_mask'], (0, 64 - b['attention_mask'].shape[1]), value=0)
    fn = make_output_fn(model, tok, 'rt-sentiment'); sel = select_params(model, 'attention')
    for p in model.parameters(): p.requires_grad_(False)
    for p in sel.values(): p.requires_grad_(True)
    # one forward+backward of the same batch, same parameters (median of 3)
    fb = []
    for _ in range(3):
        t0 = time.perf_counter(); f = fn(model, data.train); l, _ = _loss_acc(f, data.y_train, 'mse'); l.backward(); fb.append(time.perf_counter() - t0)
        for p in sel.values(): p.grad = None
    fb = sorted(fb)[1]
    steps = 5
    h = finetune(model, data, fn, FinetuneConfig(lr=1e-4, steps=steps, eval_every=1), progress=False)
    per_step = h.seconds / (steps + 1)         # steps + 1 evaluated points (the last one has no update)
    h2 = finetune(model, data, fn, FinetuneConfig(lr=1e-4, steps=steps, eval_every=steps), progress=False)
    per_step_noeval = h2.seconds / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    L = ["", "## Fine-tuning step cost: SmolLM2-135M attention, full-batch GD, 64 examples x 64 tokens", "",
         "Command: `python bench/finetune.py`.  ", f"Machine: {machine()}.  ", f"Date: {time.strftime('%Y-%m-%d')}.", "",
         "| quantity | seconds | × one fwd+bwd |", "|---|---|---|",
         f"| one forward+backward of the batch (median of 3) | {fb:.2f} | 1.00 |",
         f"| one GD step, evaluating val+test every step | {per_step:.2f} | {per_step/fb:.2f} |",
         f"| one GD step, evaluating only at the end | {per_step_noeval:.2f} | {per_step_noeval/fb:.2f} |", "",
         f"Peak RSS of the whole benchmark process (model included): {peak:.2f} GB."]
    out = ROOT / 'BENCHMARKS.md'; old = out.read_text() if out.exists() else '# Benchmarks\n'
    marker = '\n## '; parts = old.split(marker)
    kept = parts[0] + ''.join(marker + s for s in parts[1:] if not s.startswith('Fine-tuning step cost'))
    from ntk_finetune.core import atomic_path
    with atomic_path(out) as t: t.write_text(kept.rstrip('\n') + '\n' + '\n'.join(L) + '\n')
    print('\n'.join(L))
