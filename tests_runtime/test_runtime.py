"""cdetr_runtime against mmcv's resize and PyTorch's detections, and its errors.

The references in data/expected.json were computed in the full environment
(tools/make_runtime_fixture.py); here nothing of the training stack runs.
"""
import hashlib
import importlib.util
import json
import re
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest

from cdetr_runtime import (FORMAT_VERSION, Detector, ImageError,
                           ModelFormatError, load_image, read_model_info)
from cdetr_runtime.model_file import iter_fields
from cdetr_runtime.preprocess import Preprocessor

DATA = Path(__file__).resolve().parent / 'data'
ROOT = DATA.parents[1]
TOL = 1e-4  # as tests/test_deploy.py: scores, and boxes / image size
TRAINING_STACK = ('torch', 'mmcv', 'mmengine', 'mmdet', 'cdetr_mmdet')


# OpenVINO's default precision hint is bf16 on CPUs that compute it natively
# (AVX512_BF16, AMX): scores and boxes then move by up to ~1e-2 (measured
# 1.6e-3 on the micro model), as tests/test_deploy.py allows.
BF16_TOL = 5e-2


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (``/proc/cpuinfo`` flags)."""
    try:
        flags = set(Path('/proc/cpuinfo').read_text().split())
    except OSError:
        return False
    return bool(flags & {'avx512_bf16', 'amx_bf16'})


def backends():
    """(backend, precision hint): ONNX Runtime, OpenVINO f32, OpenVINO's default."""
    names = [('onnxruntime', None)]
    try:
        import openvino  # noqa: F401
        names += [('openvino', 'f32'), ('openvino', None)]
    except ImportError:
        pass
    return names


def assert_matches(ref, det, size, tol=TOL):
    """Tie-aware: each reference detection has one of the same label whose
    score is within ``tol`` and whose box is within ``tol`` of the image size.

    The random-weight model's scores lie within ~1e-4 of each other, so ranks
    may swap between engines; the sorted scores must still agree.
    """
    h, w = size
    scale = np.array([w, h, w, h])
    ref_scores = np.asarray(ref['scores'])
    assert len(det.scores) == len(ref_scores)
    np.testing.assert_allclose(det.scores, ref_scores, rtol=0, atol=tol)
    for score, label, box in zip(ref_scores, ref['labels'], ref['boxes']):
        cand = np.flatnonzero((np.abs(det.scores - score) <= tol)
                              & (det.labels == label))
        assert len(cand), (score, label)
        diff = (np.abs(det.boxes[cand] - np.asarray(box)) / scale).max(1)
        assert diff.min() <= tol, (score, label, box, det.boxes[cand])


def test_no_training_stack_needed(model_path):
    """Importing and running the runtime imports none of the training stack
    (checked in a fresh interpreter: this one may have imported anything)."""
    code = ('import sys; from cdetr_runtime import Detector; '
            f'Detector({str(model_path)!r})({str(DATA / "portrait.png")!r}); '
            f'print([m for m in {TRAINING_STACK!r} if m in sys.modules])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == '[]'


@pytest.mark.skipif(importlib.util.find_spec('torch') is not None,
                    reason='the training stack is installed here')
def test_cdetr_mmdet_without_the_stack_names_the_train_extra():
    """The base install is torch-free; the plugin says what it is missing
    and how to get it instead of failing on its first ``import torch``."""
    code = 'import cdetr_mmdet'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, cwd=DATA)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        'ImportError: cdetr_mmdet needs torch, mmengine, mmcv, mmdet (not '
        'installed): run `bash tools/setup_env.sh` (torch, mmcv with its '
        "ops, then pip install -e '.[train,tests,deploy,int8]'), or install "
        "torch and mmcv 2.1.0 first and then pip install -e '.[train]'. To "
        'run exported models without them use cdetr_runtime (pip install '
        "'.[runtime]').")


