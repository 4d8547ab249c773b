"""The demo pipeline end to end at toy size (tools/demo.py --quick), tools/infer.py, and the
num_classes check of tools/train.py with a demo config."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from pycocotools.coco import COCO

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = sorted((ROOT / 'configs' / 'demo').glob('*.py'))
# One thread: on a busy 2-core machine, two OpenMP threads per process are much slower.
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def run(args, timeout=300):
    """Run a repo script with this interpreter; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    """``tools/demo.py --quick`` once for this module; returns (work_dir, data_root, stdout)."""
    tmp = tmp_path_factory.mktemp('demo')
    work_dir, data_root = tmp / 'work', tmp / 'data'
    proc = run(['tools/demo.py', '--quick', '--work-dir', str(work_dir),
                '--data-root', str(data_root)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work_dir, data_root, proc.stdout + proc.stderr


def test_quick_demo_data_and_results_are_valid_coco(quick_demo):
    work_dir, data_root, _ = quick_demo
    for split in ('train', 'val'):
        coco = COCO(str(data_root / 'annotations' / f'instances_{split}.json'))
        assert len(coco.getImgIds()) > 0
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [
            'ellipse', 'rectangle', 'triangle', 'cross']
    gt = COCO(str(data_root / 'annotations' / 'instances_val.json'))
    dets = gt.loadRes(str(work_dir / 'results.bbox.json'))  # the final evaluation's detections
    assert len(dets.getAnnIds()) > 0


def test_quick_demo_writes_metrics(quick_demo):
    work_dir, _, log = quick_demo
    summary = json.loads((work_dir / 'metrics.json').read_text())
    metrics = summary['metrics']
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert -1.0 <= metrics[key] <= 1.0
    for name in ('ellipse', 'rectangle', 'triangle', 'cross'):  # classwise=True
        assert f'coco/{name}_precision' in metrics
    assert Path(summary['checkpoint']).is_file()
    # mmdet's COCO summary and per-class table were printed.
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95' in log
    assert '| category' in log and '| triangle' in log


def test_quick_demo_draws_pngs(quick_demo):
    work_dir, _, log = quick_demo
    pngs = sorted((work_dir / 'vis').glob('*.png'))
    assert pngs
    for png in pngs:
        assert str(png) in log  # the demo prints where they are
        img = cv2.imread(str(png))
        # Ground truth beside the prediction, each 128 px image drawn 4x.
        assert img is not None and img.shape[1] >= 2 * 4 * 128 and img.shape[0] >= 4 * 128
    # The drawing threshold was chosen on the val detections and recorded.
    chosen = json.loads((work_dir / 'metrics.json').read_text())['score_thr']
    assert 0 < chosen['score_thr'] < 1 and f'drawing threshold {chosen["score_thr"]:.2f}' in log


def test_quick_demo_draws_attention(quick_demo):
    work_dir, _, log = quick_demo
    pngs = sorted((work_dir / 'attention').glob('*.png'))
    assert len(pngs) == 4  # the top-2 detections of two val images
    for png in pngs:
        assert str(png) in log
        img = cv2.imread(str(png))
        assert img is not None and img.shape[0] > 200


def test_infer_draws_one_image(quick_demo, tmp_path):
    work_dir, data_root, _ = quick_demo
    image = data_root / 'val' / '000000.png'
    checkpoint = json.loads((work_dir / 'metrics.json').read_text())['checkpoint']
    proc = run(['tools/infer.py', str(image), str(work_dir / 'config.py'), checkpoint,
                '--out-dir', str(tmp_path), '--score-thr', '0.0'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    png = Path(proc.stdout.strip().splitlines()[-1])
    assert png == tmp_path / 'vis' / '000000.png'
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (128, 128, 3)


@pytest.mark.parametrize('config', DEMO_CONFIGS, ids=lambda p: p.name)
def test_wrong_num_classes_stops_training_at_start(quick_demo, config, tmp_path):
    _, data_root, _ = quick_demo
    root = f'{data_root}/'
    proc = run(['tools/train.py', str(config), '--work-dir', str(tmp_path), '--cfg-options',
                'model.bbox_head.num_classes=5',
                f'train_dataloader.dataset.data_root={root}',
                f'val_dataloader.dataset.data_root={root}',
                f'val_evaluator.ann_file={root}annotations/instances_val.json'], timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # mmdet's NumClassCheckHook: "The `num_classes` (5) in CdetrHead ... `classes` 4) in ..."
    assert re.search(r'num_classes`? \(5\).*classes`? 4\)', out), out[-3000:]
    assert not list(tmp_path.glob('*.pth'))  # stopped before any checkpoint
