"""INT8 quantisation (NNCF, QDQ ONNX): tools/export_onnx.py --int8 end to end.

Random weights say nothing about INT8 accuracy (docs/deploy.md has the
demo model's AP); these tests check the recipe runs, keeps what it must in
float, records the precision and stays runnable by every runner.
"""
import json
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmdet.registry import MODELS

from conftest import ROOT, randomize_

for _name in ('onnx', 'onnxruntime', 'openvino', 'nncf', 'cv2'):
    pytest.importorskip(_name)

import onnx  # noqa: E402

from cdetr_mmdet.deploy.quantize import (  # noqa: E402
    calibration_images, quantize_samples, untie_shared_weights)
from cdetr_runtime import Detector  # noqa: E402

TINY_CFG = ROOT / 'tests' / 'data' / 'tiny_cdetr_shapes.py'
CALIB_DIR = ROOT / 'tests_runtime' / 'data'  # four small images


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """tools/export_onnx.py --int8 on the tiny config: (fp32, int8, log)."""
    import subprocess
    import sys
    tmp = tmp_path_factory.mktemp('int8')
    cfg = Config.fromfile(str(TINY_CFG))
    detector = randomize_(MODELS.build(cfg.model), seed=0).eval()
    ckpt = tmp / 'tiny.pth'
    torch.save(dict(state_dict=detector.state_dict()), ckpt)
    out = tmp / 'tiny.onnx'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'export_onnx.py'),
         str(TINY_CFG), str(ckpt), str(out), '--dynamic', '--shape', '96',
         '96', '--int8', '--calib', '3', '--calib-dir', str(CALIB_DIR)],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, tmp / 'tiny.int8.onnx', proc.stdout


def test_int8_file_is_qdq_with_metadata(exported):
    fp32, int8, log = exported
    assert 'INT8: calibrating on 3 images' in log
    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count('QuantizeLinear') > 10
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta['cdetr.precision'] == 'int8'
    fp32_meta = {p.key: json.loads(p.value)
                 for p in onnx.load(str(fp32)).metadata_props}
    assert {k: v for k, v in meta.items() if k != 'cdetr.precision'} == {
        k: v for k, v in fp32_meta.items() if k != 'cdetr.precision'}
    # The head and the decoder's cross-attention stay float (the measured
    # default): no quantiser feeds their matrix products; the rest is int8.
    names = {n.output[0]: n for n in model.graph.node}
    kept = 0
    for node in model.graph.node:
        if ('bbox_head' in node.name or '/cross_attn/' in node.name) and (
                node.op_type == 'MatMul'):
            kept += 1
            for name in node.input:
                src = names.get(name)
                assert src is None or src.op_type != 'DequantizeLinear', (
                    node.name)
    assert kept >= 4 + 2 * 8, kept  # 4 head, >= 8 per cross-attention layer
    quantized = [n.name for n in model.graph.node if n.op_type == 'MatMul'
                 and any(names.get(i) is not None and names[i].op_type ==
                         'DequantizeLinear' for i in n.input)]
    assert any('/encoder/' in name for name in quantized), quantized
    assert any('/decoder/' in name and '/self_attn/' in name
               for name in quantized), quantized


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_int8_runs_and_stays_near_fp32(exported, backend):
    fp32, int8, _ = exported
    images = sorted(str(p) for p in CALIB_DIR.glob('*.png'))
    ref = Detector(fp32, backend=backend, num_threads=1)(images)
    out = Detector(int8, backend=backend, num_threads=1)(images)
    assert Detector(int8, backend=backend).info.precision == 'int8'
    for r, o in zip(ref, out):
        assert len(o.scores) == len(r.scores)
        # Random weights: a loose sanity bound, not an accuracy claim.
        assert np.abs(np.sort(o.scores) - np.sort(r.scores)).max() < 0.2


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(
            f'no images (.png, .jpg')):
        calibration_images(None, 4, str(tmp_path))
    assert len(calibration_images(None, 2, str(CALIB_DIR))) == 2


def test_three_decoder_layers_quantise_with_smooth_quant(tmp_path):
    """Layers 2 and 3 share ``query_scale``: torch's export routes its second
    use through an ``Identity``, on which NNCF's SmoothQuant stopped with
    ``'NoneType' object has no attribute 'shape'`` (every R50 config: 6
    layers). Each use now gets its own copy, and the INT8 file runs."""
    from cdetr_mmdet.deploy.exporter import export_onnx
    cfg = Config.fromfile(str(TINY_CFG))
    cfg.model.decoder.num_layers = 3
    detector = randomize_(MODELS.build(cfg.model), seed=0).eval()
    fp32, int8 = tmp_path / 'three.onnx', tmp_path / 'three.int8.onnx'
    export_onnx(detector, cfg, str(fp32), (64, 64), dynamic=True,
                log=lambda *a: None)
    model = onnx.load(str(fp32))
    shared = [n for n in model.graph.node if n.op_type == 'Identity']
    assert shared  # what the exporter writes for the shared MLP
    assert untie_shared_weights(model) == len(shared)
    assert not [n for n in model.graph.node if n.op_type == 'Identity']
    rng = np.random.default_rng(0)
    samples = [dict(inputs=rng.standard_normal((1, 3, 64, 64), np.float32),
                    mask=np.zeros((1, 64, 64), bool)) for _ in range(2)]
    logs = []
    result = quantize_samples(str(fp32), str(int8), samples, log=logs.append)
    assert result['quantized_nodes'] > 10
    assert any(f'{len(shared)} shared weight uses' in line for line in logs)
    images = sorted(str(p) for p in CALIB_DIR.glob('*.png'))[:1]
    ref = Detector(fp32, backend='onnxruntime', num_threads=1)(images)[0]
    out = Detector(int8, backend='onnxruntime', num_threads=1)(images)[0]
    assert len(out.scores) == len(ref.scores)
