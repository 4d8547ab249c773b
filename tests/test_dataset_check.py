"""Bad datasets fail loudly (docs/reliability.md, "Data and inputs"): generated COCO files."""
import importlib.util
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from PIL import Image

from cdetr_mmdet.data import (CdetrClampBoxes, CdetrCocoDataset, DatasetError, SplitSpec,
                              check_config, check_split, feature_stride, raise_on_errors)
from cdetr_mmdet.evaluation import CdetrCocoMetric
from conftest import ROOT

CLASSES = ('cat', 'dog')
TINY_CFG = ROOT / 'tests' / 'data' / 'tiny_cdetr_shapes.py'


def write_set(root: Path, anns, categories=None, sizes=((64, 48), (64, 48)), drop=()) -> dict:
    """A COCO set under ``root``: PNG images of ``sizes`` (w, h), ``annotations.json``.

    ``anns`` are ``(image_index, category_id, [x, y, w, h])``; categories default to dog (id 1)
    listed before cat (id 2), i.e. not in the order of CLASSES. ``drop`` lists JSON keys to omit.
    """
    (root / 'img').mkdir(parents=True, exist_ok=True)
    images = []
    for i, (w, h) in enumerate(sizes):
        Image.new('RGB', (w, h), (i * 40, 90, 200)).save(root / 'img' / f'{i}.png')
        images.append(dict(id=i + 1, file_name=f'{i}.png', width=w, height=h))
    data = dict(
        images=images,
        categories=categories or [dict(id=1, name='dog'), dict(id=2, name='cat')],
        annotations=[dict(id=k + 1, image_id=img + 1, category_id=cat, bbox=box,
                          area=box[2] * box[3], iscrowd=0)
                     for k, (img, cat, box) in enumerate(anns)])
    for key in drop:
        data.pop(key)
    (root / 'annotations.json').write_text(json.dumps(data))
    return data


def spec(root: Path, **kwargs) -> SplitSpec:
    return SplitSpec(name='train', ann_file=str(root / 'annotations.json'),
                     img_dir=str(root / 'img'), classes=kwargs.pop('classes', CLASSES), **kwargs)


def build(cls, root: Path, classes=CLASSES, **kwargs):
    return cls(ann_file=str(root / 'annotations.json'), data_prefix=dict(img=str(root / 'img')),
               metainfo=dict(classes=classes), pipeline=[], **kwargs)


GOOD = [(0, 2, [4, 4, 20, 16]), (0, 1, [30, 10, 20, 30]), (1, 1, [8, 8, 40, 30])]


def labels(dataset) -> list:
    return [[inst['bbox_label'] for inst in dataset.get_data_info(i)['instances']]
            for i in range(len(dataset))]


def test_category_order_is_handled_by_name_where_mmdet_swaps(tmp_path):
    write_set(tmp_path, GOOD)  # JSON order: dog (1), cat (2); classes: cat, dog
    # mmdet 3.3 numbers the classes in the JSON's order: the cat box gets label 1 = 'dog'.
    assert labels(build(CocoDataset, tmp_path)) == [[1, 0], [0]]
    assert labels(build(CdetrCocoDataset, tmp_path)) == [[0, 1], [1]]  # label i = CLASSES[i]
    report = check_split(spec(tmp_path), stride=16)
    assert not report.errors and "0='cat' (id 2), 1='dog' (id 1)" in report.format()
    assert 'another order' in report.format()
    report = check_split(spec(tmp_path, order_safe=False), stride=16)  # mmdet's dataset/metric
    assert "mmdet's CocoDataset/CocoMetric would swap labels" in report.errors[0]


def perfect_predictions(dataset) -> list:
    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        samples.append(dict(
            img_id=info['img_id'], ori_shape=(info['height'], info['width']),
            pred_instances=dict(
                bboxes=torch.tensor([inst['bbox'] for inst in info['instances']]),
                scores=torch.ones(len(info['instances'])),
                labels=torch.tensor([inst['bbox_label'] for inst in info['instances']]))))
    return samples