def test_metadata(model_path, expected):
    info = read_model_info(model_path)
    assert info.format_version == FORMAT_VERSION
    assert info.classes == expected['classes']
    assert info.score_thr == pytest.approx(expected['score_thr'])
    assert (info.resize_scale, info.keep_ratio, info.interpolation) == (
        (96, 96), True, 'bilinear')
    assert info.bgr_to_rgb and info.pad_size_divisor == 1
    assert info.mean == (123.675, 116.28, 103.53)
    assert info.precision == 'fp32'


def test_resize_gives_mmcv_pixels(model_path, expected):
    pre = Preprocessor(read_model_info(model_path))
    for name, ref in expected['images'].items():
        resized, factor = pre.resize(load_image(DATA / name))
        assert list(resized.shape[:2]) == ref['img_shape'], name
        assert list(factor) == ref['scale_factor'], name
        digest = hashlib.sha256(resized.tobytes()).hexdigest()
        assert digest == ref['resized_sha256'], name


@pytest.mark.parametrize('backend,precision', backends())
def test_detections_match_pytorch(model_path, expected, backend, precision):
    """fp32 engines to 1e-4; OpenVINO's default to bf16's rounding where it
    picks bf16, which it must do exactly on bf16 CPUs."""
    detector = Detector(model_path, backend=backend, num_threads=1,
                        precision=precision)
    chosen = detector.session.precision
    if backend == 'openvino' and precision is None:
        assert chosen == ('bf16' if cpu_has_bf16() else 'f32'), chosen
    else:
        assert chosen == 'f32', chosen
    tol = BF16_TOL if chosen == 'bf16' else TOL
    names = list(expected['images'])
    results = detector([DATA / n for n in names])
    for name, det in zip(names, results):
        ref = expected['images'][name]
        assert det.image_size == tuple(ref['ori_shape'])
        assert_matches(ref, det, ref['ori_shape'], tol)
        assert det.class_names == [expected['classes'][i]
                                   for i in det.labels]
        assert (det.scores > expected['score_thr']).all()


def test_arrays_equal_files_and_score_thr(model_path):
    import cv2
    detector = Detector(model_path, num_threads=1)
    array = cv2.imread(str(DATA / 'landscape.png'))
    from_file, from_array = detector([DATA / 'landscape.png', array])
    np.testing.assert_array_equal(from_file.boxes, from_array.boxes)
    np.testing.assert_array_equal(from_file.scores, from_array.scores)
    everything = Detector(model_path, num_threads=1, score_thr=0.)(array)[0]
    assert len(everything.scores) == read_model_info(model_path).max_per_img


def test_cli_writes_detections(model_path, tmp_path):
    out = tmp_path / 'detections.json'
    images = [str(DATA / 'portrait.png'), str(DATA / 'square.jpg')]
    proc = subprocess.run(
        [sys.executable, '-m', 'cdetr_runtime', str(model_path), *images,
         '--out', str(out), '--threads', '1'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [r['image'] for r in report['images']] == images
    direct = Detector(model_path, num_threads=1)(images)
    for entry, det in zip(report['images'], direct):
        assert (entry['height'], entry['width']) == det.image_size
        assert [d['score'] for d in entry['detections']] == pytest.approx(
            det.scores.tolist(), abs=1e-6)
        assert [d['class_name'] for d in entry['detections']] == \
            det.class_names
        np.testing.assert_allclose([d['box'] for d in entry['detections']],
                                   det.boxes, atol=1e-4)


# --- bad input ------------------------------------------------------------

def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, wire, value):
    if wire == 0:
        return _varint(number << 3) + _varint(value)
    value = bytes(value)
    if wire == 2:
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3 | wire) + value


def rewrite_metadata(path, out, edit):
    """Copy an ONNX file with its metadata_props passed through ``edit``
    (dict -> dict), re-encoding the protobuf by hand (no onnx package)."""
    data = memoryview(path.read_bytes())
    props, body = {}, b''
    for number, wire, value in iter_fields(data):
        if number == 14:
            entry = {n: bytes(v).decode() for n, _, v in iter_fields(value)}
            props[entry[1]] = entry[2]
        else:
            body += _field(number, wire, value)
    for key, value in edit(props).items():
        body += _field(14, 2, _field(1, 2, key.encode())
                       + _field(2, 2, value.encode()))
    out.write_bytes(body)
    return out


