"""benchmarks/ablation.py --quick: trains two variants and writes JSON, PNG and table."""
import json
import subprocess
import sys

import cv2

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

    again = run_quick(tmp_path)  # resumable: finished runs are skipped
    assert again.count('done, skipped') == 2
    assert json.loads((tmp_path / 'ablation.json').read_text())['variants'] == variants


def test_rank_agreement_and_pairs_from_known_numbers():
    import ablation  # benchmarks/, on pytest.ini's pythonpath

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