def evaluate(metric, samples) -> float:
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)['bbox_mAP']


def test_metric_scores_our_labels_by_name(tmp_path):
    write_set(tmp_path, GOOD)
    samples = perfect_predictions(build(CdetrCocoDataset, tmp_path))
    ann_file = str(tmp_path / 'annotations.json')
    assert evaluate(CdetrCocoMetric(ann_file=ann_file), samples) == 1.0
    # mmdet's metric reads labels in the JSON's order: the same predictions score 0.
    assert evaluate(CocoMetric(ann_file=ann_file), samples) == 0.0


def test_missing_area_is_filled_where_mmdet_raises_keyerror(tmp_path):
    data = write_set(tmp_path, GOOD)
    for ann in data['annotations'][:2]:
        del ann['area']
    (tmp_path / 'annotations.json').write_text(json.dumps(data))
    with pytest.raises(KeyError, match='area'):  # mmdet's parse_data_info reads ann['area']
        build(CocoDataset, tmp_path)
    dataset = build(CdetrCocoDataset, tmp_path)
    assert labels(dataset) == [[0, 1], [1]]
    assert evaluate(CdetrCocoMetric(ann_file=str(tmp_path / 'annotations.json')),
                    perfect_predictions(dataset)) == 1.0
    warning, = check_split(spec(tmp_path), stride=16).warnings
    assert warning.startswith("2 annotations have no 'area' (filled with the box area w*h)")


def test_misspelled_class_lists_closest_names(tmp_path):
    write_set(tmp_path, GOOD)
    expected = r"'dgo' not found \(closest: \['dog'\]\)"
    with pytest.raises(DatasetError, match=expected):
        build(CdetrCocoDataset, tmp_path, classes=('cat', 'dgo'))
    report = check_split(spec(tmp_path, classes=('cat', 'dgo')), stride=16)
    assert str(tmp_path / 'annotations.json') in report.errors[0]
    assert "'dgo' not found (closest: ['dog'])" in report.errors[0]


@pytest.mark.parametrize('content, expected', [
    ('{"images": [{"id": 1', 'is not valid JSON'),
    ('{"images": [{"id": 1, "file_name": "0.png", "width": 4, "height": 4}], "annotations": []}',
     "has no key 'categories'; expected a list of categories"),
    ('{"images": [], "annotations": [], "categories": []}', "lists no images (key 'images' is "
     'empty)'),
    ('{"images": [{"id": 1, "file_name": "0.png", "width": 4, "height": 4}], "categories": [{"id":'
     ' 1, "name": "cat"}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1}]}',
     "1 of 1 annotations lack required keys (annotations[0] lacks ['bbox']); expected every "
     "entry of 'annotations' to have ['id', 'image_id', 'category_id', 'bbox']"),
], ids=['truncated', 'no_categories', 'no_images', 'annotation_without_bbox'])
def test_broken_annotation_file_is_named(tmp_path, content, expected):
    write_set(tmp_path, GOOD)
    ann_file = tmp_path / 'annotations.json'
    ann_file.write_text(content)
    with pytest.raises(DatasetError) as info:  # as the runner builds it
        build(CdetrCocoDataset, tmp_path)
    assert f'annotation file {ann_file}' in str(info.value) and expected in str(info.value)
    with pytest.raises(DatasetError, match=re.escape(expected)):
        CdetrCocoMetric(ann_file=str(ann_file))
    assert expected in check_split(spec(tmp_path), stride=16).errors[0]


def test_filter_empty_gt_on_a_set_without_annotations(tmp_path):
    write_set(tmp_path, [])
    with pytest.raises(DatasetError, match=r'annotations.json: no image left for this split: 2 '
                       r'images listed, 0 with annotations .* set '
                       r'filter_cfg.filter_empty_gt=False'):
        build(CdetrCocoDataset, tmp_path, filter_cfg=dict(filter_empty_gt=True))
    report = check_split(spec(tmp_path, filter_empty_gt=True), stride=16)
    assert 'none of the 2 images has a usable annotation' in report.errors[0]


