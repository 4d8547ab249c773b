"""The demo pipeline end to end at toy size (tools/demo.py --quick), tools/infer.py, and the
num_classes check of tools/train.py with a demo config."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cdetr_testing.setup_copy import make_setup_copy, setup_env_vars

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
    """``bash tools/run_demo.sh --quick`` once for this module, as the README runs it: its
    set-up step (here in a stamped copy of the scripts, cdetr_testing.setup_copy: nothing to
    install, and nothing can be) then ``tools/demo.py --quick``.

    Returns (work_dir, data_root, output).
    """
    tmp = tmp_path_factory.mktemp('demo')
    work_dir, data_root = tmp / 'work', tmp / 'data'
    repo = make_setup_copy(tmp / 'repo', stamped=True)
    env = setup_env_vars(repo, STUB_INSTALLED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', str(repo / 'tools' / 'run_demo.sh'), '--quick',
                           '--work-dir', str(work_dir), '--data-root', str(data_root)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith(
        f'[setup_env] {repo / ".venv"} is up to date; nothing to install\n')
    python_calls = (repo / 'python_calls.log').read_text().splitlines()
    assert python_calls == ['-', f'tools/demo.py --quick --work-dir {work_dir} '
                            f'--data-root {data_root}']
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
    """metrics.json holds the COCO AP of the detections the final evaluation wrote, and
    training moved the classification loss down.

    No AP bound: after the quick run's 8 iterations AP is 0.000 (measured), so no bound
    separates it from a broken model. Instead the AP must be the one pycocotools computes
    from results.bbox.json (a broken or detached evaluation fails), every val image must
    have its 80 detections (20 queries x 4 classes), and the focal classification loss must
    fall from the first iteration to the eighth (measured 2.37 -> 2.26, a margin far above
    the ~1e-5 by which AVX2 and AMX fp32 runs of the seeded demo differ).
    """
    work_dir, data_root, log = quick_demo
    summary = json.loads((work_dir / 'metrics.json').read_text())
    metrics = summary['metrics']
    gt = COCO(str(data_root / 'annotations' / 'instances_val.json'))
    results = json.loads((work_dir / 'results.bbox.json').read_text())
    per_image = {}
    for det in results:
        per_image[det['image_id']] = per_image.get(det['image_id'], 0) + 1
    assert per_image == {i: 80 for i in gt.getImgIds()}
    evaluation = COCOeval(gt, gt.loadRes(results), 'bbox')
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    for key, stat in (('coco/bbox_mAP', 0), ('coco/bbox_mAP_50', 1), ('coco/bbox_mAP_75', 2)):
        assert metrics[key] == round(float(evaluation.stats[stat]), 3), key
    for name in ('ellipse', 'rectangle', 'triangle', 'cross'):  # classwise=True
        assert 0 <= metrics[f'coco/{name}_precision'] <= 1
    assert Path(summary['checkpoint']).is_file()
    # mmdet's COCO summary and per-class table were printed.
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95' in log
    assert '| category' in log and '| triangle' in log
    scalars = next(work_dir.glob('*/vis_data/scalars.json')).read_text().splitlines()
    loss_cls = [json.loads(line)['loss_cls'] for line in scalars if '"loss_cls"' in line]
    assert len(loss_cls) == 8  # 16 images, batch 4, 2 epochs
    assert loss_cls[-1] < loss_cls[0] - 0.05, loss_cls


def test_quick_demo_draws_pngs(quick_demo):
    work_dir, _, log = quick_demo
    pngs = sorted((work_dir / 'vis').glob('*.png'))
    assert len(pngs) == 6  # --num-vis 6 of the 8 val images
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


def test_demo_pictures_draw_each_box_in_its_own_panel(tmp_path):
    """The ground-truth box is drawn in its class colour in the left panel
    only, the predicted one in its class colour in the right panel only: the
    boxes are really drawn, each where it belongs (the PNG checks above test
    count and size)."""
    from matplotlib.colors import to_rgb
    from tools.demo_pictures import COLORS, draw_gt_and_prediction
    image = np.full((32, 48, 3), 90, np.uint8)
    box = np.array([[8., 6., 30., 24.]])
    none = np.zeros((0, 4))
    png = cv2.imread(str(draw_gt_and_prediction(
        image, box, [0], box, [1], [0.9], ['ellipse', 'cross'],
        tmp_path / 'boxes.png')))
    half = png.shape[1] // 2
    for label, side in ((0, 'left'), (1, 'right')):
        bgr = np.array(to_rgb(COLORS[label]))[::-1] * 255
        hits = (np.abs(png - bgr).max(-1) < 30)  # (H, W) pixels of the colour
        inside, outside = ((hits[:, :half], hits[:, half:]) if side == 'left'
                           else (hits[:, half:], hits[:, :half]))
        # A 2-pt outline of a 22 x 18 px box drawn 4x: hundreds of pixels.
        assert inside.sum() > 100 and outside.sum() == 0, (label, side)
    empty = cv2.imread(str(draw_gt_and_prediction(
        image, none, [], none, [], [], ['ellipse', 'cross'],
        tmp_path / 'empty.png')))
    for label in (0, 1):
        bgr = np.array(to_rgb(COLORS[label]))[::-1] * 255
        assert (np.abs(empty - bgr).max(-1) < 30).sum() == 0
