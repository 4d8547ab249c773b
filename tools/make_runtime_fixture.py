"""Regenerate tests_runtime/data/: a micro exported model and its references.

    python tools/make_runtime_fixture.py [--out tests_runtime/data]

The torch-free runtime tests (tests_runtime/) cannot run PyTorch or mmcv, so
this script (full environment) writes what they compare against:

* ``micro.onnx``: a dynamic export (tools/export_onnx.py's exporter, so
  verified against PyTorch) of a micro Conditional DETR with random weights:
  the tiny test config cut to a 2-stage R18 of width 4 and d=16 (~170 KB);
  its test pipeline resizes to (96, 96) keeping the ratio, as the tiny one.
* ``*.png`` / ``*.jpg``: small synthetic images of several sizes.
* ``expected.json``: per image, the SHA-256 of the resized uint8 image of
  mmdet's test pipeline (mmcv), its ``img_shape``/``scale_factor``, and the
  detections of mmdet's ``test_step`` (PyTorch) in original-image pixels.
"""
import argparse
import copy
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import cdetr_mmdet  # noqa: F401

# (name, h, w): landscape and portrait, up- and down-scaled, one at the scale.
IMAGES = (('landscape.png', 60, 150), ('portrait.png', 120, 80),
          ('square.jpg', 96, 96), ('small.png', 33, 47))


def micro_config():
    """The tiny test config, cut down so the exported file is ~170 KB."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'tests' / 'data' /
                              'tiny_cdetr_shapes.py'))
    dims = 16
    model = cfg.model
    model.backbone.update(base_channels=4, num_stages=2, out_indices=(1, ),
                          strides=(1, 2), dilations=(1, 1))
    model.neck.update(in_channels=[8], out_channels=dims)
    model.positional_encoding.num_feats = dims // 2
    for part in ('encoder', 'decoder'):
        model[part].num_layers = 1
        model[part].layer_cfg.update(embed_dims=dims, num_heads=2,
                                     feedforward_channels=32)
    model.bbox_head.embed_dims = dims
    model.test_cfg = dict(max_per_img=10, score_thr=0.05)
    return cfg


def synthetic_image(h, w, seed):
    """A smooth gradient with two filled shapes: compresses well, varied."""
    import numpy as np
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                      (xx + yy) * 127 // max(h + w - 2, 1)], -1)
    for _ in range(2):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


def mmdet_results(cfg, detector, path):
    """Resized image and ``test_step`` detections of mmdet's test path."""
    import torch
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    pipeline = [s for s in copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
                if s['type'] != 'LoadAnnotations']
    resize = Compose(pipeline[:2])(dict(img_path=str(path)))  # load + Resize
    data = Compose(pipeline)(dict(img_path=str(path), img_id=0))
    with torch.no_grad():
        pred = detector.test_step(pseudo_collate([data]))[0].pred_instances
    return resize, pred


def main(argv=None):
    """Write the fixture files; print their sizes."""
    import cv2
    import numpy as np
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from cdetr_mmdet.deploy.exporter import export_onnx
    from cdetr_testing import randomize_
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(ROOT / 'tests_runtime' / 'data'))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    register_all_modules(init_default_scope=True)
    cfg = micro_config()
    detector = randomize_(MODELS.build(cfg.model), seed=0).eval()
    export_onnx(detector, cfg, str(out / 'micro.onnx'), (96, 96),
                dynamic=True)
    expected = dict(model='micro.onnx', classes=list(
        cfg.test_dataloader.dataset.metainfo.classes),
        score_thr=cfg.model.test_cfg.score_thr, images={})
    for i, (name, h, w) in enumerate(IMAGES):
        path = out / name
        cv2.imwrite(str(path), synthetic_image(h, w, seed=i))
        resized, pred = mmdet_results(cfg, detector, path)
        expected['images'][name] = dict(
            ori_shape=list(resized['ori_shape']),
            img_shape=list(resized['img_shape']),
            scale_factor=list(resized['scale_factor']),
            resized_sha256=hashlib.sha256(
                np.ascontiguousarray(resized['img']).tobytes()).hexdigest(),
            scores=pred.scores.tolist(), labels=pred.labels.tolist(),
            boxes=pred.bboxes.tolist())
    (out / 'expected.json').write_text(json.dumps(expected, indent=1) + '\n')
    for f in sorted(out.iterdir()):
        print(f'{f}: {f.stat().st_size} bytes')


if __name__ == '__main__':
    main()
