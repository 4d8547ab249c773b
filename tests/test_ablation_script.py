"""benchmarks/ablation.py --quick: trains two variants and writes JSON, PNG and table."""
import json
import subprocess
import sys

import cv2
import pytest

from conftest import ROOT

SCRIPT = ROOT / 'benchmarks' / 'ablation.py'


def run_quick(out_dir):
    proc = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out-dir', str(out_dir)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_quick_run_writes_json_png_table_then_skips_finished_runs(tmp_path):
    stdout = run_quick(tmp_path)
    result = json.loads((tmp_path / 'ablation.json').read_text())
    variants = result['variants']
    assert list(variants) == ['csq', 't_identity']
    # 'T identity' is CSQ-P by definition: trained once, under that name.
    assert variants['t_identity']['trained_as'] == 'csq_p'
    assert sorted(p.name for p in (tmp_path / 'runs').iterdir()) == ['csq_p_seed0', 'csq_seed0']
    config = (tmp_path / 'configs' / 'csq_p.py').read_text()
    assert "model = dict(decoder=dict(spatial_query='csq_p'))" in config
    log = (tmp_path / 'runs' / 'csq_p_seed0' / 'train.log').read_text()
    assert f'Loads checkpoint by safe_local backend from path: {tmp_path}/pretrain/backbone.pth' in log
    for name, paper in (('csq', 40.9), ('t_identity', 37.8)):
        v = variants[name]
        assert v['paper_AP'] == paper and v['epochs'] == [1] and v['complete_seeds'] == ['0']
        for key in ('final_AP', 'mean_AP_over_run'):
            assert 0.0 <= v[key]['min'] <= v[key]['mean'] <= v[key]['max'] <= 1.0
    comp = result['compare_final_AP']
    assert comp['variants'] == ['csq']  # the alias is not a second model
    assert comp['tau'] is None and comp['pairs'] == []  # one model: nothing to rank
    table = (tmp_path / 'ablation_table.md').read_text()
    assert "| T identity (= csq_p run) | `transform='identity'` | 37.8 |" in table and '| 1/1 |' in table
    assert 'Kendall tau' in table and 'Kendall tau' in stdout
    image = cv2.imread(str(tmp_path / 'ablation.png'))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100

    # The final AP is the run's own last evaluation (as the runner logged it), the alias
    # reports the csq_p run's numbers, and the table is the JSON's.
    from test_convergence_script import eval_rows
    ablation = ablation_module()
    for name, run in (('csq', 'csq_seed0'), ('t_identity', 'csq_p_seed0')):
        (epoch, ap, *_), = eval_rows(tmp_path / 'runs' / run)
        assert epoch == 1 and variants[name]['final_AP']['per_seed'] == {'0': ap}
        assert variants[name]['runs']['0'][0]['AP'] == ap == variants[name]['AP_mean_curve'][0]
    assert table == ablation.markdown_table(result)

    again = run_quick(tmp_path)  # resumable: finished runs are skipped
    assert again.count('done, skipped') == 2
    assert json.loads((tmp_path / 'ablation.json').read_text())['variants'] == variants


def ablation_module():
    import ablation  # benchmarks/, on pytest.ini's pythonpath
    return ablation


def test_rank_agreement_and_pairs_from_known_numbers():
    ablation = ablation_module()

    def variant(paper, seeds):
        v = dict(mean=sum(seeds) / len(seeds), min=min(seeds), max=max(seeds))
        return dict(paper_AP=paper, final_AP=v)

    variants = dict(
        csq=variant(40.9, [0.30, 0.32]),      # > ref_fixed beyond the spread
        ref_fixed=variant(36.8, [0.10, 0.12]),
        csq_p=variant(37.8, [0.25, 0.35]),    # < csq, ranges overlap
        t_identity=variant(37.8, [0.25, 0.35]),  # alias of csq_p: not counted
        csq_i=variant(40.2, [0.05, 0.06]))    # reversed beyond the spread
    c = ablation.compare(variants, 'final_AP')
    assert c['variants'] == ['csq', 'ref_fixed', 'csq_p', 'csq_i']
    from scipy.stats import kendalltau
    assert c['tau'] == kendalltau([40.9, 36.8, 37.8, 40.2], [0.31, 0.11, 0.30, 0.055]).statistic
    pairs = {(p['higher_in_paper'], p['lower_in_paper']): (p['order_kept'], p['beyond_seed_spread'])
             for p in c['pairs']}
    assert pairs == {('csq', 'ref_fixed'): (True, True), ('csq', 'csq_p'): (True, False),
                     ('csq_i', 'ref_fixed'): (False, True), ('csq_i', 'csq_p'): (False, True)}
    assert (c['pairs_kept'], c['pairs_kept_beyond_spread'], c['pairs_reversed_beyond_spread']) == (
        2, 1, 2)
    assert c['target_met'] is False


