"""COCO annotation files read with named errors and classes mapped by name.

mmdet 3.3's ``CocoDataset`` and ``CocoMetric`` take ``cat_ids = coco.get_cat_ids(cat_names=classes)``,
which pycocotools returns in the order of the JSON's ``categories``, not in the order of ``classes``:
with ``classes=('cat', 'dog')`` and a JSON listing dog before cat, every dog box gets label 0, which
the model, the visualiser and the inferencer then call 'cat'. A misspelled class name is silently
left out, shifting every later label. :class:`CdetrCOCO` returns the ids in the order of the names
asked for and raises :class:`DatasetError` for a name the file does not have, listing the closest
candidates. It also names the file for a truncated / non-JSON file or a missing ``images`` /
``categories`` key, and fills a missing ``area`` with the box area ``w * h`` (what mmdet's own
``gt_to_coco_json`` writes), which mmdet's parser and pycocotools' ``COCOeval`` read.
"""
import difflib
import json
import math
from typing import Any, Dict, List, Sequence

from mmdet.datasets.api_wrappers import COCO


class DatasetError(ValueError):
    """A dataset that cannot be used as configured; the message names the file and key."""


def load_coco_json(path: str) -> Dict[str, Any]:
    """Read a COCO annotation file, or raise :class:`DatasetError` naming it and what was expected.

    Args:
        path: local path of the JSON file.

    Returns:
        The parsed dict, with ``images`` and ``categories`` lists (``annotations`` may be absent,
        as in COCO's test-dev image-info files).
    """
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f'annotation file not found: {path}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(
            f'annotation file {path} is not valid JSON ({e}); expected a COCO-format JSON object '
            "with 'images', 'annotations' and 'categories' (truncated copy?)") from None
    if not isinstance(data, dict):
        raise DatasetError(f'annotation file {path} holds a JSON {type(data).__name__}; expected a '
                           "COCO-format object with 'images', 'annotations' and 'categories'")
    for key in ('images', 'categories'):
        if not isinstance(data.get(key), list):
            found = 'no' if key not in data else f'a {type(data[key]).__name__} as'
            raise DatasetError(f"annotation file {path} has {found} key '{key}'; expected a list "
                               f"of {key} (keys found: {sorted(data)})")
    if 'annotations' in data and not isinstance(data['annotations'], list):
        raise DatasetError(f"annotation file {path}: key 'annotations' is a "
                           f"{type(data['annotations']).__name__}; expected a list")
    if not data['images']:
        raise DatasetError(f"annotation file {path} lists no images (key 'images' is empty); "
                           'expected at least one image')
    _require_keys(path, 'images', data['images'], ('id', 'file_name', 'width', 'height'))
    _require_keys(path, 'categories', data['categories'], ('id', 'name'))
    _require_keys(path, 'annotations', data.get('annotations', []),
                  ('id', 'image_id', 'category_id', 'bbox'))
    return data


def _require_keys(path: str, section: str, entries: Sequence[Any], keys: Sequence[str]) -> None:
    """Raise :class:`DatasetError` naming the first entries of ``section`` that lack a key."""
    bad = [(i, [k for k in keys if k not in e] if isinstance(e, dict) else list(keys))
           for i, e in enumerate(entries)
           if not isinstance(e, dict) or any(k not in e for k in keys)]
    if bad:
        examples = ', '.join(f'{section}[{i}] lacks {missing}' for i, missing in bad[:3])
        raise DatasetError(f'annotation file {path}: {len(bad)} of {len(entries)} {section} lack '
                           f'required keys ({examples}); expected every entry of {section!r} '
                           f'to have {list(keys)}')


def fill_missing_area(annotations: Sequence[dict]) -> int:
    """Set ``area = w * h`` on annotations that have none; returns how many were filled."""
    filled = 0
    for ann in annotations:
        if 'area' not in ann:
            bbox = ann.get('bbox') or [0, 0, 0, 0]
            ann['area'] = float(bbox[2] * bbox[3]) if len(bbox) == 4 else 0.0
            filled += 1
    return filled


def class_ids_by_name(classes: Sequence[str], categories: Sequence[dict],
                      ann_file: str) -> List[int]:
    """Category ids of ``classes``, in the order of ``classes`` (label ``i`` is ``classes[i]``).

    Raises:
        DatasetError: a class name is not in the file's ``categories`` (with the closest
            candidates), or a name appears there twice.
    """
    by_name: Dict[str, List[int]] = {}
    for cat in categories:
        by_name.setdefault(cat.get('name'), []).append(cat.get('id'))
    problems = []
    for name in classes:
        ids = by_name.get(name, [])
        if not ids:
            close = difflib.get_close_matches(name, [n for n in by_name if isinstance(n, str)],
                                              n=3, cutoff=0.5)
            hint = f'closest: {close}' if close else f'the file has: {sorted(map(str, by_name))[:20]}'
            problems.append(f'{name!r} not found ({hint})')
        elif len(ids) > 1:
            problems.append(f'{name!r} is the name of several categories (ids {ids})')
    if problems:
        raise DatasetError(
            f"{ann_file}: the config's metainfo.classes do not match the file's 'categories' by "
            f"name: {'; '.join(problems)}. Expected every class name exactly once in "
            "'categories' (names are compared exactly; fix the config's classes or the file).")
    return [by_name[name][0] for name in classes]


class CdetrCOCO(COCO):
    """mmdet's COCO wrapper with named load errors and ``get_cat_ids`` in the order asked for."""

    def __init__(self, annotation_file: str) -> None:
        data = load_coco_json(annotation_file)
        self.ann_file = annotation_file
        self.num_filled_area = fill_missing_area(data.get('annotations', []))
        super().__init__(annotation_file=None)  # index our validated dict, not a second read
        self.dataset = data
        self.createIndex()
        self.img_ann_map = self.imgToAnns
        self.cat_img_map = self.catToImgs

    def get_cat_ids(self, cat_names: Sequence[str] = (), sup_names=(), cat_ids=()) -> List[int]:
        """Ids of ``cat_names`` in the order of ``cat_names`` (pycocotools': the file's order)."""
        if cat_names and not sup_names and not cat_ids:
            return class_ids_by_name(list(cat_names), self.dataset['categories'], self.ann_file)
        return super().get_cat_ids(list(cat_names), list(sup_names), list(cat_ids))


def is_usable_box(bbox: Any) -> bool:
    """Whether ``bbox`` is ``[x, y, w, h]``: four finite numbers, ``w > 0`` and ``h > 0``.

    Any other box is degenerate: the dataset check counts it, :class:`CdetrCocoDataset` drops it.
    """
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
            and bbox[2] > 0 and bbox[3] > 0)