def test_bad_annotations_give_one_summary_with_counts(tmp_path):
    nan = float('nan')
    anns = GOOD + [(0, 7, [1, 1, 5, 5]), (0, 7, [2, 2, 5, 5]),  # unknown category id
                   (0, 1, [5, 5, 0, 10]), (1, 2, [5, 5, -3, 10]), (1, 2, [nan, 1, 4, 4]),
                   (0, 2, [50, 30, 30, 30]), (1, 1, [-10, -10, 5, 5])]  # out of image
    write_set(tmp_path, anns)
    report = check_split(spec(tmp_path), stride=16)
    assert not report.errors
    unknown, degenerate, outside = report.warnings
    assert unknown.startswith("2 annotations have a category_id that is not in 'categories' "
                              '(ignored): annotations[3] (id 4, image_id 1): category_id 7')
    assert degenerate.startswith('3 boxes are degenerate (zero or negative size, NaN/inf')
    assert 'bbox [5, 5, 0, 10]' in degenerate and 'nan' in degenerate.lower()
    assert outside.startswith('2 boxes extend beyond their image (left unclamped: this pipeline '
                              'has no CdetrClampBoxes; 1 of them lie entirely outside the image)')
    report = check_split(spec(tmp_path, clamps_boxes=True), stride=16)
    assert '(clamped to the image by CdetrClampBoxes;' in report.warnings[2]
    report = check_split(spec(tmp_path, test_mode=True), stride=16)
    assert '(evaluated as listed, as by the official code;' in report.warnings[2]


DEGENERATE = [[5, 5, 0, 10], [5, 5, -3, 10], [float('nan'), 1, 4, 4], [1, 1, float('inf'), 4],
              [1, 1, 4], [1, 1, '4', 4], None]


def test_degenerate_boxes_are_counted_and_dropped(tmp_path):
    """reliability.md data row 10: every degenerate box is named in one warning and dropped from
    the dataset (mmdet's parser raises on a 3-number or string box and keeps an infinite one)."""
    data = write_set(tmp_path, GOOD)
    for k, box in enumerate(DEGENERATE):  # on image 2 (image_id 2), category cat (id 2)
        data['annotations'].append(dict(id=10 + k, image_id=2, category_id=2, bbox=box, area=16,
                                        iscrowd=0))
    (tmp_path / 'annotations.json').write_text(json.dumps(data))
    warning, = check_split(spec(tmp_path), stride=16).warnings
    examples = '; '.join(f'annotations[{3 + k}] (id {10 + k}, image_id 2): bbox {box}'
                         for k, box in enumerate(DEGENERATE[:3]))
    assert warning == ('7 boxes are degenerate (zero or negative size, NaN/inf or not 4 numbers; '
                       f'dropped): {examples}, ...')
    dataset = build(CdetrCocoDataset, tmp_path)
    assert labels(dataset) == [[0, 1], [1]]  # GOOD's boxes only, xyxy as mmdet writes them
    assert [[inst['bbox'] for inst in dataset.get_data_info(i)['instances']] for i in (0, 1)] == [
        [[4, 4, 24, 20], [30, 10, 50, 40]], [[8, 8, 48, 38]]]
    with pytest.raises(ValueError, match='not enough values to unpack'):
        build(CocoDataset, tmp_path)  # why the dataset drops them itself


