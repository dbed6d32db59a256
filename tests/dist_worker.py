"""Run by tests/test_entk.py under `python -m torch.distributed.run --nproc_per_node 2`: each rank saves its kernel."""
import sys
from pathlib import Path
import torch, torch.distributed as dist
import ntk_finetune.entk_gram as E
from ntk_finetune.entk import empirical_ntk
from ntk_finetune.models import tiny_model
from ntk_finetune.outputs import tiny_output_fn

def batch(n, T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (n, T), generator=g); mask = torch.ones_like(ids)
    for i in range(0, n, 2): mask[i, max(2, T - 1 - i):] = 0
    return {'input_ids': ids, 'attention_mask': mask}

if __name__ == '__main__':
    out = Path(sys.argv[1])
    dist.init_process_group('gloo')
    m = tiny_model('llama', seed=2); fn = tiny_output_fn()
    init, pairs = E._GramAcc.__init__, []
    def counting(self, *a, **k):                    # how many Gram tiles this rank computes
        init(self, *a, **k); pairs.append(len(self.pairs))
    E._GramAcc.__init__ = counting
    for sym in (True, False):
        pairs.clear()
        G = empirical_ntk(m, batch(130, 7, 5), fn, 'all', batch2=None if sym else batch(70, 6, 7), block_size=5,
                          progress=False)
        torch.save(G, out / f'G_{int(sym)}_{dist.get_rank()}.pt')
        torch.save(min(pairs), out / f'pairs_{int(sym)}_{dist.get_rank()}.pt')
    dist.barrier()                                  # every rank is done before the group is torn down
    dist.destroy_process_group()
