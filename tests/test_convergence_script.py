"""benchmarks/convergence.py --quick: trains the three models and writes JSON + PNG."""
import json
import subprocess
import sys

import cv2
import pytest

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


# ----------------------------------------------------------------------------- Group DETR summary
# Mean AP over seeds 0 and 1 at epochs 1-6 (hand-computed): ours 0.06 0.11 0.21 0.31 0.38 0.42;
# g11 0.03 0.17 0.43 0.41 0.42 0.44; g3 0.05 0.21 0.37 0.44 0.47 0.48; g6 0.04 0.31 0.44 0.48
# 0.49 0.50. Target (ours' final) 0.42, which ours first reaches at epoch 6.
CURVES = {
    'ours': ([.05, .10, .20, .30, .36, .40], [.07, .12, .22, .32, .40, .44]),
    'ours_g11': ([.02, .25, .44, .40, .41, .43], [.04, .09, .42, .42, .43, .45]),
    'ours_g3': ([.04, .20, .35, .43, .46, .47], [.06, .22, .39, .45, .48, .49]),
    'ours_g6': ([.03, .30, .43, .47, .48, .50], [.05, .32, .45, .49, .50, .50]),
}


def summarised(tmp_path, curves):
    """convergence.summarise over runs whose metrics.jsonl hold ``curves`` (AP per seed)."""
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    import convergence
    for model, seeds in curves.items():
        for seed, aps in enumerate(seeds):
            work_dir = convergence.run_dir(tmp_path, model, seed)
            work_dir.mkdir(parents=True)
            (work_dir / 'metrics.jsonl').write_text(''.join(
                json.dumps(dict(epoch=e, train_s=10. * e, AP=ap, AP50=ap, AP75=ap)) + '\n'
                for e, ap in enumerate(aps, start=1)))
    ks = [m[len('ours_g'):] for m in curves if m.startswith('ours_g')]
    args = convergence.parse_args(
        ['--out-dir', str(tmp_path), '--epochs', '6', '--seeds', '0', '1', '--models',
         *[m for m in curves if not m.startswith('ours_g')]] + (['--group-detr', *ks] if ks else []))
    return convergence, convergence.summarise(args, 0.0)


def test_group_detr_summary_target_per_k_and_best_k(tmp_path):
    _, result = summarised(tmp_path, CURVES)
    assert 'reach' not in result  # no DETR run: the Group DETR block still comes
    summary = result['group_detr']
    assert summary['target'] == pytest.approx(.42)
    assert summary['k1']['epochs_to_target'] == 6 and summary['k1']['final_epoch'] == 6
    assert summary['k1']['final_AP'] == pytest.approx(dict(mean=.42, min=.40, max=.44))
    groups = summary['groups']
    assert list(groups) == ['ours_g11', 'ours_g3', 'ours_g6']
    g11, g3, g6 = groups.values()
    assert [g['k'] for g in (g11, g3, g6)] == [11, 3, 6]
    assert [g['epochs_to_target'] for g in (g11, g3, g6)] == [3, 4, 3]
    assert [g['ratio_to_k1'] for g in (g11, g3, g6)] == pytest.approx([.5, 4 / 6, .5])
    # Epoch 1 is behind for every K (not compared); from the 2nd each mean is ahead.
    for g in (g11, g3, g6):
        assert g['compared_epochs'] == [2, 3, 4, 5, 6]
        assert g['ahead'] is True and g['behind_epochs'] == []
    # Per seed: g11's worst seed is below ours' best at epochs 2 (0.09 < 0.12) and 6 (0.43 < 0.44).
    assert g11['ahead_beyond_spread'] is False and g11['spread_overlap_epochs'] == [2, 6]
    assert g3['ahead_beyond_spread'] is True and g6['ahead_beyond_spread'] is True
    assert g11['final_AP'] == pytest.approx(dict(mean=.44, min=.43, max=.45))
    # Half of K = 1's 6 epochs is 3: met by g6 and g11 (at the boundary), not by g3 (4).
    assert [g['target_met'] for g in (g11, g3, g6)] == [True, False, True]
    # g11 and g6 both reach it at epoch 3: the higher final AP (g6, 0.50 > 0.44) is best.
    assert summary['best'] == 'ours_g6' and summary['best_k'] == 6
    assert summary['target_met'] is True


def test_group_detr_summary_never_reached_and_behind(tmp_path):
    curves = {'ours': CURVES['ours'], 'detr': CURVES['ours_g3'],
              'ours_g2': ([.05, .12, .20, .32, .37, .39], [.07, .14, .21, .33, .38, .40]),
              'ours_g4': ([.05, .12, .22, .32, .38, .40], [.07, .14, .22, .33, .38, .41])}
    _, result = summarised(tmp_path, curves)
    assert result['reach']['target'] == pytest.approx(.48)  # with DETR: its block as before
    g2, g4 = result['group_detr']['groups'].values()
    for g in (g2, g4):
        assert g['epochs_to_target'] is None and g['ratio_to_k1'] is None
        assert g['target_met'] is False
    # Behind at 3, 5, 6 (0.205 < 0.21, 0.375 < 0.38, 0.395 < 0.42), ahead at 2 and 4.
    assert g2['ahead'] is False and g2['behind_epochs'] == [3, 5, 6]
    # Neither reaches the target: the best is the higher final AP (g4, 0.405 > 0.395).
    assert result['group_detr']['best_k'] == 4 and result['group_detr']['target_met'] is False


def test_no_group_detr_block_without_ours_or_groups(tmp_path):
    convergence, result = summarised(tmp_path, {'ours': CURVES['ours']})
    assert 'group_detr' not in result
    models = dict(result['models'], ours_g3=dict(result['models']['ours'], group_detr=3))
    assert convergence.group_detr_summary(
        {m: d for m, d in models.items() if m != 'ours'}) is None


def test_group_detr_report_markdown_and_plot_line(tmp_path, capsys, monkeypatch):
    convergence, result = summarised(tmp_path, CURVES)
    convergence.report(result)
    out = capsys.readouterr().out
    assert ('Group DETR against K = 1 (target: K = 1 final AP 0.420 at epoch 6, first reached '
            'at epoch 6; mean over seeds):') in out
    assert ("  K = 11: target epoch 3 (0.50 x K = 1's); ahead of K = 1 at every epoch from the "
            "2nd: yes; worst seed >= K = 1's best: no (epochs 2, 6); final AP 0.440 "
            "[0.430, 0.450] (epoch 6)") in out
    assert "  best K: 6; the issue's target" in out and out.rstrip().endswith(': met')
    table = convergence.markdown_table(result)
    assert "| 1 | epoch 6 | | | 0.420 [0.400, 0.440] |" in table
    assert ("| 3 | epoch 4 (0.67 x K = 1's) | yes | yes | 0.480 [0.470, 0.490] |") in table
    assert 'Best K: 6.' in table and '**met**' in table

    import matplotlib.axes
    lines = []
    monkeypatch.setattr(matplotlib.axes.Axes, 'axhline',
                        lambda self, y, **kw: lines.append((round(y, 6), kw['label'])))
    convergence.plot(result, tmp_path / 'no_detr.png')
    assert lines == [(.42, 'K = 1 final AP')]  # on the AP plot only
    lines.clear()
    convergence.plot(dict(result, reach=dict(target=.3)), tmp_path / 'detr.png')
    assert lines == [(.3, "DETR's final AP")]  # DETR's line as before
