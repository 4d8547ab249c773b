"""The stock runner, tools and inference API on a tiny model and generated data."""
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from cdetr_mmdet.data import ensure_dataset
from conftest import ROOT

TINY_CFG = Path(__file__).parent / 'data' / 'tiny_cdetr_shapes.py'


def set_data_root(cfg: Config, data_root: Path) -> Config:
    """Point the tiny config's loaders and evaluator at generated data."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = str(
            data_root / 'annotations' / 'instances_val.json')
    return cfg


class Recorder(Hook):
    """Records the loss of every iteration and the state at train start."""

    def __init__(self):
        self.losses, self.start_iter, self.start_optim = [], None, None

    def before_train(self, runner):
        self.start_iter = runner.iter
        # Copied: the live state keeps changing while training goes on.
        self.start_optim = copy.deepcopy(runner.optim_wrapper.state_dict())

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def run(cfg: Config, recorder: Recorder) -> Runner:
    runner = Runner.from_cfg(cfg)
    runner.register_hook(recorder)
    runner.train()
    return runner


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes')
    ensure_dataset(root, num_train=8, num_val=4, img_size=64,
                   empty_fraction=0.0, seed=0)
    return root


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """Train 40 iterations once; other tests use its checkpoints."""
    work_dir = tmp_path_factory.mktemp('work')
    cfg = set_data_root(Config.fromfile(str(TINY_CFG)), data_root)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    recorder = Recorder()
    run(cfg, recorder)
    cfg.dump(str(work_dir / 'config.py'))
    return work_dir, recorder


def test_training_lowers_the_loss_and_saves_checkpoints(trained):
    work_dir, recorder = trained
    assert len(recorder.losses) == 40
    first = sum(recorder.losses[:5]) / 5
    last = sum(recorder.losses[-5:]) / 5
    assert last < 0.8 * first, recorder.losses
    assert (work_dir / 'iter_20.pth').is_file()
    assert (work_dir / 'iter_40.pth').is_file()


def test_resume_restores_iteration_and_optimizer(trained, data_root,
                                                 tmp_path):
    work_dir, _ = trained
    ckpt = work_dir / 'iter_20.pth'
    cfg = set_data_root(Config.fromfile(str(TINY_CFG)), data_root)
    cfg.work_dir = str(tmp_path)
    cfg.resume, cfg.load_from = True, str(ckpt)
    cfg.train_cfg.max_iters = 22
    recorder = Recorder()
    run(cfg, recorder)
    assert recorder.start_iter == 20
    saved = torch.load(ckpt, map_location='cpu')['optimizer']
    resumed = recorder.start_optim
    assert saved['param_groups'] == resumed['param_groups']
    assert saved['state'].keys() == resumed['state'].keys()
    for key, state in saved['state'].items():
        for name, value in state.items():
            torch.testing.assert_close(resumed['state'][key][name], value)
    assert len(recorder.losses) == 2


def test_tools_test_evaluates_with_coco_metric(trained, data_root, tmp_path):
    """tools/test.py prints the COCO AP of the detections it wrote: pycocotools on its
    results file gives the same mAP / AP50 / AP75 (a broken evaluation that reads 0 or
    another file fails here even when the model is too young to score), every val image
    has its max_per_img=20 detections, the written classes and scores are those of our
    inference API on each image with labels mapped to COCO ids by name, and --optimize (batch norms folded, channels-last)
    gives the same mAP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    work_dir, _ = trained
    gt = COCO(str(data_root / 'annotations' / 'instances_val.json'))
    # The oracle: our own inference on each val image, labels mapped to COCO ids by name.
    from cdetr_mmdet.apis import inference_detector, init_detector
    model = init_detector(str(work_dir / 'config.py'), str(work_dir / 'iter_40.pth'),
                          device='cpu')
    cat_id = {gt.loadCats(i)[0]['name']: i for i in gt.getCatIds()}
    classes = model.dataset_meta['classes']
    expected = {}
    for image_id in gt.getImgIds():
        path = data_root / 'val' / gt.loadImgs(image_id)[0]['file_name']
        pred = inference_detector(model, str(path)).pred_instances
        xywh = pred.bboxes.clone()
        xywh[:, 2:] -= xywh[:, :2]  # the COCO results file's box format
        expected[image_id] = sorted(
            (cat_id[classes[label]], float(score), box)
            for label, score, box in zip(pred.labels.tolist(), pred.scores.tolist(),
                                         xywh.tolist()))
    maps = {}
    for flags in ([], ['--optimize']):
        prefix = tmp_path / f'results{len(flags)}'
        out = subprocess.run(
            [sys.executable, 'tools/test.py', str(work_dir / 'config.py'),
             str(work_dir / 'iter_40.pth'), '--work-dir', str(tmp_path), *flags,
             '--cfg-options', f'test_evaluator.outfile_prefix={prefix}'],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        log = out.stdout + out.stderr
        assert out.returncode == 0, out.stderr[-3000:]
        assert ('batch norms folded into the convolutions, backbone channels-last' in log) == bool(flags)
        printed = {key: float(re.search(rf'coco/bbox_{key}: ([0-9.]+)', log).group(1))
                   for key in ('mAP', 'mAP_50', 'mAP_75')}
        results = json.loads(Path(f'{prefix}.bbox.json').read_text())
        assert sorted(d['image_id'] for d in results) == sorted(gt.getImgIds() * 20)
        for image_id, dets in expected.items():  # batched with padding vs alone: 1e-4
            got = sorted((d['category_id'], d['score'], d['bbox']) for d in results
                         if d['image_id'] == image_id)
            assert [c for c, *_ in got] == [c for c, *_ in dets]
            np.testing.assert_allclose([s for _, s, _ in got], [s for _, s, _ in dets],
                                       rtol=0, atol=1e-4)
            # Each written box (xywh, original pixels) is the oracle's box of the
            # same class and score: pairs found regardless of near-tie order.
            unused = list(got)
            for cat, score, box in dets:
                match = [g for g in unused if g[0] == cat and abs(g[1] - score) <= 1e-4
                         and np.abs(np.subtract(g[2], box)).max() <= 0.05]
                assert match, (image_id, cat, score, box)
                unused.remove(match[0])
        evaluation = COCOeval(gt, gt.loadRes(results), 'bbox')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert printed == {key: round(float(evaluation.stats[i]), 3)
                           for i, key in enumerate(('mAP', 'mAP_50', 'mAP_75'))}
        maps[bool(flags)] = printed
    assert maps[True] == maps[False]


INFERENCE_SCRIPT = r'''
import json, sys
import numpy as np
import torch
from mmdet.apis import DetInferencer, inference_detector, init_detector
config, ckpt, image = sys.argv[1:4]
model = init_detector(config, ckpt, device='cpu')
result = inference_detector(model, image)
pred = result.pred_instances
scale = torch.tensor(result.metainfo['scale_factor']).repeat(2)
# The same image through the model without rescaling: boxes in the resized
# (96 px) input; rescaled boxes must be those divided by the scale factor.
from mmdet.apis.inference import get_test_pipeline_cfg
from mmcv.transforms import Compose
from mmengine.dataset import pseudo_collate
pipeline = Compose(get_test_pipeline_cfg(model.cfg))
data = pseudo_collate([pipeline(dict(img_path=image, img_id=0))])
with torch.no_grad():
    raw = model.test_step(data)[0]  # rescale=True inside test_step
    batch = model.data_preprocessor(data, False)
    unscaled = model.predict(batch['inputs'], batch['data_samples'],
                             rescale=False)[0].pred_instances
torch.testing.assert_close(pred.bboxes, unscaled.bboxes / scale)
torch.testing.assert_close(raw.pred_instances.bboxes, pred.bboxes)
inferencer = DetInferencer(model=config, weights=ckpt, device='cpu',
                           show_progress=False)
out = inferencer(image, return_datasamples=True)
other = out['predictions'][0].pred_instances
torch.testing.assert_close(other.bboxes, pred.bboxes)
print(json.dumps(dict(ori_shape=list(result.metainfo['ori_shape']),
                      scale=scale.tolist(), n=len(pred))))
'''


def test_inference_api_in_fresh_process(trained, data_root):
    work_dir, _ = trained
    image = sorted((data_root / 'val').glob('*.png'))[0]
    out = subprocess.run(
        [sys.executable, '-c', 'import cdetr_mmdet\n' + INFERENCE_SCRIPT,
         str(work_dir / 'config.py'), str(work_dir / 'iter_40.pth'),
         str(image)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info['ori_shape'] == [64, 64]
    assert info['scale'] == [1.5, 1.5, 1.5, 1.5]  # 64 px -> 96 px
    assert info['n'] == 20


def test_dist_train_with_two_cpu_processes(data_root, tmp_path):
    cfg = set_data_root(Config.fromfile(str(TINY_CFG)), data_root)
    cfg.train_cfg.update(max_iters=4, val_interval=100)
    cfg.default_hooks.checkpoint.interval = 4
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.dump(str(tmp_path / 'config.py'))
    env = dict(os.environ, PORT='29517', OMP_NUM_THREADS='1')
    out = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(tmp_path / 'config.py'), '2',
         '--work-dir', str(tmp_path / 'work')], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / 'work' / 'iter_4.pth').is_file()
    # The runner's own record of its process group (mmengine's runtime environment block,
    # from get_dist_info() after setup_cpu_distributed): 2 processes, one gloo DDP run.
    assert re.search(r'Distributed launcher: pytorch\s+Distributed training: True\s+'
                     r'GPU number: 2\n', out.stdout + out.stderr), out.stdout[-3000:]


def test_train_tool_amp_on_cpu_uses_bf16_wrapper(data_root, tmp_path):
    cfg = set_data_root(Config.fromfile(str(TINY_CFG)), data_root)
    cfg.train_cfg.update(max_iters=3, val_interval=100)
    cfg.default_hooks.checkpoint.interval = 3
    cfg.dump(str(tmp_path / 'config.py'))
    out = subprocess.run(
        [sys.executable, 'tools/train.py', str(tmp_path / 'config.py'),
         '--amp', '--work-dir', str(tmp_path / 'work')], cwd=ROOT,
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'CdetrCPUAmpOptimWrapper' in log
    assert 'nan' not in log.split('Iter(train) [3/3]')[-1].split('\n')[0]
    assert (tmp_path / 'work' / 'iter_3.pth').is_file()
