"""mmdet's own inference API names bad inputs with our configs (issue 23).

``mmdet.apis.inference_detector`` and ``DetInferencer`` (not
``cdetr_mmdet.apis``) on the demo config (random weights): the test
pipeline's checked loader backend and ``CdetrCheckImage`` give the errors
of ``cdetr_mmdet.apis.inputs`` (docs/reliability.md rows 20-24) for file and
array inputs, and change nothing for good ones.
"""
import re
from pathlib import Path

import numpy as np
import pytest
from mmdet.apis import DetInferencer, inference_detector, init_detector
from mmengine.config import Config
from PIL import Image

from cdetr_mmdet.apis import InputError
from cdetr_mmdet.apis import inference_detector as cdetr_inference_detector
from conftest import ROOT

DEMO_CFG = ROOT / 'configs' / 'demo' / 'conditional_detr_r18_shapes.py'


@pytest.fixture(scope='module')
def model():
    return init_detector(str(DEMO_CFG), None, device='cpu')


@pytest.fixture(scope='module')
def inferencer(model):
    inferencer = DetInferencer(model=str(DEMO_CFG), weights=None,
                               device='cpu', show_progress=False)
    inferencer.model.load_state_dict(model.state_dict())  # the same weights
    return inferencer


def through_inferencer(inferencer, img):
    out = inferencer(img, return_datasamples=True, no_save_pred=True)
    return out['predictions'][0]


ENTRY_POINTS = {
    'inference_detector': lambda model, inferencer, img:
        inference_detector(model, img),
    'DetInferencer': lambda model, inferencer, img:
        through_inferencer(inferencer, img),
}


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (40, 56, 3),
                                             dtype=np.uint8)


def same_result(a, b) -> None:
    np.testing.assert_array_equal(a.pred_instances.labels.numpy(),
                                  b.pred_instances.labels.numpy())
    np.testing.assert_allclose(a.pred_instances.scores.numpy(),
                               b.pred_instances.scores.numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.pred_instances.bboxes.numpy(),
                               b.pred_instances.bboxes.numpy(),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_thin_image_file(model, inferencer, tmp_path, entry):
    path = tmp_path / 'thin.png'
    Image.new('RGB', (4000, 1)).save(path)
    with pytest.raises(InputError, match=re.escape(
            f'input ({path}) is 4000x1 (w x h): the test pipeline resizes it '
            '(scale (128, 128), keep_ratio=True) to 128x0; expected an image '
            'whose sides stay >= 1 px')):
        ENTRY_POINTS[entry](model, inferencer, str(path))


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_zero_byte_file(model, inferencer, tmp_path, entry):
    path = tmp_path / 'empty.png'
    path.write_bytes(b'')
    with pytest.raises(InputError, match=re.escape(
            f'input: {path} is an empty file (0 bytes); expected an image '
            'file (PNG, JPEG, ...)')):
        ENTRY_POINTS[entry](model, inferencer, str(path))


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_grayscale_arrays_are_repeated(model, inferencer, image, entry):
    run = ENTRY_POINTS[entry]
    gray = image[:, :, 0]
    expected = run(model, inferencer, np.repeat(gray[:, :, None], 3, axis=2))
    same_result(run(model, inferencer, gray), expected)
    same_result(run(model, inferencer, gray[:, :, None]), expected)


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_rgba_array_is_refused(model, inferencer, image, entry):
    rgba = np.concatenate([image, image[:, :, :1]], axis=2)
    with pytest.raises(InputError, match=re.escape(
            'input (numpy array of shape (40, 56, 4), dtype uint8): expected '
            'an (H, W, 3) BGR image')):
        ENTRY_POINTS[entry](model, inferencer, rgba)


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_float_arrays(model, inferencer, image, entry):
    run = ENTRY_POINTS[entry]
    with pytest.raises(InputError, match=re.escape(
            'input (numpy array of shape (40, 56, 3), dtype float32) has '
            'values in [0, 1]: the model expects 0-255 pixel values (as '
            'cv2.imread gives); convert with '
            '(img * 255).round().astype(np.uint8)')):
        run(model, inferencer, image.astype(np.float32) / 255)
    # 0-255 floats are pixel values: the uint8 detections (at the pipeline's
    # 128 px scale, where the resize, which rounds uint8, is the identity).
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3),
                                              dtype=np.uint8)
    same_result(run(model, inferencer, image.astype(np.float32)),
                run(model, inferencer, image))


def test_good_inputs_give_the_results_of_our_api(model, inferencer, image,
                                                 tmp_path):
    """The checks change nothing for a good file or array."""
    path = tmp_path / 'ok.png'
    Image.fromarray(image[:, :, ::-1]).save(path)  # BGR array -> RGB file
    # mmdet's inference_detector swaps the loader for arrays in model.cfg
    # itself (a shallow Config.copy()): after an array a file fails there,
    # with or without our checks. A fresh model, the file first.
    model = init_detector(str(DEMO_CFG), None, device='cpu')
    model.load_state_dict(inferencer.model.state_dict())
    for img in (str(path), image):
        ours = cdetr_inference_detector(model, img)
        same_result(inference_detector(model, img), ours)
        same_result(through_inferencer(inferencer, img), ours)


def _test_pipelines():
    for path in sorted(p for p in (ROOT / 'configs').rglob('*.py')
                       if '_base_' not in p.parts):
        yield pytest.param(path, id=path.name)
    yield pytest.param(ROOT / 'configs' / '_base_' / 'coco_detection.py',
                       id='coco_detection.py')


@pytest.mark.parametrize('path', list(_test_pipelines()))
def test_every_config_checks_its_test_inputs(path: Path):
    """Loader backend and CdetrCheckImage present, the check's scale that of
    the Resize after it (the transform cannot read the pipeline)."""
    cfg = Config.fromfile(str(path))
    pipeline = cfg.test_dataloader.dataset.pipeline
    if cfg.get('model', {}).get('type') != 'CdetrConditionalDETR' and \
            pipeline[1]['type'] != 'CdetrCheckImage':
        pytest.skip('not our detector (mmdet twin)')
    load, check, resize = pipeline[:3]
    assert load['type'] == 'LoadImageFromFile'
    assert load['backend_args'] == dict(backend='cdetr_checked_local')
    assert check['type'] == 'CdetrCheckImage'
    assert resize['type'] == 'Resize'
    assert tuple(check['scale']) == tuple(resize['scale'])
    assert check['keep_ratio'] == resize['keep_ratio']