def test_bad_model_files(model_path, tmp_path):
    missing = tmp_path / 'missing.onnx'
    with pytest.raises(FileNotFoundError, match=re.escape(
            f'model file not found: {missing}')):
        Detector(missing)
    for name, data in (('image.onnx', (DATA / 'square.jpg').read_bytes()),
                       ('truncated.onnx', model_path.read_bytes()[:5000]),
                       ('empty.onnx', b'')):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(ModelFormatError, match=re.escape(
                f'{bad} is not an ONNX model (')):
            Detector(bad)
    foreign = rewrite_metadata(model_path, tmp_path / 'foreign.onnx',
                               lambda props: {'author': 'someone else'})
    with pytest.raises(ModelFormatError, match=re.escape(
            f'{foreign} is an ONNX model but has no cdetr.* metadata: it was '
            'not exported by tools/export_onnx.py')):
        Detector(foreign)


@pytest.mark.parametrize('version,hint', [
    (None, "re-export it with this version's tools/export_onnx.py"),
    (FORMAT_VERSION + 1, 'upgrade cdetr_runtime to the version that '
     'exported it')])
def test_other_export_version(model_path, tmp_path, version, hint):
    def edit(props):
        props.pop('cdetr.format_version')
        if version is not None:
            props['cdetr.format_version'] = json.dumps(version)
        return props

    path = rewrite_metadata(model_path, tmp_path / 'other.onnx', edit)
    with pytest.raises(ModelFormatError, match=re.escape(
            f'{path} is export format version {version or 1}; this '
            f'cdetr_runtime reads version {FORMAT_VERSION}: {hint}')):
        Detector(path)


def test_rewritten_but_unchanged_model_still_runs(model_path, tmp_path):
    """The hand re-encoding of the tests above keeps a valid model."""
    path = rewrite_metadata(model_path, tmp_path / 'same.onnx', dict)
    image = DATA / 'small.png'
    np.testing.assert_array_equal(Detector(path)(image)[0].scores,
                                  Detector(model_path)(image)[0].scores)


def test_bad_images(model_path, tmp_path):
    detector = Detector(model_path, num_threads=1)
    missing = tmp_path / 'missing.png'
    with pytest.raises(FileNotFoundError, match=re.escape(
            f'image 1: no such file: {missing}')):
        detector([DATA / 'small.png', missing], batch_size=2)
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    with pytest.raises(ImageError, match=re.escape(
            f'image 0: cannot decode {text} (not an image file OpenCV '
            'reads')):
        detector(text)
    with pytest.raises(ImageError, match=re.escape(
            'image 0 is a list: expected a file path or an (h, w, 3) uint8 '
            'BGR numpy array')):
        detector([[1, 2, 3]])
    for array, what in ((np.zeros((40, 50, 4), np.uint8),
                         'shape (40, 50, 4) and dtype uint8'),
                        (np.zeros((40, 50, 3), np.float32),
                         'shape (40, 50, 3) and dtype float32'),
                        (np.zeros((40, 50), np.uint8),
                         'shape (40, 50) and dtype uint8')):
        with pytest.raises(ImageError, match=re.escape(
                f'image 0 has {what}: expected an (h, w, 3) uint8 BGR '
                'array')):
            detector(array)


def test_cli_errors_exit_2(model_path, tmp_path):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'\x08\x07garbage')
    for args, message in (
            ([str(bad), str(DATA / 'small.png')], f'error: {bad} is not an '
             'ONNX model'),
            ([str(model_path), str(tmp_path / 'nope.png')],
             'error: image 0: no such file')):
        proc = subprocess.run([sys.executable, '-m', 'cdetr_runtime', *args],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2
        assert proc.stderr.startswith(message), proc.stderr
