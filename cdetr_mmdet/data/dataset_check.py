"""Check one COCO-format split before training: annotation file, class mapping, boxes and images.

Reads the annotation file and only the headers of the images (PIL's lazy open gives the size
without decoding). Problems that would make training or evaluation wrong are errors; problems the
pipeline handles (and drops or clamps) are warnings, counted with a few examples. See
``tools/check_dataset.py`` and ``CdetrDatasetCheckHook`` for how the splits of a config are found.
"""
import dataclasses
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .coco_api import DatasetError, class_ids_by_name, is_usable_box, load_coco_json

MAX_EXAMPLES = 3


@dataclasses.dataclass
class SplitSpec:
    """Where a split's data is and how the config uses it.

    Attributes:
        name: 'train', 'val', 'test' or e.g. 'val/test' when loaders share a dataset.
        ann_file: annotation file path (data_root already joined).
        img_dir: image folder (data_root + data_prefix['img']).
        classes: the config's ``metainfo.classes`` (label i = classes[i]).
        test_mode: whether the dataset is built with ``test_mode=True``.
        filter_empty_gt: ``filter_cfg.filter_empty_gt`` (only used when not test_mode).
        input_scale: ``(scale, keep_ratio)`` of the pipeline's resize, or None (original size).
        clamps_boxes: whether the pipeline has ``CdetrClampBoxes``.
        order_safe: whether the dataset and metric map labels by name (our classes), so that a
            different category order in the JSON is handled rather than swapped.
    """
    name: str
    ann_file: str
    img_dir: str
    classes: Tuple[str, ...]
    test_mode: bool = False
    filter_empty_gt: bool = False
    input_scale: Optional[Tuple[Tuple[int, int], bool]] = None
    clamps_boxes: bool = False
    order_safe: bool = True


@dataclasses.dataclass
class SplitReport:
    """Findings for one split: errors stop a run, warnings and notes are printed once."""
    spec: SplitSpec
    notes: List[str] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)
    errors: List[str] = dataclasses.field(default_factory=list)

    def format(self) -> str:
        """The split's summary, one line per finding."""
        head = (f'[dataset check] {self.spec.name}: {self.spec.ann_file} '
                f'(images under {self.spec.img_dir})')
        lines = [head] + [f'  {n}' for n in self.notes]
        lines += [f'  WARNING: {w}' for w in self.warnings]
        lines += [f'  ERROR: {e}' for e in self.errors]
        return '\n'.join(lines)


class _Counter:
    """A count with the first few examples."""

    def __init__(self) -> None:
        self.count, self.examples = 0, []

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def text(self) -> str:
        more = ', ...' if self.count > len(self.examples) else ''
        return f"{'; '.join(self.examples)}{more}"

    def report_to(self, messages: List[str], what: str) -> None:
        """Append ``'<count> <what>: <examples>'`` to ``messages`` if anything was counted."""
        if self.count:
            messages.append(f'{self.count} {what}: {self.text()}')


def _scale_factors(width: float, height: float,
                   input_scale: Optional[Tuple[Tuple[int, int], bool]]) -> Tuple[float, float]:
    """(fx, fy) that the pipeline's resize applies to an image (mmcv's ``rescale_size`` rule)."""
    if input_scale is None or width <= 0 or height <= 0:
        return 1.0, 1.0
    scale, keep_ratio = input_scale
    if keep_ratio:
        f = min(max(scale) / max(width, height), min(scale) / min(width, height))
        return f, f
    return scale[0] / width, scale[1] / height