@pytest.mark.parametrize('mmdet_part', ['dataset', 'metric'])
def test_mmdet_dataset_or_metric_in_the_config_is_a_check_error(tmp_path, mmdet_part):
    """reliability.md data row 2: a config that reads the out-of-order file with mmdet's own
    CocoDataset (every split) or CocoMetric (the evaluated splits) fails the check; the same
    config on a file in the classes' order, or with our types, passes."""
    write_set(tmp_path, GOOD)  # JSON order: dog, cat; classes: cat, dog
    cfg = tiny_cfg(tmp_path)
    assert [r.errors for r in check_config(cfg)] == [[], []]
    if mmdet_part == 'dataset':
        for split in ('train', 'val', 'test'):
            cfg[f'{split}_dataloader'].dataset.type = 'CocoDataset'
    else:
        for evaluator in ('val_evaluator', 'test_evaluator'):
            cfg[evaluator].type = 'CocoMetric'
    error = (f"{tmp_path / 'annotations.json'}: 'categories' list the classes in another order "
             "(['dog', 'cat']) than the config's metainfo.classes ['cat', 'dog']; mmdet's "
             "CocoDataset/CocoMetric would swap labels. Expected type='CdetrCocoDataset' and "
             "'CdetrCocoMetric'.")
    reports = check_config(cfg)
    assert [r.spec.name for r in reports] == ['train', 'val/test']
    assert [r.errors for r in reports] == [[error] if mmdet_part == 'dataset' else [], [error]]
    with pytest.raises(DatasetError, match=re.escape(f'val/test: {error}')):
        raise_on_errors(reports)  # what the check hook raises before the first iteration
    write_set(tmp_path, GOOD, categories=[dict(id=2, name='cat'), dict(id=1, name='dog')])
    assert [r.errors for r in check_config(cfg)] == [[], []]  # same order: nothing to swap


def test_missing_empty_and_unreadable_images_are_each_named(tmp_path):
    write_set(tmp_path, GOOD, sizes=((64, 48),) * 4)
    (tmp_path / 'img' / '0.png').unlink()
    (tmp_path / 'img' / '1.png').write_bytes(b'')
    (tmp_path / 'img' / '2.png').write_bytes(b'not an image')
    Image.new('RGB', (48, 64)).save(tmp_path / 'img' / '3.png')  # listed as 64x48
    report = check_split(spec(tmp_path), stride=16)
    missing, empty, unreadable = report.errors
    img = tmp_path / 'img'
    assert missing == f"1 of 4 images listed in 'images' do not exist: {img / '0.png'}"
    assert empty == f"1 images are empty files (0 bytes): {img / '1.png'}"
    assert unreadable.startswith(f"1 images are not readable images: {img / '2.png'} "
                                 '(UnidentifiedImageError')
    assert '2 of 4 images have no annotation (kept as background-only images)' in report.format()
    assert report.warnings == [
        "1 images differ in size from their 'width'/'height' in the annotation file (boxes are "
        f"in the listed size): {img / '3.png'} is 48x64, listed 64x48"]


def test_all_images_missing_and_filtered_empty_images_are_reported(tmp_path):
    """docs/reliability.md data rows 13 (all missing: the data_root hint) and 17 (images
    without annotations are skipped under filter_empty_gt=True, kept otherwise)."""
    write_set(tmp_path, GOOD, sizes=((64, 48),) * 4)
    report = check_split(spec(tmp_path, filter_empty_gt=True), stride=16)
    assert '2 of 4 images have no annotation (skipped: filter_empty_gt=True), e.g. 2.png, 3.png' \
        in report.format()
    report = check_split(spec(tmp_path, filter_empty_gt=True, test_mode=True), stride=16)
    assert '2 of 4 images have no annotation (kept as background-only images)' in report.format()
    for i in range(4):
        (tmp_path / 'img' / f'{i}.png').unlink()
    report = check_split(spec(tmp_path), stride=16)
    img = tmp_path / 'img'
    assert report.errors == [
        f"4 of 4 images listed in 'images' do not exist (none found: check data_root and "
        f"data_prefix.img, now {str(img)!r}): {img / '0.png'}; {img / '1.png'}; "
        f"{img / '2.png'}, ..."]  # the first 3, the count at the start


def test_small_box_fraction_sets_when_the_warning_fires(tmp_path):
    """docs/reliability.md data row 18: the warning fires above small_box_fraction only."""
    write_set(tmp_path, [(0, 1, [1, 1, 10, 10]), (0, 2, [20, 10, 12, 8]), (1, 1, [5, 5, 40, 40])])
    assert check_split(spec(tmp_path), stride=16, small_box_fraction=0.5).warnings
    assert not check_split(spec(tmp_path), stride=16, small_box_fraction=0.7).warnings


