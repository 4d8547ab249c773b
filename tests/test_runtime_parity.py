"""cdetr_runtime (torch-free) against mmdet's test path, in the full env.

Pixels: the runtime's resize and normalised, padded batch equal mmdet's
pipeline + ``DetDataPreprocessor`` exactly, for several resize rules.
Detections: the runtime equals mmdet's ``test_step`` and the config-based
runners on the tiny config's export. Metadata: what the exporter writes.
"""
import copy
import json

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmdet.registry import MODELS

from conftest import ROOT, randomize_

for _name in ('onnx', 'onnxruntime', 'openvino', 'cv2'):
    pytest.importorskip(_name)

from cdetr_mmdet.deploy import build_runner  # noqa: E402
from cdetr_mmdet.deploy.compare import compare_detections  # noqa: E402
from cdetr_mmdet.deploy.exporter import export_onnx  # noqa: E402
from cdetr_mmdet.deploy.model_info import metadata_props  # noqa: E402
from cdetr_runtime import Detector, Preprocessor  # noqa: E402
from cdetr_runtime.model_file import (FORMAT_VERSION,  # noqa: E402
                                      parse_model_info)

TINY_CFG = ROOT / 'tests' / 'data' / 'tiny_cdetr_shapes.py'
TOL = 1e-4
SIZES = [(120, 80), (60, 150), (96, 96), (33, 47), (700, 1100)]


def random_images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in sizes]


def with_resize(cfg, **resize):
    """A copy of ``cfg`` whose test Resize is ``resize``."""
    cfg = copy.deepcopy(cfg)
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step.clear()
            step.update(type='Resize', **resize)
    return cfg


def mmdet_inputs(cfg, detector, images):
    """mmdet's pipeline and data preprocessor: resized images and batch."""
    pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    pipeline[0] = dict(type='mmdet.LoadImageFromNDArray')
    steps = [s for s in pipeline if s['type'] != 'LoadAnnotations']
    resized = [Compose(steps[:2])(dict(img=img)) for img in images]
    data = pseudo_collate([Compose(steps)(dict(img=img, img_id=i))
                           for i, img in enumerate(images)])
    batch = detector.data_preprocessor(data, False)
    return resized, batch


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    cfg = Config.fromfile(str(TINY_CFG))
    detector = randomize_(MODELS.build(cfg.model), seed=0).eval()
    path = tmp_path_factory.mktemp('onnx') / 'tiny.onnx'
    export_onnx(detector, cfg, str(path), (96, 96), dynamic=True,
                log=lambda *_: None)
    return cfg, detector, path


@pytest.mark.parametrize('resize', [
    dict(scale=(96, 96), keep_ratio=True),
    dict(scale=(1333, 800), keep_ratio=True),
    dict(scale=(100, 70), keep_ratio=False),
    dict(scale=(96, 96), keep_ratio=True, interpolation='bicubic'),
    dict(scale=(64, 64), keep_ratio=True, interpolation='area')])
@pytest.mark.parametrize('divisor', [1, 32])
def test_preprocessing_equals_mmdet_pixels(tiny, resize, divisor):
    cfg = with_resize(tiny[0], **resize)
    cfg.model.data_preprocessor.pad_size_divisor = divisor
    detector = MODELS.build(cfg.model).eval()
    info = parse_model_info(metadata_props(cfg, 20))
    pre = Preprocessor(info)
    images = random_images(SIZES, seed=divisor)
    resized, _ = mmdet_inputs(cfg, detector, images)
    for image, ref in zip(images, resized):
        ours, factor = pre.resize(image)
        np.testing.assert_array_equal(ours, ref['img'])  # uint8, exact
        assert factor == ref['scale_factor']
    for i, image in enumerate(images):  # one image: no padding but divisor
        inputs, mask, _ = pre([image])
        _, ref = mmdet_inputs(cfg, detector, [image])
        np.testing.assert_array_equal(inputs, ref['inputs'].numpy())
        img_h, img_w = ref['data_samples'][0].img_shape
        assert (~mask[0]).sum() == img_h * img_w
    # A padded batch of two sizes (and the divisor), as the data
    # preprocessor pads it.
    inputs, mask, _ = pre(images[:2])
    _, ref = mmdet_inputs(cfg, detector, images[:2])
    np.testing.assert_array_equal(inputs, ref['inputs'].numpy())


def test_exporter_writes_runtime_metadata(tiny):
    import onnx
    cfg, _, path = tiny
    props = {p.key: json.loads(p.value)
             for p in onnx.load(str(path)).metadata_props}
    assert props['cdetr.format_version'] == FORMAT_VERSION
    assert props['cdetr.resize_scale'] == [96, 96]
    assert props['cdetr.keep_ratio'] is True
    assert props['cdetr.interpolation'] == 'bilinear'
    assert props['cdetr.mean'] == [123.675, 116.28, 103.53]
    assert props['cdetr.std'] == [58.395, 57.12, 57.375]
    assert props['cdetr.bgr_to_rgb'] is True
    assert props['cdetr.pad_size_divisor'] == 1
    assert props['cdetr.score_thr'] == 0.
    assert props['cdetr.precision'] == 'fp32'
    assert props['cdetr.classes'] == list(
        cfg.test_dataloader.dataset.metainfo.classes)


def test_pillow_resize_backend_is_refused(tiny):
    cfg = with_resize(tiny[0], scale=(96, 96), keep_ratio=True,
                      backend='pillow')
    with pytest.raises(ValueError, match="Resize backend 'pillow' is not "
                       'supported by the deploy preprocessing'):
        metadata_props(cfg, 20)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_runtime_detections_equal_mmdet_and_runners(tiny, backend):
    cfg, detector, path = tiny
    runtime = Detector(path, backend=backend, num_threads=1,
                       precision='f32' if backend == 'openvino' else None)
    runner = build_runner('onnxruntime' if backend == 'onnxruntime'
                          else 'openvino-fp32', str(path), cfg,
                          num_threads=1)
    for i, image in enumerate(random_images(SIZES[:4], seed=5)):
        pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        pipeline[0] = dict(type='mmdet.LoadImageFromNDArray')
        steps = Compose([s for s in pipeline
                         if s['type'] != 'LoadAnnotations'])
        with torch.no_grad():
            ref = detector.test_step(pseudo_collate(
                [steps(dict(img=image, img_id=0))]))[0].pred_instances
        ref = [x[None].numpy() for x in (ref.scores, ref.labels, ref.bboxes)]
        det = runtime(image)[0]
        ours = [det.scores[None], det.labels[None], det.boxes[None]]
        diffs = compare_detections(ref, ours, np.array([image.shape[:2]]),
                                   TOL)
        assert diffs['compared'] >= 2 * diffs['boundary_ties'], diffs
        assert diffs['label_mismatches'] == 0, diffs
        assert diffs['score'] <= TOL and diffs['box'] <= TOL, diffs
        # The config-based runner and the runtime: the same engine and
        # inputs, so the same numbers.
        old = runner.predict_arrays([image])[0]
        np.testing.assert_array_equal(det.scores, old['scores'])
        np.testing.assert_array_equal(det.labels, old['labels'])
        np.testing.assert_array_equal(det.boxes, old['bboxes'])
        assert det.class_names == [runtime.classes[k] for k in det.labels]