def test_variant_results_and_table_from_known_runs(tmp_path):
    """Final AP and mean AP over the run per complete seed (an unfinished seed is left
    out of them but drawn in the curve), the alias reads its twin's runs, the seed
    spread, and table cells that are the JSON's numbers."""
    from test_convergence_script import write_rows
    ablation = ablation_module()
    args = ablation.parse_args(['--out-dir', str(tmp_path), '--variants', 'csq', 'csq_p',
                                't_identity', '--seeds', '0', '1', '--epochs', '2'])
    write_rows(tmp_path, 'csq', 0, [(1, 0.1, 0, 0), (2, 0.3, 0, 0), (3, 0.9, 0, 0)])  # > --epochs
    write_rows(tmp_path, 'csq', 1, [(1, 0.2, 0, 0), (2, 0.5, 0, 0)])
    write_rows(tmp_path, 'csq_p', 0, [(1, 0.1, 0, 0), (2, 0.2, 0, 0)])
    write_rows(tmp_path, 'csq_p', 1, [(1, 0.3, 0, 0)])  # unfinished
    result = ablation.summarise(args, 0.0)
    csq, csq_p = result['variants']['csq'], result['variants']['csq_p']
    approx = pytest.approx
    assert csq['complete_seeds'] == ['0', '1'] and csq['epochs'] == [1, 2]
    assert csq['final_AP'] == dict(mean=approx(0.4), min=0.3, max=0.5, per_seed={'0': 0.3, '1': 0.5})
    assert csq['mean_AP_over_run'] == dict(mean=approx(0.275), min=approx(0.2), max=approx(0.35),
                                           per_seed={'0': approx(0.2), '1': approx(0.35)})
    assert csq['AP_mean_curve'] == approx([0.15, 0.4])
    assert csq_p['complete_seeds'] == ['0'] and csq_p['AP_mean_curve'] == approx([0.2, 0.2])
    assert csq_p['final_AP'] == dict(mean=0.2, min=0.2, max=0.2, per_seed={'0': 0.2})
    alias = result['variants']['t_identity']
    assert alias['trained_as'] == 'csq_p' and alias['runs'] == csq_p['runs']
    assert alias['final_AP'] == csq_p['final_AP'] and alias['paper_AP'] == 37.8
    assert result['final_AP_seed_spread'] == dict(median=approx(0.2), max=approx(0.2))
    assert result['compare_final_AP']['variants'] == ['csq', 'csq_p']

    rows = ablation.markdown_table(result).splitlines()[2:5]
    for row, (name, v) in zip(rows, result['variants'].items()):
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert cells[2] == str(v['paper_AP'])
        assert cells[3] == ablation.fmt(v['final_AP']) == (
            f"{v['final_AP']['mean']:.3f} [{v['final_AP']['min']:.3f}, {v['final_AP']['max']:.3f}]")
        assert cells[4] == ablation.fmt(v['mean_AP_over_run'])
    assert rows[0].endswith('| 0.400 [0.300, 0.500] | 0.275 [0.200, 0.350] | 2/2 |')
    assert rows[1].endswith('| 0.200 [0.200, 0.200] | 0.150 [0.150, 0.150] | '
                            '1/2 (epoch 2 of 2: mean AP 0.200) |')
    assert rows[2].startswith('| T identity (= csq_p run) | `transform=\'identity\'` | 37.8 |')
