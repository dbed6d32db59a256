"""The committed study results are keyed by the specs their notebooks build: a full run reuses every committed row
(nothing reruns), and the one-off migration that gave the rows their specs leaves them as they are."""
import importlib.util, json, shutil
from pathlib import Path
import pytest
from ntk_finetune.presets import preset
from ntk_finetune.store import Table
from ntk_finetune.experiments import (linearization_specs, task_vector_specs, lora_specs, curve_specs,
                                      spectrum_specs, spectrum_run)
from ntk_finetune.stopping_study import stopping_specs

RESULTS = Path(__file__).parents[1] / 'results'
STUDIES = {  # results file, its list of rows, the specs of the study's cpu preset
    'linearization': ('linearization.json', 'runs',
                      lambda: linearization_specs(preset('01_kernel_vs_finetuning', 'cpu'))),
    'task_vectors': ('task_vectors.json', 'runs', lambda: task_vector_specs(preset('03_task_vectors', 'cpu'))),
    'lora_kernels': ('lora_kernels.json', 'kernels', lambda: lora_specs(preset('06_lora_kernels', 'cpu'))[0]),
    'lora_finetune': ('lora_kernels.json', 'finetune', lambda: lora_specs(preset('06_lora_kernels', 'cpu'))[1]),
    'task_spectra': ('task_spectra.json', 'rows', lambda: spectrum_specs(preset('02_task_spectra', 'cpu'))),
    'curve_tasks': ('learning_curves.json', 'tasks', lambda: curve_specs(preset('04_learning_curves', 'cpu'))[0]),
    'curve_finetune': ('learning_curves.json', 'finetuned',
                       lambda: curve_specs(preset('04_learning_curves', 'cpu'))[1]),
    **{f'stopping_{f}': ('stopping.json', f, lambda f=f: stopping_specs(preset('05_stopping', 'cpu'))[f])
       for f in ('rows', 'adamw', 'sgd', 'half_step', 'more')},
}


@pytest.mark.parametrize('study', STUDIES)
def test_committed_rows_cover_the_cpu_preset(study):
    file, rows, specs = STUDIES[study]
    t = Table(RESULTS / file, rows)
    specs = specs()
    missing = [s for s in specs if t.get(s) is None]
    assert not missing, f"{len(missing)} of {len(specs)} runs of {study} would rerun, e.g. {missing[0]}"
    assert len(t.rows) == len(json.loads((RESULTS / file).read_text())[rows])  # every committed row has its key


@pytest.fixture(scope='module')
def migrate():
    "tools/migrate_results.py as a module."
    spec = importlib.util.spec_from_file_location('migrate', Path(__file__).parents[1] / 'tools' / 'migrate_results.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_migration_is_done_and_idempotent(tmp_path, migrate):
    for f in {v[0] for v in STUDIES.values()}:
        shutil.copy(RESULTS / f, tmp_path / f)
    migrate.main(tmp_path)
    for f in {v[0] for v in STUDIES.values()}:
        assert (tmp_path / f).read_bytes() == (RESULTS / f).read_bytes(), f


def test_a_row_whose_spec_disagrees_is_refused(migrate):
    doc = json.loads((RESULTS / 'linearization.json').read_text())
    doc['runs'][0]['steps'] += 1  # the settings now give another spec than the one recorded
    with pytest.raises(SystemExit, match="recorded spec is not"):
        migrate.linearization(doc)


def test_a_stopping_row_that_did_not_run_its_plan_is_refused(migrate):
    doc = json.loads((RESULTS / 'stopping.json').read_text())
    r = next(r for r in doc['rows'] if r['steps_run'] > r['steps_min'])  # run past the rules: its length is planned
    r.update(steps_run=r['steps_run'] + 4, key=None, spec=None)
    with pytest.raises(SystemExit, match="its plan"):
        migrate.stopping(doc)


def test_a_spectra_row_refits_from_its_stored_kernel():
    "The committed kernel of a row gives back the row's fits and diagnostics without a model (a new protocol's path)."
    spec = spectrum_specs(preset('02_task_spectra', 'cpu'))[1]  # MiniLM's attention kernel at a random init
    row = Table(RESULTS / 'task_spectra.json').get(spec)
    new = spectrum_run(spec, model=(None, None), kernels_dir=RESULTS / 'kernels')  # its pool is recorded
    assert new['seconds'] is None  # read from the store, not recomputed
    for k in ('paper', 'disjoint', 'resample'):
        assert new[k]['beta_mean'] == pytest.approx(row[k]['beta_mean'], rel=1e-9), k
    assert new['alignment'] == pytest.approx(row['alignment'], rel=1e-9)
    assert new['eigvals'] == pytest.approx(row['eigvals'], rel=1e-9, abs=1e-15)


def test_every_stored_kernel_is_an_artefact_of_a_spectra_row():
    from ntk_finetune.store import load_artifact
    from ntk_finetune.experiments import SpectrumRun, kernel_path
    keys = {r['key'] for r in Table(RESULTS / 'task_spectra.json').rows}
    files = sorted((RESULTS / 'kernels').iterdir())
    assert files and all(f.suffix == '.safetensors' for f in files)
    for f in files:
        spec = SpectrumRun.from_dict(load_artifact(f).meta['spec'])  # the checksum holds, and the spec is a row's
        assert spec.key() in keys and kernel_path(f.parent, spec) == f, f.name
