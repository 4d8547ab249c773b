"""Smoke test of ``benchmarks/speed.py`` with a tiny setting (no timing checks)."""
import json
import subprocess
import sys

from conftest import ROOT


def test_speed_script_writes_the_expected_json(tmp_path):
    out = tmp_path / 'speed.json'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'speed.py'), '--depth',
         '18', '--size', '64', '--layers', '1', '--queries', '10',
         '--steps', '2', '--warmup', '1', '--memory-steps', '1',
         '--threads', '1', '--variants', 'mmdet,ours,ours:amp+cl',
         '--breakdown', '--out', str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'x mmdet' in proc.stdout  # the table
    result = json.loads(out.read_text())
    assert result['config']['variants'] == ['mmdet', 'ours', 'ours:amp+cl']
    assert {'cpu', 'logical_cpus', 'torch_threads'} <= set(result['machine'])
    assert result['machine']['torch_threads'] == 1
    assert len(result['load_avg']['before']) == 3
    for name in ('mmdet', 'ours', 'ours:amp+cl'):
        res = result['variants'][name]
        for key in ('train', 'infer'):
            assert res[key]['n'] == 2
            assert res[key]['min'] <= res[key]['median'] <= res[key]['max']
        assert {'growth_mb', 'peak_mb', 'before_mb',
                'process_peak_rss_mb'} <= set(res['memory'])
        assert set(res['breakdown']) == {
            'backbone+neck', 'encoder', 'decoder', 'head+loss', 'matcher',
            'optimizer'}
        assert set(result['ratios'][name]) == {'train', 'infer', 'memory'}
    assert result['ratios']['mmdet'] == {'train': 1.0, 'infer': 1.0,
                                         'memory': 1.0}
