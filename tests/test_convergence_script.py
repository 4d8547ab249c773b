"""benchmarks/convergence.py --quick: trains the three models and writes JSON + PNG."""
import json
import subprocess
import sys

import cv2

from conftest import ROOT

SCRIPT = ROOT / 'benchmarks' / 'convergence.py'
MODELS = ('ours', 'detr', 'mmdet_cdetr')
KEYS = ('AP', 'AP50', 'AP75')


def run_quick(out_dir):
    proc = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out-dir', str(out_dir)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_quick_run_writes_results_and_plot_then_resumes(tmp_path):
    stdout = run_quick(tmp_path)
    result = json.loads((tmp_path / 'convergence.json').read_text())

    assert set(result['models']) == set(MODELS)
    # Every model started from the benchmark's pre-trained backbone.
    assert (tmp_path / 'pretrain' / 'backbone.pth').is_file()
    assert result['settings']['pretrain']['epochs'] == 1
    assert result['pretrain']['settings']['epochs'] == 1 and result['pretrain']['history']
    for name in MODELS:
        log = (tmp_path / 'runs' / f'{name}_seed0' / 'train.log').read_text()
        assert f'Loads checkpoint by safe_local backend from path: {tmp_path}/pretrain/backbone.pth' in log
    for name in MODELS:
        model = result['models'][name]
        assert model['epochs'] == [1, 2]  # --quick: 2 epochs, evaluated after each
        assert set(model['runs']) == {'0'}  # --quick: one seed
        for key in KEYS:
            for stat in ('mean', 'min', 'max'):
                values = model[key][stat]
                assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
        for row in model['runs']['0']:
            assert set(KEYS) <= set(row) and row['train_s'] > 0
    for name, key in (('reach', 'AP'), ('reach_AP50', 'AP50')):
        reach = result[name]
        assert reach['target'] == result['models']['detr'][key]['mean'][-1]
        assert set(reach['epochs']) == set(MODELS)
    assert len(result['ours_matches_mmdet_cdetr']) == 2
    assert 'epochs to reach AP' in stdout and 'ratio DETR / ours' in stdout

    image = cv2.imread(str(tmp_path / 'convergence.png'))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100

    # A second invocation finds every run finished and only rebuilds the results.
    again = run_quick(tmp_path)
    assert again.count('done, skipped') == len(MODELS)
    assert json.loads((tmp_path / 'convergence.json').read_text())['models'] == result['models']

    # The init ablation trains mmdet's ConditionalDETR on this benchmark's data and backbone.
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'convergence_init_ablation.py'), '--seed', '0',
         '--epochs', '1', '--benchmark-dir', str(tmp_path), '--out-dir', str(tmp_path / 'init')],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in
            (tmp_path / 'init' / 'seed0' / 'metrics.jsonl').read_text().splitlines()]
    assert [row['epoch'] for row in rows] == [1] and 0.0 <= rows[0]['AP'] <= 1.0


def test_quick_run_trains_group_detr_variants(tmp_path):
    """--group-detr K adds ours with model.group_detr=K (run ``ours_gK``)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--models', 'ours',
                           '--group-detr', '2', '--out-dir', str(tmp_path)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / 'convergence.json').read_text())
    assert list(result['models']) == ['ours', 'ours_g2']
    assert result['models']['ours_g2']['group_detr'] == 2
    assert result['models']['ours_g2']['epochs'] == [1, 2]
    log = (tmp_path / 'runs' / 'ours_g2_seed0' / 'train.log').read_text()
    assert 'group_detr=2' in log  # the run's dumped config
    assert (tmp_path / 'convergence.png').is_file()