def test_small_boxes_against_the_measured_stride(tmp_path):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_dc5_50e.py'))
    cfg.model.backbone.depth, cfg.model.neck.in_channels = 18, [512]  # same strides, faster
    assert feature_stride(cfg.model)[0] == 16  # DC5
    cfg.model.backbone.type = 'ResNet'
    assert feature_stride(cfg.model)[0] == 32  # C5
    write_set(tmp_path, [(0, 1, [1, 1, 10, 10]), (0, 2, [20, 10, 12, 8]), (1, 1, [5, 5, 40, 40])])
    report = check_split(spec(tmp_path), stride=16, stride_note='measured')
    assert '67% of boxes are smaller than one feature cell (16x16 px)' in report.format()
    assert report.warnings == [
        '67% of the boxes are smaller than one 16x16 px feature cell at the input scale (more '
        'than 50%): small objects are hard for a DETR at this stride; consider a larger input '
        'scale or a DC5 backbone (stride 16)']
    # At the pipeline's scale (x2: 64x48 -> 128x96) sizes are 20, 19.6 and 80 px.
    report = check_split(spec(tmp_path, input_scale=((128, 128), True)), stride=20)
    assert 'p10 19.7, median 20.0, p90 68.0 px' in report.format()
    assert '33% of boxes are smaller' in report.format() and not report.warnings


def official_clamp(boxes_xywh: torch.Tensor, w: int, h: int):
    """The official ConvertCocoPolysToMask (Atten4Vis/ConditionalDETR datasets/coco.py)."""
    boxes = boxes_xywh.clone().reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=w)
    boxes[:, 1::2].clamp_(min=0, max=h)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    return boxes[keep], keep


