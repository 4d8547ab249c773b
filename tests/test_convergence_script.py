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
    # The JSON's rows are the runs' own evaluations (CocoMetric's numbers as the runner
    # logged them), the summary their statistics, the table the JSON's numbers.
    conv = conv_module()
    for name in MODELS:
        assert eval_rows(tmp_path / 'runs' / f'{name}_seed0') == [
            (r['epoch'], r['AP'], r['AP50'], r['AP75']) for r in result['models'][name]['runs']['0']]
        for key in KEYS:  # one seed: mean = min = max = that seed's value
            values = [r[key] for r in result['models'][name]['runs']['0']]
            assert result['models'][name][key] == dict(mean=values, min=values, max=values)
    assert (tmp_path / 'convergence_table.md').read_text() == conv.markdown_table(result)

    # A second invocation skips the finished runs and resumes an unfinished one (its
    # done.json gone, as after an interruption before the end) from its last checkpoint.
    (tmp_path / 'runs' / 'ours_seed0' / 'done.json').unlink()
    again = run_quick(tmp_path)
    assert again.count('done, skipped') == len(MODELS) - 1
    assert '[convergence] ours seed 0: training' in again
    log = (tmp_path / 'runs' / 'ours_seed0' / 'train.log').read_text()
    assert 'Auto resumed from the latest checkpoint' in log
    assert (tmp_path / 'runs' / 'ours_seed0' / 'done.json').is_file()
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


def eval_rows(work_dir):
    """(epoch, AP, AP50, AP75) of every evaluation the runner logged (LocalVisBackend's
    scalars.json, one folder per invocation), the later invocation's row winning."""
    rows = {}
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if 'coco/bbox_mAP' in row:
                rows[row['step']] = (row['step'], row['coco/bbox_mAP'], row['coco/bbox_mAP_50'],
                                     row['coco/bbox_mAP_75'])
    return [rows[e] for e in sorted(rows)]


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
# ----------------------------------------------------------------------------- known numbers
def conv_module():
    import convergence
    return convergence


def write_rows(out_dir, model, seed, rows):
    """A run's metrics.jsonl from (epoch, AP, AP50, AP75) tuples."""
    path = out_dir / 'runs' / f'{model}_seed{seed}' / 'metrics.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(dict(epoch=e, train_s=10.0 * e, AP=a, AP50=b, AP75=c)) + '\n'
                            for e, a, b, c in rows))


def test_read_rows_keeps_one_row_per_epoch_the_later_one(tmp_path):
    conv = conv_module()
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"epoch": 2, "AP": 0.2}\n\n{"epoch": 1, "AP": 0.1}\n{"epoch": 2, "AP": 0.25}\n')
    assert conv.read_rows(path) == [dict(epoch=1, AP=0.1), dict(epoch=2, AP=0.25)]
    assert conv.read_rows(tmp_path / 'none.jsonl') == []


def test_pending_runs_skips_finished_resumes_shorter_and_restarts_other_data(tmp_path, capsys):
    conv = conv_module()
    args = conv.parse_args(['--out-dir', str(tmp_path), '--seeds', '0', '1', '--epochs', '3',
                            '--num-train', '8', '--num-val', '4'])
    done = conv.settings(args)

    def run(model, seed, **changes):
        work_dir = conv.run_dir(tmp_path, model, seed)
        write_rows(tmp_path, model, seed, [(1, 0.1, 0.2, 0.05)])
        (work_dir / 'last_checkpoint').write_text('epoch_1.pth')
        (work_dir / 'done.json').write_text(json.dumps(dict(done, **changes)))
        return work_dir

    finished = run('ours', 0)
    shorter = run('detr', 0, epochs=2)  # a longer schedule asked for now: resume
    other = run('mmdet_cdetr', 0, num_train=16)  # other data: from scratch
    assert conv.pending_runs(args) == [('detr', 0), ('mmdet_cdetr', 0), ('ours', 1), ('detr', 1),
                                       ('mmdet_cdetr', 1)]  # seed-major, ours seed 0 skipped
    assert capsys.readouterr().out == '[convergence] ours seed 0: done, skipped\n'
    assert sorted(p.name for p in finished.iterdir()) == ['done.json', 'last_checkpoint',
                                                          'metrics.jsonl']
    # resumed: its rows and checkpoint kept, not marked done
    assert sorted(p.name for p in shorter.iterdir()) == ['last_checkpoint', 'metrics.jsonl']
    assert list(other.iterdir()) == []  # restarted: nothing of the old run is read