def _check_images(spec: SplitSpec, images: Sequence[dict], report: SplitReport,
                  progress: Optional[Callable[[str], None]]) -> None:
    """Every listed image exists, is non-empty, has a readable header of the listed size."""
    missing, empty, unreadable, wrong_size = _Counter(), _Counter(), _Counter(), _Counter()
    for i, img in enumerate(images):
        if progress is not None and i and i % 10000 == 0:
            progress(f'[dataset check] {spec.name}: read {i}/{len(images)} image headers')
        path = os.path.join(spec.img_dir, str(img['file_name']))
        if not os.path.isfile(path):
            missing.add(path)
            continue
        if os.path.getsize(path) == 0:
            empty.add(path)
            continue
        try:
            with Image.open(path) as im:
                size = im.size
        except Exception as e:  # PIL raises several types for undecodable headers
            unreadable.add(f'{path} ({type(e).__name__}: {e})')
            continue
        if tuple(size) != (img['width'], img['height']):
            wrong_size.add(f"{path} is {size[0]}x{size[1]}, listed {img['width']}x{img['height']}")
    if missing.count:
        hint = (f' (none found: check data_root and data_prefix.img, now {spec.img_dir!r})'
                if missing.count == len(images) else '')
        report.errors.append(f"{missing.count} of {len(images)} images listed in 'images' do not "
                             f'exist{hint}: {missing.text()}')
    empty.report_to(report.errors, 'images are empty files (0 bytes)')
    unreadable.report_to(report.errors, 'images are not readable images')
    wrong_size.report_to(report.warnings, "images differ in size from their 'width'/'height' in "
                         'the annotation file (boxes are in the listed size)')


def _check_classes(spec: SplitSpec, categories: Sequence[dict], report: SplitReport) -> List[int]:
    """Map classes to category ids by name; errors for missing names, notes for the order."""
    try:
        cat_ids = class_ids_by_name(spec.classes, categories, spec.ann_file)
    except DatasetError as e:
        report.errors.append(str(e))
        return []
    json_order = [c['id'] for c in categories if c['id'] in set(cat_ids)]
    mapping = ', '.join(f'{i}={name!r} (id {cid})'
                        for i, (name, cid) in enumerate(zip(spec.classes[:10], cat_ids)))
    if len(cat_ids) > 10:
        mapping += f', ... ({len(cat_ids)} in all)'
    report.notes.append(f'labels: {mapping}')
    if json_order != cat_ids:
        if spec.order_safe:
            report.notes.append("the file lists these categories in another order than the "
                                "config's classes: mapped by name, label i = classes[i]")
        else:
            report.errors.append(
                f"{spec.ann_file}: 'categories' list the classes in another order "
                f'({[c["name"] for c in categories if c["id"] in set(cat_ids)]}) than the '
                f"config's metainfo.classes {list(spec.classes)}; mmdet's CocoDataset/CocoMetric "
                "would swap labels. Expected type='CdetrCocoDataset' and 'CdetrCocoMetric'.")
    return cat_ids


