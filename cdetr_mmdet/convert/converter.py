"""Convert official / Hugging Face / mmdet checkpoints to ours, strictly.

The target keys and shapes come from our model built from a config, so a
converted checkpoint is known to fill that model exactly: every source key
used, every model key filled, every shape equal.
"""
import copy
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from mmdet.datasets import CocoDataset
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from ..version import __version__
from .checkpoint_io import (PathLike, check_and_fill, load_source_state_dict,
                            save_checkpoint)
from .coco_ids import NUM_CATEGORY_ID_ROWS, category_id_class_names
from .hf_format import hf_to_official
from .key_rules import Renamed, rename
from .mmdet_format import MMDET_TO_OURS
from .official_format import official_to_ours

SOURCES = ('official', 'hf', 'mmdet')

# configs/ beside the package (a source checkout or an editable install).
DEFAULT_CONFIG = (Path(__file__).resolve().parents[2] / 'configs' /
                  'conditional_detr_r50_50e.py')


def build_target_model(config: Union[PathLike, Config, None] = None,
                       cfg_options: Optional[dict] = None,
                       num_classes: Optional[int] = None) -> nn.Module:
    """Build our model from a config, without downloading anything.

    Args:
        config (str | Path | Config, optional): Config file or object.
            Defaults to :data:`DEFAULT_CONFIG` (Conditional DETR R50).
        cfg_options (dict, optional): Overrides merged into the config, as
            mmdet tools' ``--cfg-options``. Defaults to None.
        num_classes (int, optional): Override ``model.bbox_head.num_classes``.
            Defaults to None (as the config says).

    Returns:
        nn.Module: The model (its weights are whatever construction gave).
    """
    import cdetr_mmdet  # noqa: F401  (registers our modules)
    config = DEFAULT_CONFIG if config is None else config
    cfg = (copy.deepcopy(config) if isinstance(config, Config) else
           Config.fromfile(str(config)))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None  # no torchvision download
    if num_classes is not None:
        cfg.model.bbox_head.num_classes = num_classes
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope',
                                                      'mmdet')):
        return MODELS.build(cfg.model)


def rename_to_ours(state_dict: Mapping[str, Tensor], source: str,
                   keep_91: bool = False) -> Renamed:
    """Rename a source state dict to our keys (no strict check yet).

    Args:
        state_dict (Mapping[str, Tensor]): Source weights.
        source (str): ``'official'``, ``'hf'`` or ``'mmdet'``.
        keep_91 (bool): Keep 91 class rows (official / hf only).
            Defaults to False.

    Returns:
        Renamed: Our keys with the source keys as origins.
    """
    if source == 'official':
        return official_to_ours(state_dict, keep_91)
    if source == 'hf':
        official = hf_to_official(state_dict)
        return official.then(official_to_ours(official.tensors, keep_91))
    if source == 'mmdet':
        if keep_91:
            raise ValueError('keep_91 applies to official and hf sources; '
                             "mmdet's head already has contiguous labels")
        return rename(state_dict, MMDET_TO_OURS)
    raise ValueError(f'unknown source {source!r}; expected one of {SOURCES}')


def convert_state_dict(state_dict: Mapping[str, Tensor], source: str,
                       model: nn.Module, keep_91: bool = False,
                       description: str = 'the checkpoint'
                       ) -> Dict[str, Tensor]:
    """Convert a source state dict to exactly ``model``'s keys and shapes.

    Args:
        state_dict (Mapping[str, Tensor]): Source weights.
        source (str): ``'official'``, ``'hf'`` or ``'mmdet'``.
        model (nn.Module): The model to fill (see :func:`build_target_model`).
        keep_91 (bool): Keep 91 class rows. Defaults to False.
        description (str): Names the checkpoint in error messages.

    Returns:
        dict[str, Tensor]: ``model.load_state_dict(..., strict=True)``-ready.

    Raises:
        CheckpointMismatchError: Any key not converted, not filled, extra,
            shape-mismatched or filled twice (all of them listed).
    """
    return check_and_fill(rename_to_ours(state_dict, source, keep_91),
                          model.state_dict(), description)


def convert_checkpoint(src: PathLike, dst: PathLike, source: str,
                       keep_91: bool = False,
                       config: Union[PathLike, Config, None] = None,
                       cfg_options: Optional[dict] = None
                       ) -> Dict[str, Any]:
    """Convert a checkpoint file to one our configs load.

    Args:
        src (str | Path): The source checkpoint (file, or Hugging Face folder).
        dst (str | Path): Where to write ``{'state_dict': ..., 'meta': ...}``.
        source (str): ``'official'``, ``'hf'`` or ``'mmdet'``.
        keep_91 (bool): Keep the 91 class rows indexed by COCO category id;
            the model is then built with ``num_classes=91``, and loading the
            result needs a config with ``model.bbox_head.num_classes=91``.
            Defaults to False (80 rows in mmdet COCO label order).
        config (str | Path | Config, optional): The config whose model the
            result must fill. Defaults to :data:`DEFAULT_CONFIG`.
        cfg_options (dict, optional): Overrides of ``config``.

    Returns:
        dict: What was written: ``state_dict`` and ``meta``.
    """
    model = build_target_model(
        config, cfg_options, NUM_CATEGORY_ID_ROWS if keep_91 else None)
    state_dict = convert_state_dict(
        load_source_state_dict(src, source), source, model, keep_91,
        description=f'{str(src)!r} (--from {source})')
    num_classes = model.bbox_head.num_classes
    classes = list(CocoDataset.METAINFO['classes'])
    meta: Dict[str, Any] = dict(
        converted_from=source, source_file=Path(src).name,
        converter=f'cdetr_mmdet {__version__} tools/convert_checkpoint.py',
        class_rows=('COCO category id' if keep_91 else 'mmdet label'))
    if keep_91:
        meta['dataset_meta'] = dict(classes=category_id_class_names(classes))
    elif num_classes == len(classes):
        meta['dataset_meta'] = dict(classes=classes)
    save_checkpoint(state_dict, dst, meta)
    return dict(state_dict=state_dict, meta=meta)