def test_clamp_boxes_matches_the_official_rule():
    gen = torch.Generator().manual_seed(0)
    w, h = 50, 40
    xywh = torch.cat([torch.rand(200, 2, generator=gen) * 100 - 30,
                      torch.rand(200, 2, generator=gen) * 40], dim=1)
    xywh[:10, 2] = 0  # zero width
    expected, keep = official_clamp(xywh, w, h)
    assert 0 < keep.sum() < len(keep)  # both kinds present
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    results = CdetrClampBoxes()(dict(
        img_shape=(h, w), gt_bboxes=HorizontalBoxes(xyxy),
        gt_bboxes_labels=np.arange(200), gt_ignore_flags=np.zeros(200, bool)))
    torch.testing.assert_close(results['gt_bboxes'].tensor, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(results['gt_bboxes_labels'], np.flatnonzero(keep.numpy()))
    assert len(results['gt_ignore_flags']) == int(keep.sum())


def tiny_cfg(root: Path) -> Config:
    cfg = Config.fromfile(str(TINY_CFG))
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        dataset.update(data_root=str(root), ann_file='annotations.json',
                       data_prefix=dict(img='img/'), metainfo=dict(classes=CLASSES))
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = str(root / 'annotations.json')
    cfg.model.bbox_head.num_classes = 2
    return cfg


def test_check_config_reads_the_configs_splits_and_stride(tmp_path):
    write_set(tmp_path, GOOD)
    train, valtest = check_config(tiny_cfg(tmp_path))
    assert (train.spec.name, valtest.spec.name) == ('train', 'val/test')
    assert train.spec.clamps_boxes and valtest.spec.input_scale == ((96, 96), True)
    assert "feature stride 32 (measured on the config's ResNet)" in train.format()
    assert not train.errors and not valtest.errors


def train_runner(cfg: Config, work_dir: Path):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Count(Hook):
        def __init__(self):
            self.iters = 0

        def after_train_iter(self, *args, **kwargs):
            self.iters += 1

    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = 1
    cfg.train_cfg.val_interval = 100
    cfg.default_hooks.checkpoint.interval = 100
    runner = Runner.from_cfg(cfg)
    counter = Count()
    runner.register_hook(counter)
    return runner, counter


def test_training_stops_before_the_first_iteration_and_the_switch(tmp_path):
    write_set(tmp_path / 'data', GOOD)
    (tmp_path / 'data' / 'img' / '1.png').write_bytes(b'')
    runner, counter = train_runner(tiny_cfg(tmp_path / 'data'), tmp_path / 'on')
    with pytest.raises(DatasetError) as info:
        runner.train()
    assert counter.iters == 0
    assert str(info.value).startswith('dataset check failed')
    assert (f"train: 1 images are empty files (0 bytes): {tmp_path / 'data' / 'img' / '1.png'}"
            in str(info.value))
    cfg = tiny_cfg(tmp_path / 'data')
    cfg.merge_from_dict({'dataset_check.enabled': False})  # the one switch
    runner, counter = train_runner(cfg, tmp_path / 'off')
    # mmcv's own error (OpenCV decoding 0 bytes), which names no file.
    with pytest.raises(cv2.error, match=re.escape('(-215:Assertion failed) !buf.empty()')) as info:
        runner.train()
    assert '1.png' not in str(info.value)


def test_check_dataset_tool(tmp_path, capsys):
    spec_ = importlib.util.spec_from_file_location('check_dataset', ROOT / 'tools' /
                                                   'check_dataset.py')
    tool = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(tool)
    main = tool.main
    write_set(tmp_path / 'data', GOOD)
    cfg_path = tmp_path / 'cfg.py'
    tiny_cfg(tmp_path / 'data').dump(str(cfg_path))
    assert main([str(cfg_path), '--splits', 'train']) == 0
    out = capsys.readouterr().out
    assert "labels: 0='cat' (id 2), 1='dog' (id 1)" in out
    # Boxes of 18-35 px against the tiny model's stride 32 (no Resize in its train pipeline):
    assert 'WARNING: 67% of the boxes are smaller than one 32x32 px feature cell' in out
    assert out.rstrip().endswith('[dataset check] 1 split(s): 0 error(s), 1 warning(s)')
    assert main([str(cfg_path), '--cfg-options', "train_dataloader.dataset.metainfo.classes="
                 "['cat','dgo']"]) == 1
    out = capsys.readouterr().out
    assert "ERROR: " in out and "'dgo' not found (closest: ['dog'])" in out
    assert out.rstrip().endswith('2 split(s): 1 error(s), 0 warning(s)')  # val: resized x2


def test_tools_test_stops_on_a_broken_test_set(tmp_path):
    """The check at the start of tools/test.py (reliability.md: `test` for tools/test.py):
    a missing test image stops it with exit code 1 and the DatasetError, no evaluation."""
    import subprocess
    import sys

    from mmdet.registry import MODELS
    write_set(tmp_path / 'data', GOOD)
    (tmp_path / 'data' / 'img' / '1.png').unlink()
    cfg = tiny_cfg(tmp_path / 'data')
    cfg.dump(str(tmp_path / 'config.py'))
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(), meta=dict()),
               tmp_path / 'model.pth')
    out = subprocess.run(
        [sys.executable, 'tools/test.py', str(tmp_path / 'config.py'), str(tmp_path / 'model.pth'),
         '--work-dir', str(tmp_path / 'work')], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert out.returncode == 1
    log = out.stdout + out.stderr
    # The run's own error (only the test split is checked): its last two lines.
    assert out.stderr.strip().splitlines()[-2:] == [
        'cdetr_mmdet.data.coco_api.DatasetError: dataset check failed (python '
        'tools/check_dataset.py CONFIG prints the full report; dataset_check=dict(enabled=False) '
        'turns the check off):',
        f"  test: 1 of 2 images listed in 'images' do not exist: "
        f"{tmp_path / 'data' / 'img' / '1.png'}"]
    assert 'Average Precision' not in log
