"""Inference inputs named in every error (docs/reliability.md, "Data and inputs")."""
import importlib.util
import re

import cv2
import numpy as np
import pytest
from mmdet.apis import inference_detector as mmdet_inference_detector
from mmdet.apis import init_detector
from mmengine.config import Config
from PIL import Image

from cdetr_mmdet.apis import CdetrDetInferencer, InputError, check_image_input, inference_detector
from conftest import ROOT

TINY_CFG = ROOT / 'tests' / 'data' / 'tiny_cdetr_shapes.py'  # test pipeline: Resize to 96x96


@pytest.fixture(scope='module')
def model():
    cfg = Config.fromfile(str(TINY_CFG))
    return init_detector(cfg, None, device='cpu')  # random weights: outputs only compared


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


def same_result(a, b) -> None:
    np.testing.assert_array_equal(a.pred_instances.labels.numpy(), b.pred_instances.labels.numpy())
    np.testing.assert_allclose(a.pred_instances.scores.numpy(), b.pred_instances.scores.numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.pred_instances.bboxes.numpy(), b.pred_instances.bboxes.numpy(),
                               rtol=0, atol=1e-4)


def test_thin_image_file_is_named_with_the_resized_size(model, tmp_path):
    path = tmp_path / 'thin.png'
    Image.new('RGB', (4000, 1)).save(path)
    # mmdet's own: OpenCV's resize assertion, which names no file.
    with pytest.raises(cv2.error, match=re.escape('(-215:Assertion failed) inv_scale_x > 0')) as info:
        mmdet_inference_detector(model, str(path))
    assert 'thin.png' not in str(info.value)
    with pytest.raises(InputError, match=re.escape(
            f'input ({path}) is 4000x1 (w x h): the test pipeline resizes it (scale (96, 96), '
            'keep_ratio=True) to 96x0; expected an image whose sides stay >= 1 px')):
        inference_detector(model, str(path))


def test_zero_byte_file_is_named_by_every_entry_point(model, tmp_path):
    path = tmp_path / 'empty.png'
    path.write_bytes(b'')
    expected = re.escape(f'{path} is an empty file (0 bytes); expected an image file')
    with pytest.raises(InputError, match=expected):
        inference_detector(model, [str(path)])
    inferencer = CdetrDetInferencer(model=str(TINY_CFG), weights=None, device='cpu',
                               show_progress=False)
    with pytest.raises(InputError, match=expected):
        inferencer(str(path))
    spec = importlib.util.spec_from_file_location('infer', ROOT / 'tools' / 'infer.py')
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    with pytest.raises(SystemExit, match='error: image: ' + expected):
        infer.main([str(path), str(TINY_CFG), 'unused.pth', '--out-dir', str(tmp_path)])


def test_grayscale_arrays_are_repeated_to_three_channels(model, image):
    gray = image[:, :, 0]
    with pytest.raises(IndexError):  # mmdet's own entry point
        mmdet_inference_detector(model, gray)
    expected = inference_detector(model, np.repeat(gray[:, :, None], 3, axis=2))
    same_result(inference_detector(model, gray), expected)
    same_result(inference_detector(model, gray[:, :, None]), expected)


def test_float_arrays(model, image):
    with pytest.raises(InputError, match=re.escape(
            'input (numpy array of shape (40, 56, 3), dtype float32) has values in [0, 1]: the '
            'model expects 0-255 pixel values (as cv2.imread gives); convert with '
            '(img * 255).round().astype(np.uint8)')):
        inference_detector(model, image.astype(np.float32) / 255)
    # 0-255 floats are pixel values: the same detections as uint8 (at the pipeline's 96 px
    # scale, so that the resize, which rounds uint8 pixels, is the identity).
    image = np.random.default_rng(1).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    same_result(inference_detector(model, image.astype(np.float32)),
                inference_detector(model, image))
    bad = image.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match='holds NaN or inf'):
        inference_detector(model, bad)


@pytest.mark.parametrize('make, expected', [
    (lambda im: im[None], r'input \(numpy array of shape \(1, 40, 56, 3\), dtype uint8\): '
     r'expected an \(H, W, 3\) BGR image'),
    (lambda im: im.transpose(2, 0, 1), r'looks channels-first; expected \(H, W, 3\) BGR'),
    (lambda im: np.concatenate([im, im[:, :, :1]], axis=2), r'drop alpha with img\[\.\.\., :3\]'),
    (lambda im: im.astype(np.uint16), r'dtype uint16\): expected dtype uint8'),
    (lambda im: im[:0], r'is 56x0 \(w x h\): empty image'),
], ids=['batch_4d', 'chw', 'rgba', 'uint16', 'empty'])
def test_wrong_shape_or_dtype_is_named(image, make, expected):
    with pytest.raises(InputError, match=expected):
        check_image_input(make(image))


def test_non_image_input_is_named():
    with pytest.raises(InputError, match=r"input is a list; expected an image file path"):
        check_image_input([[0, 1]])
