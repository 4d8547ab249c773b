"""The synthetic shapes dataset: determinism, COCO validity, counts, caching and the CLI."""
import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import cv2
import numpy as np
import pytest

from cdetr_mmdet.data import CLASSES, PRESETS, ensure_dataset, generate_dataset, render_image

REPO = Path(__file__).resolve().parents[1]
SMALL: Dict[str, Any] = dict(num_train=12, num_val=5, img_size=64, min_objects=1, max_objects=3,
                             seed=7)
# sha256 of the annotation JSON and decoded pixels of two small datasets, as written by the
# generator of GENERATOR_VERSION 1 before its clean-up (issue 10). A change to the drawing must
# bump GENERATOR_VERSION (so cached datasets are redrawn) and these digests.
PINNED = {
    'easy': (dict(num_train=6, num_val=2, img_size=64, seed=11),
             'a2a132a3372891f91aaf4da81271b4d7aa45fe59d072c268a95793630fdc5324'),
    'hard': (dict(num_train=6, num_val=2, img_size=(40, 72), seed=12, difficulty='hard',
                  min_objects=2, max_objects=4, empty_fraction=0.25),
             '6b41c26ed4647e13ef7ce72e8d41b443f28ecdcbb4af147be19302a9d0c1523b'),
}


def _files(root: Path) -> Dict[str, bytes]:
    """Every file under root, keyed by relative path."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _load(root: Path, split: str) -> Dict[str, Any]:
    return json.loads((root / 'annotations' / f'instances_{split}.json').read_text())


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate_dataset(tmp_path / 'a', **SMALL)
    generate_dataset(tmp_path / 'b', **SMALL)
    a, b = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    num_png = len([name for name in a if name.endswith('.png')])
    assert num_png == SMALL['num_train'] + SMALL['num_val']
    assert a == b


@pytest.mark.parametrize('name', sorted(PINNED))
def test_output_is_pinned(tmp_path: Path, name: str) -> None:
    settings, expected = PINNED[name]
    generate_dataset(tmp_path, **settings)
    digest = hashlib.sha256()
    for split in ('train', 'val'):
        digest.update((tmp_path / 'annotations' / f'instances_{split}.json').read_bytes())
        for png in sorted((tmp_path / split).glob('*.png')):  # pixels, not zlib's bytes
            digest.update(cv2.imread(str(png), cv2.IMREAD_UNCHANGED).tobytes())
    assert digest.hexdigest() == expected


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    generate_dataset(tmp_path / 'a', **SMALL)
    generate_dataset(tmp_path / 'b', **dict(SMALL, seed=8))
    a, b = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a if name.endswith('.png'))
    assert (_load(tmp_path / 'a', 'train')['annotations'] !=
            _load(tmp_path / 'b', 'train')['annotations'])


@pytest.mark.parametrize('difficulty', sorted(PRESETS))
def test_counts_and_boxes(tmp_path: Path, difficulty: str) -> None:
    kwargs = dict(num_train=40, num_val=9, img_size=(48, 80), min_objects=2, max_objects=4,
                  empty_fraction=0.1, seed=3, difficulty=difficulty)
    result = generate_dataset(tmp_path, **kwargs)
    for split in ('train', 'val'):
        coco = _load(tmp_path, split)
        num = kwargs[f'num_{split}']
        assert len(coco['images']) == num == result['counts'][split]['images']
        assert [c['name'] for c in coco['categories']] == list(CLASSES)
        assert [c['id'] for c in coco['categories']] == list(range(1, len(CLASSES) + 1))
        per_image = {img['id']: 0 for img in coco['images']}
        sizes = {img['id']: (img['width'], img['height']) for img in coco['images']}
        for img in coco['images']:
            shape = cv2.imread(str(tmp_path / split / img['file_name'])).shape
            assert shape == (img['height'], img['width'], 3)
            assert 48 <= img['width'] <= 80 and 48 <= img['height'] <= 80
        for ann in coco['annotations']:
            per_image[ann['image_id']] += 1
            x, y, w, h = ann['bbox']
            width, height = sizes[ann['image_id']]
            assert all(isinstance(v, float) for v in ann['bbox'])
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert 0 < ann['area'] <= w * h and ann['iscrowd'] == 0
            assert 1 <= ann['category_id'] <= len(CLASSES)
        num_empty = math.floor(kwargs['empty_fraction'] * num + 0.5)  # 4 of 40, 1 of 9
        assert (sum(n == 0 for n in per_image.values()) == num_empty ==
                result['counts'][split]['empty_images'])
        assert all(2 <= n <= 4 for n in per_image.values() if n)
        assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])


@pytest.mark.parametrize('max_occluded_frac', [0.0, 0.5])
def test_occlusion_limit(max_occluded_frac: float) -> None:
    # Flat background, no noise: every non-background pixel belongs to exactly one visible shape.
    style = dataclasses.replace(PRESETS['easy'], noise_std=0.0, texture_amp=0.0,
                                max_occluded_frac=max_occluded_frac)
    for index in range(20):
        img, anns = render_image(np.random.default_rng(index), 64, 64, 4, style)
        # The background is drawn first, so the same seed with no shapes reproduces it exactly.
        background, _ = render_image(np.random.default_rng(index), 64, 64, 0, style)
        painted = int((img != background).any(-1).sum())
        total = sum(a['area'] for a in anns)
        assert len(anns) == 4
        assert painted >= (1 - max_occluded_frac) * total - 1e-6
        if max_occluded_frac == 0.0:
            assert painted == total


def test_pycocotools_loads(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    generate_dataset(tmp_path, **SMALL)
    for split in ('train', 'val'):
        coco = COCO(str(tmp_path / 'annotations' / f'instances_{split}.json'))
        assert len(coco.getImgIds()) == SMALL[f'num_{split}']
        assert coco.getCatIds(catNms=list(CLASSES)) == list(range(1, len(CLASSES) + 1))


def test_mmdet_coco_dataset_loads(tmp_path: Path) -> None:
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    result = generate_dataset(tmp_path, **dict(SMALL, num_train=20, empty_fraction=0.25))
    assert result['counts']['train']['empty_images'] == 5
    for split in ('train', 'val'):
        dataset = CocoDataset(metainfo=dict(classes=CLASSES), data_root=str(tmp_path),
                              ann_file=f'annotations/instances_{split}.json',
                              data_prefix=dict(img=f'{split}/'),
                              filter_cfg=dict(filter_empty_gt=False), pipeline=[],
                              test_mode=False)
        assert len(dataset) == result['counts'][split]['images']
        coco = _load(tmp_path, split)
        info = dataset[0]
        assert Path(info['img_path']).is_file()
        num_boxes = sum(a['image_id'] == info['img_id'] for a in coco['annotations'])
        assert len(info['instances']) == num_boxes
        assert all(0 <= inst['bbox_label'] < len(CLASSES) for inst in info['instances'])


def test_ensure_dataset_reuses_and_regenerates(tmp_path: Path) -> None:
    first = ensure_dataset(tmp_path, **SMALL)
    assert first['generated']
    png = tmp_path / 'train' / '000000.png'
    stamp = png.stat().st_mtime_ns
    again = ensure_dataset(tmp_path, **SMALL)
    assert not again['generated'] and again['counts'] == first['counts']
    assert png.stat().st_mtime_ns == stamp
    changed = ensure_dataset(tmp_path, **dict(SMALL, num_train=6))
    assert changed['generated'] and len(_load(tmp_path, 'train')['images']) == 6
    assert not (tmp_path / 'train' / '000011.png').exists()  # stale images of the old run are gone
    (tmp_path / 'manifest.json').unlink()  # what an interrupted run leaves behind
    assert ensure_dataset(tmp_path, **dict(SMALL, num_train=6))['generated']
    with pytest.raises(TypeError):
        ensure_dataset(tmp_path, num_trian=3)


@pytest.mark.parametrize('kwargs, message', [
    (dict(min_objects=5, max_objects=2), r'min_objects \(5\).*max_objects \(2\)'),
    (dict(empty_fraction=1.5), 'empty_fraction'),
    (dict(img_size=(64, 32)), 'img_size'),
    (dict(img_size=8), 'img_size'),
    (dict(img_size=64.0), 'img_size'),
    (dict(num_train=-1), 'num_train'),
    (dict(min_size_frac=0.6, max_size_frac=0.5), 'min_size_frac'),
    (dict(max_occluded_frac=1.0), 'max_occluded_frac'),
    (dict(difficulty='medium'), 'difficulty'),
])
def test_invalid_arguments(tmp_path: Path, kwargs: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path, **kwargs)
    assert not (tmp_path / 'manifest.json').exists()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / 'synth'
    cmd = [sys.executable, str(REPO / 'tools' / 'generate_synthetic.py'), '--out-dir', str(out),
           '--num-train', '4', '--num-val', '2', '--img-size', '64', '--seed', '1']
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)['counts']['train']['images'] == 4
    assert len(list((out / 'train').glob('*.png'))) == 4
    assert len(list((out / 'val').glob('*.png'))) == 2
    generate_dataset(tmp_path / 'api', num_train=4, num_val=2, img_size=64, seed=1)
    assert _files(out) == _files(tmp_path / 'api')  # the CLI adds nothing to the library's output
    bad = subprocess.run(cmd + ['--min-objects', '3', '--max-objects', '1'], capture_output=True,
                         text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip() == 'error: min_objects (3) must be <= max_objects (1)'
    assert _files(out) == _files(tmp_path / 'api')  # refused before touching the dataset