def test_summarise_and_table_from_known_numbers(tmp_path):
    """Every requested (model, seed) with its rows; per-epoch mean/min/max over seeds
    on the epochs every seed reached (up to --epochs); 'epochs to reach' DETR's final
    AP and the ratio; the markdown table shows exactly the JSON's numbers."""
    conv = conv_module()
    args = conv.parse_args(['--out-dir', str(tmp_path), '--seeds', '0', '1', '--epochs', '3',
                            '--models', 'ours', 'detr', 'mmdet_cdetr'])
    write_rows(tmp_path, 'detr', 0, [(1, 0.05, 0.1, 0.0), (2, 0.10, 0.2, 0.05),
                                     (3, 0.20, 0.4, 0.1)])
    write_rows(tmp_path, 'detr', 1, [(1, 0.07, 0.1, 0.0), (2, 0.12, 0.2, 0.05),
                                     (3, 0.30, 0.5, 0.2), (4, 0.9, 0.9, 0.9)])  # beyond --epochs
    write_rows(tmp_path, 'ours', 0, [(1, 0.20, 0.4, 0.1), (2, 0.30, 0.5, 0.2),
                                     (3, 0.40, 0.6, 0.3)])
    write_rows(tmp_path, 'ours', 1, [(1, 0.30, 0.5, 0.2), (3, 0.50, 0.7, 0.4)])  # no epoch 2
    write_rows(tmp_path, 'mmdet_cdetr', 0, [(1, 0.25, 0.4, 0.1), (2, 0.35, 0.5, 0.2),
                                            (3, 0.60, 0.8, 0.5)])
    write_rows(tmp_path, 'mmdet_cdetr', 1, [(1, 0.10, 0.2, 0.0), (2, 0.20, 0.3, 0.1),
                                            (3, 0.40, 0.6, 0.3)])
    result = conv.summarise(args, 0.0)
    models = result['models']
    assert list(models) == ['ours', 'detr', 'mmdet_cdetr']
    assert all(set(m['runs']) == {'0', '1'} for m in models.values())
    assert [r['epoch'] for r in models['detr']['runs']['1']] == [1, 2, 3]
    assert models['ours']['epochs'] == [1, 3] and models['detr']['epochs'] == [1, 2, 3]
    approx = pytest.approx
    assert models['ours']['AP'] == dict(mean=approx([0.25, 0.45]), min=[0.2, 0.4], max=[0.3, 0.5])
    assert models['detr']['AP50'] == dict(mean=approx([0.1, 0.2, 0.45]), min=[0.1, 0.2, 0.4],
                                          max=[0.1, 0.2, 0.5])
    assert models['detr']['train_s'] == {'0': 30.0, '1': 30.0}
    assert result['reach']['target'] == approx(0.25)  # DETR's final mean AP
    assert result['reach']['epochs'] == dict(ours=1, detr=3, mmdet_cdetr=2)
    assert result['reach']['ratio_detr_over_ours'] == 3.0
    assert result['reach_AP50']['epochs'] == dict(ours=1, detr=3, mmdet_cdetr=3)  # target 0.45
    # ours' best seed >= mmdet's worst seed, eval point by eval point (ours: 0.3, 0.5; mmdet: 0.1,
    # 0.2, 0.4; paired by position, not epoch: see docs/testing.md)
    assert result['ours_matches_mmdet_cdetr'] == [True, True]

    table = conv.markdown_table(result).splitlines()
    header = '| epoch | Conditional DETR (ours) | DETR (mmdet) | ConditionalDETR (mmdet) |'
    assert [i for i, line in enumerate(table) if line == header] == [2, 10, 18]  # AP, AP50, AP75
    for start, key in zip((4, 12, 20), ('AP', 'AP50', 'AP75')):
        for row, epoch in zip(table[start:start + 3], (1, 2, 3)):
            cells = [c.strip() for c in row.strip('|').split('|')]
            assert cells[0] == str(epoch)
            for cell, data in zip(cells[1:], models.values()):
                i = data['epochs'].index(epoch) if epoch in data['epochs'] else None
                assert cell == ('' if i is None else f'{data[key]["mean"][i]:.3f} '
                                f'[{data[key]["min"][i]:.3f}, {data[key]["max"][i]:.3f}]')
    assert table[5].startswith('| 2 |  | 0.110 [0.100, 0.120] | ')  # ours has no epoch 2


def test_metrics_recorder_writes_the_runs_eval_metrics(tmp_path):
    conv = conv_module()
    path = tmp_path / 'metrics.jsonl'
    recorder = conv.MetricsRecorder(path, previous_s=100.0)
    runner = type('Runner', (), {'epoch': 3})()
    recorder.after_val_epoch(runner, {'coco/bbox_mAP': 0.123, 'coco/bbox_mAP_50': 0.456,
                                      'coco/bbox_mAP_75': 0.078, 'coco/bbox_mAP_s': 0.9})
    row, = conv.read_rows(path)
    assert (row['epoch'], row['AP'], row['AP50'], row['AP75']) == (3, 0.123, 0.456, 0.078)
    assert 100.0 <= row['train_s'] < 160.0  # previous invocations' seconds carried over