def check_split(spec: SplitSpec, stride: Optional[int], stride_note: str = '',
                small_box_fraction: float = 0.5,
                progress: Optional[Callable[[str], None]] = None) -> SplitReport:
    """Check one split; never raises for bad data (the findings are in the report)."""
    report = SplitReport(spec)
    try:
        data = load_coco_json(spec.ann_file)
    except DatasetError as e:
        report.errors.append(str(e))
        return report
    images, categories = data['images'], data['categories']
    annotations = data.get('annotations')
    if annotations is None:
        (report.notes if spec.test_mode else report.errors).append(
            f"{spec.ann_file} has no key 'annotations'" +
            ('' if spec.test_mode else '; expected a list of annotations to train on'))
        annotations = []
    report.notes.append(f'{len(images)} images, {len(annotations)} annotations, '
                        f'{len(spec.classes)} classes')
    cat_ids = _check_classes(spec, categories, report)
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    known_cats = {c['id']: c['name'] for c in categories}
    img_by_id = {img['id']: img for img in images}

    unknown_cat, other_cat, unknown_img = _Counter(), _Counter(), _Counter()
    degenerate, thin, outside, no_area = _Counter(), _Counter(), _Counter(), _Counter()
    outside_empty = 0
    sizes: List[float] = []
    used_imgs = set()
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}] (id {ann['id']}, image_id {ann['image_id']})"
        if 'area' not in ann:
            no_area.add(where)
        if ann['category_id'] not in known_cats:
            unknown_cat.add(f"{where}: category_id {ann['category_id']}")
            continue
        if ann['category_id'] not in label_of:
            other_cat.add(f"{known_cats[ann['category_id']]!r}")
            continue
        img = img_by_id.get(ann['image_id'])
        if img is None:
            unknown_img.add(where)
            continue
        bbox = ann['bbox']
        if not is_usable_box(bbox):
            degenerate.add(f'{where}: bbox {bbox}')
            continue
        x, y, w, h = bbox
        if w < 1 or h < 1:
            thin.add(f'{where}: bbox {bbox}')
        width, height = img['width'], img['height']
        if x < 0 or y < 0 or x + w > width or y + h > height:
            outside.add(f'{where}: bbox {bbox} in a {width}x{height} image')
            if min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0):
                outside_empty += 1
        if ann.get('iscrowd', 0):
            continue
        used_imgs.add(ann['image_id'])
        fx, fy = _scale_factors(width, height, spec.input_scale)
        sizes.append(math.sqrt(w * fx * h * fy))

    unknown_cat.report_to(report.warnings, "annotations have a category_id that is not in "
                          "'categories' (ignored)")
    if other_cat.count and cat_ids:  # (without a class mapping every category is 'other')
        names = sorted(set(other_cat.examples))
        report.warnings.append(f'{other_cat.count} annotations are of categories not in the '
                               f"config's classes (ignored), e.g. {names}")
    unknown_img.report_to(report.warnings, "annotations refer to an image_id not in 'images' "
                          '(ignored)')
    degenerate.report_to(report.warnings, 'boxes are degenerate (zero or negative size, NaN/inf '
                         'or not 4 numbers; dropped)')
    thin.report_to(report.warnings, "boxes are narrower or lower than 1 px (mmdet's CocoDataset "
                   'drops them)')
    if spec.test_mode:
        fate = 'evaluated as listed, as by the official code'
    elif spec.clamps_boxes:
        fate = 'clamped to the image by CdetrClampBoxes'
    else:
        fate = 'left unclamped: this pipeline has no CdetrClampBoxes'
    outside.report_to(report.warnings, f'boxes extend beyond their image ({fate}; '
                      f'{outside_empty} of them lie entirely outside the image)')
    no_area.report_to(report.warnings, "annotations have no 'area' (filled with the box area w*h)")

    empty_imgs = [img for img in images if img['id'] not in used_imgs]
    if cat_ids:
        if len(empty_imgs) == len(images) and not spec.test_mode:
            report.errors.append(
                f'{spec.ann_file}: none of the {len(images)} images has a usable annotation of the '
                f'classes {list(spec.classes)}; expected boxes to train on')
        elif empty_imgs:
            fate = ('skipped: filter_empty_gt=True' if spec.filter_empty_gt and not spec.test_mode
                    else 'kept as background-only images')
            names = ', '.join(str(img['file_name']) for img in empty_imgs[:MAX_EXAMPLES])
            report.notes.append(f'{len(empty_imgs)} of {len(images)} images have no annotation '
                                f'({fate}), e.g. {names}')
    _box_size_summary(spec, sizes, stride, stride_note, small_box_fraction, report)
    _check_images(spec, images, report, progress)
    return report


def _box_size_summary(spec: SplitSpec, sizes: List[float], stride: Optional[int],
                      stride_note: str, small_box_fraction: float, report: SplitReport) -> None:
    """Box-size percentiles at the network input and the share below one feature cell."""
    if not sizes:
        return
    p10, p50, p90 = np.percentile(sizes, [10, 50, 90])
    at = (f"at the pipeline's resize scale {spec.input_scale[0]}" if spec.input_scale
          else 'at the original image size (no Resize in the pipeline)')
    line = f'box size sqrt(w*h) {at}: p10 {p10:.1f}, median {p50:.1f}, p90 {p90:.1f} px'
    if stride is None:
        report.notes.append(f'{line}; feature stride unknown ({stride_note})')
        return
    small = float(np.mean(np.asarray(sizes) < stride))
    report.notes.append(f'{line}; feature stride {stride} ({stride_note}): {small:.0%} of boxes '
                        f'are smaller than one feature cell ({stride}x{stride} px)')
    if small > small_box_fraction:
        report.warnings.append(
            f'{small:.0%} of the boxes are smaller than one {stride}x{stride} px feature cell at '
            f'the input scale (more than {small_box_fraction:.0%}): small objects are hard for a '
            'DETR at this stride; consider a larger input scale or a DC5 backbone (stride 16)')
