"""The `ntk-finetune` command: the main job end to end on a small local model, and bad inputs (each one line on stderr,
exit status 2, no traceback, nothing half-written)."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch

BIN = Path(sys.executable).parent / 'ntk-finetune'

def run(*args, timeout=600, cwd=None):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return r.returncode, r.stdout, r.stderr.strip()

@pytest.fixture(scope='module')
def tiny_lm(tmp_path_factory):
    "A small random Llama with SmolLM2's tokenizer, saved as a local folder: the CLI loads it by path in a second."
    import transformers
    from ntk_finetune.models import resolve_model
    d = tmp_path_factory.mktemp('tiny-lm')
    tok = transformers.AutoTokenizer.from_pretrained(resolve_model('smollm2-135m'))
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                                   pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0); transformers.LlamaForCausalLM(cfg).save_pretrained(d); tok.save_pretrained(d)
    return d

@pytest.fixture(scope='module')
def report(tiny_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp('report')
    code, stdout, err = run('analyze', '--model', tiny_lm, '--n', 16, '--n-test', 8, '--max-length', 32,
                            '--lr', 0.01, '--batch-size', 4, '--out', out)
    assert code == 0, err[-2000:]
    return out, stdout

def test_analyze_writes_the_report(report):
    out, stdout = report
    assert (out / 'report.html').exists() and (out / 'metrics.json').exists() and (out / 'analysis' / 'analysis.json').exists()
    m = json.loads((out / 'metrics.json').read_text())
    assert set(m['stops']) == {'rwy', 'cp', 'discrepancy', 'kernel_holdout', 'loo', 'gcv'}
    assert m['settings']['lr'] == 0.01 and m['settings']['batch_size'] == 4
    for word in ('decay', 'noise', 'optimizer steps', 'report'): assert word in stdout
    assert not list(out.glob('**/.*.tmp'))
    rec = m['recommended']  # the evidence's rule, in optimizer steps, with what the study measured and what it did not
    assert rec['chosen_by'] == 'evidence' and rec['optimizer_steps'] == m['schedule'][rec['rule']]['optimizer_steps']
    assert rec['evidence']['runs'] >= 6 and rec['evidence']['source'] == 'results/stopping.json'
    assert any('was not measured' in w for w in rec['warnings']) and any(w.startswith('batch 4') for w in rec['warnings'])
    assert [r['n'] for r in m['samples']] == [16, 32, 64, 128, 256] and m['samples_needed'] == {}
    assert stdout.splitlines()[0] == m['answer'][0] and 'test-best' not in stdout
    assert m['predicted']['test_optimal_step'] is None or not m['predicted']['at_convergence']

def test_analyze_rule_optimizer_and_targets(tiny_lm, tmp_path):
    code, stdout, err = run('analyze', '--model', tiny_lm, '--n', 8, '--n-test', 4, '--max-length', 24, '--rules', 'cp',
                            '--rule', 'loo', '--optimizer', 'adamw', '--lr', 1e-4, '--batch-size', 4,
                            '--target-accuracy', 0.999, '--tables', 'parquet', '--out', tmp_path)
    assert code == 0, err
    m = json.loads((tmp_path / 'metrics.json').read_text())
    import pandas as pd
    rules, samples = pd.read_parquet(tmp_path / 'rules.parquet'), pd.read_parquet(tmp_path / 'samples.parquet')
    assert dict(zip(rules['rule'], rules['kernel_steps'])) == m['stops'] and rules['recommended'].sum() == 1
    assert list(samples['n']) == [r['n'] for r in m['samples']] and len(pd.read_parquet(tmp_path / 'curves.parquet')) > 1
    assert 'rules.parquet' in stdout and not list(tmp_path.glob('.*.tmp'))
    assert set(m['stops']) == {'cp', 'loo'} and m['recommended']['rule'] == 'loo' and m['recommended']['chosen_by'] == 'user'
    assert any(w.startswith('adamw: the stop is the rule') for w in m['recommended']['warnings'])
    need = m['samples_needed']['target_accuracy']
    assert need['n'] is None and "beyond the prediction's reach" in need['says'] and need['says'] in stdout

@pytest.mark.parametrize('args, match', [(('--rule', 'oracle'), "invalid choice: 'oracle'"),
                                         (('--optimizer', 'lion'), "invalid choice: 'lion'"),
                                         (('--target-accuracy', 1.5), 'expected a number in (0, 1)'),
                                         (('--target-loss', -1), 'expected a positive')])
def test_analyze_refuses_bad_choices(args, match, tmp_path):
    code, _, err = run('analyze', *args, '--out', tmp_path / 'r')
    assert code == 2 and match in err and len(err.splitlines()) <= 3, err

def test_analyze_with_a_sketched_kernel(tiny_lm, tmp_path):
    code, stdout, err = run('analyze', '--model', tiny_lm, '--n', 16, '--n-test', 8, '--max-length', 24,
                            '--sketch', 256, '--out', tmp_path)
    assert code == 0, err
    m = json.loads((tmp_path / 'metrics.json').read_text())
    assert m['settings']['kernel_method'] == 'sketch' and m['settings']['sketch']['requested'] == 256
    said = [x for x in m['answer'] if x.startswith('Kernel: a CountSketch')]
    assert said and 'Measured on smollm2-135m' in said[0] and 'Kernel: a CountSketch' in stdout
    assert any(x.startswith("Warning: the sketch's error was measured elsewhere") for x in m['answer'])  # a tiny model
    assert not (tmp_path / '.cache').exists()  # one pass over the examples: nothing is cached


def test_spectrum_and_stop_read_a_saved_analysis(report):
    out, _ = report
    code, stdout, err = run('spectrum', out); assert code == 0 and 'power, all k' in stdout, err
    code, stdout, err = run('stop', out, '--lr', 0.001, '--batch-size', 8); assert code == 0 and 'lr 0.001, batch 8' in stdout, err

def test_kernel_subcommand(tiny_lm, tmp_path):
    code, stdout, err = run('kernel', '--model', tiny_lm, '--n', 8, '--n-test', 4, '--max-length', 24, '--out', tmp_path)
    assert code == 0, err
    from safetensors.torch import load_file
    t = load_file(str(tmp_path / 'kernel.safetensors')); assert t['G'].shape == (8, 8) and t['G_test'].shape == (4, 8)

def test_finetune_beside_the_prediction(tiny_lm, tmp_path):
    code, stdout, err = run('analyze', '--model', tiny_lm, '--n', 8, '--n-test', 8, '--max-length', 24, '--finetune',
                            '--steps', 3, '--out', tmp_path)
    assert code == 0, err
    m = json.loads((tmp_path / 'metrics.json').read_text())
    assert len(m['finetune']['train_loss']) == 4 and 'finetune' in stdout
    assert 'Fine-tuning beside the prediction' in (tmp_path / 'report.html').read_text()
    import matplotlib; matplotlib.use('Agg')
    from ntk_finetune.analysis import Analysis
    from ntk_finetune.report import plot_curves
    ax = plot_curves(Analysis.load(tmp_path / 'analysis'), m['finetune'])      # the measured curves over the prediction
    labels = [l.get_label() for l in ax.get_lines()]
    assert 'fine-tuning, train (measured)' in labels and 'fine-tuning, test (measured)' in labels

def test_compare_subcommand(tiny_lm, tmp_path):
    code, stdout, err = run('compare', '--model', tiny_lm, '--task', 'rt-sentiment', '--n', 8, '--n-val', 4,
                            '--n-test', 4, '--max-length', 24, '--steps', 3, '--out', tmp_path)
    assert code == 0, err
    r = json.loads((tmp_path / 'compare.json').read_text())
    assert len(r['test_loss']) == len(r['eval_steps']) and r['eval_steps'][-1] == 3 and 'hold-out best' in stdout
    assert set(r['predicted_stop_step']) >= {'rwy', 'cp'} and r['resumed_at_step'] is None

def test_compare_again_continues_its_run_and_other_arguments_start_over(tiny_lm, tmp_path):
    "The fine-tuning run is checkpointed in the output folder: more --steps continue it, another --seed starts anew."
    args = lambda steps, seed=0: ('compare', '--model', tiny_lm, '--task', 'rt-sentiment', '--n', 8, '--n-val', 4,
                                  '--n-test', 4, '--max-length', 24, '--steps', steps, '--seed', seed, '--out', tmp_path)
    r = lambda: json.loads((tmp_path / 'compare.json').read_text())
    assert run(*args(3))[0] == 0 and r()['resumed_at_step'] is None
    code, out, err = run(*args(6)); assert code == 0, err
    assert r()['resumed_at_step'] == 3 and r()['eval_steps'][-1] == 6 and 'restart' not in out
    code, out, err = run(*args(6, seed=1)); assert code == 0, err
    assert r()['resumed_at_step'] is None and r()['eval_steps'][-1] == 6
    said = [ln for ln in out.splitlines() if ln.startswith('restart')]   # one line in the CLI's words, no Python warning
    assert len(said) == 1 and 'starting over' not in err, (out, err)   # the line names the file and what differs
    assert re.search(r'compare\.safetensors was written under another config \([^)]*seed[^)]*\): starting over', said[0]), said

def test_restart_said_turns_only_the_restart_warning_into_a_line():
    "Inside `_restart_said` a CheckpointRestart becomes one printed line with its reason; other warnings still show."
    import warnings
    from ntk_finetune.commands import _restart_said
    from ntk_finetune.finetune import CheckpointRestart
    lines = []
    with pytest.warns(UserWarning, match='something else') as shown:
        show = warnings.showwarning
        with _restart_said(lines.append):
            warnings.warn("checkpoint c.pt is of another run: starting over (on_mismatch='restart')", CheckpointRestart)
            warnings.warn('something else', UserWarning)
        assert warnings.showwarning is show
    assert lines == ['restart   checkpoint c.pt is of another run: starting over, and the file will be replaced']
    assert [str(w.message) for w in shown] == ['something else']

def test_taskvec_subcommand(tiny_lm, tmp_path):
    code, stdout, err = run('taskvec', '--model', tiny_lm, '--tasks', 'rt-sentiment,sms-spam', '--n', 8, '--n-test', 4,
                            '--max-length', 24, '--steps', 2, '--out', tmp_path)
    assert code == 0, err
    r = json.loads((tmp_path / 'taskvec.json').read_text())
    (pair,) = r['families']['network']['pairs'].values()
    assert sorted(pair['tasks']) == ['rt-sentiment', 'sms-spam'] and 0 <= pair['overlap'] <= 1
    assert 'rt-sentiment + sms-spam' in stdout

def test_help_is_fast_and_bare_command_prints_help():
    t0 = time.time(); code, stdout, _ = run('--help'); dt = time.time() - t0
    assert code == 0 and 'analyze' in stdout and dt < 3, dt
    code, stdout, _ = run(); assert code == 0 and 'usage' in stdout
    code, stdout, _ = run('--version'); assert code == 0 and 'ntk-finetune' in stdout
    code, stdout, _ = run('analyze', '--help'); assert code == 0 and '(default: 64)' in stdout and '{auto,lm,new}' in stdout
    assert '(default: None)' not in stdout and '(default: 0)' in stdout     # each default once, zero included
    assert not re.search(r'\(default:[^)]*\)\s*\(default:', stdout)

def test_help_imports_no_torch():
    """--help stays fast because the subcommands import the heavy packages only when they run."""
    import subprocess, sys
    code = ("import sys, ntk_finetune.cli as c\ntry: c.main(['analyze', '--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.stdout.split()[-2:] == ['False', 'False'], r.stdout[-300:] + r.stderr[-300:]

def test_list_tasks():
    code, stdout, _ = run('list-tasks'); assert code == 0 and 'rt-sentiment' in stdout and 'sst2' in stdout

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('files')
    (d / 'one_class.csv').write_text('text,label\n' + '\n'.join(f'review number {i},good' for i in range(40)))
    (d / 'cols.csv').write_text('review,stars\n' + '\n'.join(f'review number {i},{"good" if i % 2 else "bad"}' for i in range(40)))
    (d / 'notes.txt').write_text('x'); (d / 'a_file').write_text('x')
    (d / 'empty_analysis').mkdir()
    (d / 'broken' / 'analysis').mkdir(parents=True)
    (d / 'broken' / 'analysis' / 'analysis.json').write_text('{"settings": {"n": 4')
    (d / 'broken' / 'analysis' / 'analysis.safetensors').write_bytes(b'\x00' * 10)
    return d

BAD = [
    (['analyze', '--model', 'no such model!', '--out', '{tmp}'], 'unknown model'),
    (['analyze', '--model', 'EleutherAI/gpt-neo-1.3B', '--out', '{tmp}'], 'not in the local Hugging Face cache'),
    (['analyze', '--task', 'nope'], 'unknown task'),
    (['analyze', '--params', '([unclosed'], 'neither a preset'),
    (['analyze', '--n', '0'], 'expected an integer >= 4'),
    (['analyze', '--n', '1'], 'expected an integer >= 4'),
    (['analyze', '--n-test', '-1'], 'expected an integer >= 0'),
    (['analyze', '--max-length', '0'], 'expected an integer >= 8'),
    (['analyze', '--lr', '-1'], 'expected a positive finite number'),
    (['analyze', '--lr', 'nan'], 'expected a positive finite number'),
    (['analyze', '--batch-size', '0'], 'expected an integer >= 1'),
    (['analyze', '--finetune', '--steps', '-3'], 'expected an integer >= 1'),
    (['analyze', '--rules', 'oracle'], "unknown rule 'oracle'"),
    (['analyze', '--device', 'tpu'], 'unknown --device'),
    (['analyze', '--dtype', 'int8'], 'invalid choice'),
    (['analyze', '--head', 'both'], 'invalid choice'),
    (['analyze', '--data', '{files}/missing.csv', '--out', '{tmp}'], 'does not exist'),
    (['analyze', '--data', '{files}/notes.txt', '--out', '{tmp}'], 'must be a .csv'),
    (['analyze', '--data', '{files}/cols.csv', '--model', '{tiny}', '--out', '{tmp}'], "column 'text' is not"),
    (['analyze', '--data', '{files}/one_class.csv', '--model', '{tiny}', '--out', '{tmp}'], 'has 1 class'),
    (['analyze', '--model', '{tiny}', '--label-words', 'no,forsale', '--out', '{tmp}'], "' forsale' is not"),
    (['analyze', '--out', '{files}/a_file'], 'is a file'),
    (['analyze', '--out', '{files}/a_file/sub'], 'is a file'),
    (['spectrum', '{files}/empty_analysis'], 'holds no analysis'),
    (['spectrum', '{files}/broken'], 'unreadable'),
    (['stop', '{files}/nothing_here'], 'holds no analysis'),
    (['taskvec', '--tasks', 'rt-sentiment'], 'needs at least two tasks'),
    (['taskvec', '--tasks', 'nope,rt-sentiment', '--out', '{tmp}'], 'unknown task'),
    (['compare', '--task', 'stsb', '--out', '{tmp}'], 'needs the Hugging Face hub'),
    (['frobnicate'], 'invalid choice'),
    (['analyze', '--no-such-flag'], 'unrecognized arguments'),
]

def run_here(capfd, monkeypatch, *args):
    """The command's `main` in this process (no interpreter start per case): (exit code, stdout, stderr), as `run`;
    a warning it raises counts as a line of stderr (pytest would otherwise capture it out of sight)."""
    import warnings
    from ntk_finetune.cli import main
    monkeypatch.delenv('HF_HUB_DISABLE_PROGRESS_BARS', raising=False)    # main sets it: not for the later tests
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try: code = main(list(map(str, args)))
        except SystemExit as e: code = e.code
    out, err = capfd.readouterr()
    return code, out, '\n'.join([err.strip(), *(f'{w.category.__name__}: {w.message}' for w in caught)]).strip()

def _one_line_exit_2(code, stdout, err, message, tmp_path):
    assert code == 2, (code, err[-1500:])
    assert err.count('\n') == 0 and 'Traceback' not in err and message in err, err
    assert not list(tmp_path.rglob('report.html')) and not list(tmp_path.rglob('*.tmp'))

# through the installed command: a model, a number, a data file, a run that loads its model first, a subcommand
SHELL = [c for c in BAD
         if any(k in ' '.join(c[0]) for k in ('no such model', '--n 0', 'cols.csv', 'stsb', 'frobnicate'))]
assert len(SHELL) == 5
HERE = [c for c in BAD if c not in SHELL]

@pytest.mark.parametrize('args, message', HERE, ids=[' '.join(a)[:60] for a, _ in HERE])
def test_bad_input_is_one_line_exit_2(args, message, files, tiny_lm, tmp_path, capfd, monkeypatch):
    args = [a.format(files=files, tiny=tiny_lm, tmp=tmp_path / 'out') for a in args]
    _one_line_exit_2(*run_here(capfd, monkeypatch, *args), message, tmp_path)

@pytest.mark.parametrize('args, message', SHELL, ids=[' '.join(a)[:60] for a, _ in SHELL])
def test_bad_input_from_the_shell(args, message, files, tiny_lm, tmp_path):
    "The same through the installed command, whose environment is set before the libraries load."
    args = [a.format(files=files, tiny=tiny_lm, tmp=tmp_path / 'out') for a in args]
    _one_line_exit_2(*run(*args), message, tmp_path)

def test_cache_is_per_command_and_checks_the_weights(tiny_lm, tmp_path):
    """Other arguments in the same folder get their own cache; a model folder whose weights changed since the cached
    run is refused with one line (the cache is never reused for other weights)."""
    import shutil, transformers
    from safetensors.torch import load_file
    mine = tmp_path / 'mine'; shutil.copytree(tiny_lm, mine)
    out = tmp_path / 'out'
    args = lambda model, n=8: ('kernel', '--model', model, '--n', n, '--n-test', 0, '--max-length', 24, '--out', out)
    assert run(*args(mine))[0] == 0
    G8 = load_file(str(out / 'kernel.safetensors'))['G']
    code, _, err = run(*args(mine, 6)); assert code == 0, err                 # other arguments: a cache of their own
    assert len(list((out / '.cache').iterdir())) == 2
    assert run(*args(mine))[0] == 0                                           # the first command again: from its cache
    torch.testing.assert_close(load_file(str(out / 'kernel.safetensors'))['G'], G8, rtol=0, atol=0)
    m = transformers.LlamaForCausalLM.from_pretrained(mine)
    with torch.no_grad(): m.model.layers[0].self_attn.q_proj.weight.mul_(1.5)
    m.save_pretrained(mine)                                                    # the same folder, other weights
    code, _, err = run(*args(mine))
    assert code == 2 and 'holds a kernel for other inputs' in err and 'weights' in err and err.count('\n') == 0

def test_full_disk_and_unwritable_folder(monkeypatch, tmp_path, capsys):
    import shutil
    from ntk_finetune import cli
    Usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: Usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(SystemExit) as e: cli.main(['analyze', '--out', str(tmp_path / 'r')])
    assert e.value.code == 2 and 'MiB free' in capsys.readouterr().err
    monkeypatch.undo()
    # unwritable even for root: a read-only file system (/proc), and, for other users, a folder without write permission
    places = ['/proc/ntk-report'] + ([] if os.geteuid() == 0 else [str(tmp_path / 'ro' / 'r')])
    if os.geteuid() != 0:
        (tmp_path / 'ro').mkdir(); (tmp_path / 'ro').chmod(0o500)
    for where in places:
        with pytest.raises(SystemExit) as e: cli.main(['analyze', '--out', where])
        err = capsys.readouterr().err
        assert e.value.code == 2 and 'cannot write to' in err and err.count('\n') == 1, err

def test_ctrl_c_then_rerun_resumes(tmp_path):
    "Ctrl-C during the kernel: one line, exit 2, nothing half-written; the same command again finishes from the cache."
    import transformers
    from ntk_finetune.models import resolve_model
    big = tmp_path / 'lm'
    tok = transformers.AutoTokenizer.from_pretrained(resolve_model('smollm2-135m'))
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=4, intermediate_size=512, max_position_embeddings=256,
                                   pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(big); tok.save_pretrained(big)
    out, n = tmp_path / 'out', '48'
    cmd = [str(BIN), 'kernel', '--model', str(big), '--n', n, '--n-test', '0', '--max-length', '64',
           '--memory-budget', '0.05', '--out', str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,       # a shell's background
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))      # job ignores SIGINT
    cache = out / '.cache'
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None and not list(cache.rglob('captures0.done.json')): time.sleep(0.1)
    p.send_signal(signal.SIGINT); _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and 'Traceback' not in err, err                # progress bars, then one line
    assert err.strip().splitlines()[-1].startswith('ntk-finetune: interrupted'), err
    assert not (out / 'kernel.safetensors').exists() and not list(out.rglob('.*.tmp'))
    blocks = json.loads(next(cache.rglob('captures0.blocks.json')).read_text())
    done = json.loads(next(cache.rglob('captures0.done.json')).read_text())
    code, stdout, err = run(*cmd[1:]); assert code == 0, err
    todo = {int(m) for m in re.findall(r'forward/backward 1: .*?\d+/(\d+)', err)}
    assert len(blocks) - len(done) >= 2, 'the run ended before the interrupt: give it more blocks'
    assert done and todo == {len(blocks) - len(done)}, (todo, len(blocks), len(done))   # only the unfinished blocks ran
    assert (out / 'kernel.safetensors').exists()
    assert not list(cache.rglob('captures*'))            # a finished kernel keeps its layers' Grams, not the captures
    code, _, err = run(*[('8' if c == n else c) for c in cmd[1:]]); assert code == 0, err   # other args, same folder
