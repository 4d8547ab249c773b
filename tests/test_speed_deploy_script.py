"""Smoke test of ``benchmarks/speed_deploy.py --quick`` (no timing checks)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ROOT

for _name in ('onnx', 'onnxruntime', 'openvino'):
    pytest.importorskip(_name, reason="the deploy extra is not installed: "
                        "pip install -e '.[deploy]'")


def test_speed_deploy_quick_writes_the_expected_json(tmp_path):
    out = tmp_path / 'speed_deploy.json'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'speed_deploy.py'),
         '--quick', '--threads', '1', '--out', str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'x mmdet' in proc.stdout  # the tables
    assert 'CPU flags: avx2 ' in proc.stdout
    result = json.loads(out.read_text())
    flags = result['machine']['cpu_flags']
    assert set(flags) >= {'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16',
                          'amx_bf16'}
    bf16 = flags['avx512_bf16'] or flags['amx_bf16']
    variants = ['mmdet', 'ours'] + (['ours:bf16'] if bf16 else []) + [
        'ours:onnxruntime', 'ours:openvino', 'ours:openvino-fp32'] + (
        ['ours:openvino-bf16'] if bf16 else [])
    if importlib.util.find_spec('nncf') is not None:  # the int8 extra
        variants += ['ours:openvino-int8', 'ours:onnxruntime-int8']
        assert 'INT8 quantisation:' in proc.stdout
    assert result['config']['variants'] == variants
    assert set(result['results']) == {'1x64x96', '2x64x64'}
    for key, setting in result['results'].items():
        assert setting['mmdet']['ratio_vs_mmdet'] == 1.0
        batch = int(key.split('x')[0])
        for name in variants:  # every detection (top-100 per image) compared or a top-k tie
            diffs = setting[name]['diff_vs_ours']
            assert diffs['compared'] + diffs['boundary_ties'] + diffs['label_mismatches'] == (
                100 * batch)
            # Measured 70 of 100 and 115 of 200 compared (random weights: the rest tie at the
            # top-k boundary within 1e-4): a comparison of nothing would pass the bounds below.
            assert diffs['compared'] >= 50 * batch, (key, name, diffs)
        for name in variants:
            res = setting[name]
            assert res['n'] == 2 and res['median_ms'] > 0
            # The ratio column is this variant's median over mmdet's.
            assert res['ratio_vs_mmdet'] == pytest.approx(
                res['median_ms'] / setting['mmdet']['median_ms'], rel=1e-2)
        fp32 = ['ours:onnxruntime', 'ours:openvino-fp32'] + (
            ['ours:openvino'] if result['openvino_precision'][
                'ours:openvino'] == 'f32' else [])  # bf16 CPUs: not fp32
        for name in fp32:  # the exported graph reproduces ours
            diffs = setting[name]['diff_vs_ours']
            assert diffs['label_mismatches'] == 0
            assert diffs['score'] <= 1e-4 and diffs['box'] <= 1e-4


def test_bf16_predictions_are_compared_in_float32():
    """``ours:bf16`` (autocast) predicts bfloat16 scores and boxes, which NumPy
    cannot hold: they are compared as float32, labels kept as integers (the
    run failed with ``Got unsupported ScalarType BFloat16`` on a bf16 CPU)."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    import speed_deploy

    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        scores=torch.tensor([0.5, 0.25], dtype=torch.bfloat16),
        labels=torch.tensor([3, 1]),
        bboxes=torch.tensor([[1., 2., 3., 4.]] * 2, dtype=torch.bfloat16))
    scores, labels, boxes = speed_deploy.torch_outputs([sample, sample])
    assert scores.dtype == boxes.dtype == 'float32'
    assert labels.dtype == 'int64' and labels.tolist() == [[3, 1]] * 2
    assert scores.tolist() == [[0.5, 0.25]] * 2 and boxes.shape == (2, 2, 4)
