"""What an exported file records about its model, and checks against a config.

``tools/export_onnx.py`` writes these as ONNX ``metadata_props``; a runner
reads them back to refuse a config that does not describe the model.
"""
import json
from pathlib import Path
from typing import Dict, Union

from mmengine.config import Config

# The runtime is torch-free (and this module of it needs no OpenCV).
from cdetr_runtime.model_file import FORMAT_VERSION, ModelInfo, parse_model_info

from .preprocess import config_preprocessing
from .requirements import import_optional

# Keys compared between the ONNX file and the config a runner is given.
MODEL_KEYS = ('num_classes', 'num_queries', 'embed_dims')


def model_info(cfg: Config) -> Dict[str, Union[int, list]]:
    """The facts about a config's model an exported file must agree with.

    Args:
        cfg (Config): A full config (``model`` and, for the class names,
            ``test_dataloader``).

    Returns:
        dict: ``num_classes``, ``num_queries``, ``embed_dims`` and ``classes``
        (the test set's class names, [] when the config gives none).
    """
    model = cfg.model
    classes = (cfg.get('test_dataloader', {}).get('dataset', {})
               .get('metainfo', {}).get('classes', ()))
    return dict(num_classes=int(model.bbox_head.num_classes),
                num_queries=int(model.num_queries),
                embed_dims=int(model.bbox_head.get('embed_dims', 256)),
                classes=list(classes))


def metadata_props(cfg: Config, max_per_img: int,
                   precision: str = 'fp32') -> Dict[str, str]:
    """ONNX ``metadata_props`` of an export, as JSON strings.

    Besides ``model_info``, everything ``cdetr_runtime`` needs to run the
    file without the config: the test ``Resize`` (scale, keep_ratio,
    interpolation), ``model.data_preprocessor`` (mean, std, bgr_to_rgb,
    pad_size_divisor, pad_value), ``test_cfg.score_thr``, the graph's
    precision and the export format version (``cdetr_runtime``'s
    ``FORMAT_VERSION``, which the runtime checks).

    Args:
        cfg (Config): The full config of the exported model.
        max_per_img (int): Top-k of the graph.
        precision (str): 'fp32', or 'int8' for a quantised graph.

    Returns:
        dict: ``cdetr.<key>`` -> JSON value.
    """
    info = dict(
        model_info(cfg), max_per_img=int(max_per_img),
        format_version=FORMAT_VERSION, **config_preprocessing(cfg),
        score_thr=float(cfg.model.get('test_cfg', {}).get('score_thr', 0.)),
        precision=precision)
    return {f'cdetr.{key}': json.dumps(value) for key, value in info.items()}


def config_model_info(cfg: Config) -> ModelInfo:
    """What an export of ``cfg`` records, decoded as ``cdetr_runtime`` does.

    The config-based runners preprocess with ``cdetr_runtime.Preprocessor``
    built from this, so a runner given the config and the runtime given the
    file compute the same pixels by the same code.

    Args:
        cfg (Config): The full config of the model.

    Returns:
        cdetr_runtime.ModelInfo: The preprocessing, score threshold, classes
        and model facts (``max_per_img`` from ``test_cfg``, default 100).

    Raises:
        KeyError, ValueError: See ``config_preprocessing``.
    """
    max_per_img = cfg.model.get('test_cfg', {}).get('max_per_img', 100)
    return parse_model_info(metadata_props(cfg, max_per_img),
                            getattr(cfg, 'filename', None) or '<config>')


def read_metadata(path: Union[str, Path]) -> dict:
    """Open an ONNX file, with clear errors, and return its ``cdetr.*`` info.

    Args:
        path (str | Path): The ``.onnx`` file.

    Returns:
        dict: The decoded ``cdetr.*`` metadata (keys without the prefix).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an ONNX model, or not one from tools/export_onnx.py.
    """
    onnx = import_optional('onnx')
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ONNX model not found: {path}')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise ValueError(
            f'{path} is not a valid ONNX model ({type(err).__name__}: {err}); '
            're-export it with tools/export_onnx.py') from err
    if not model.graph.node:
        raise ValueError(f'{path} is not a valid ONNX model (empty graph); '
                         're-export it with tools/export_onnx.py')
    meta = {p.key[len('cdetr.'):]: json.loads(p.value)
            for p in model.metadata_props if p.key.startswith('cdetr.')}
    if not meta:
        raise ValueError(f'{path} has no cdetr.* metadata: export it with '
                         'tools/export_onnx.py')
    return meta


def check_config_matches(meta: dict, cfg: Config, model_path: str,
                         config_name: str) -> None:
    """Raise if ``cfg`` does not describe the exported model.

    Raises:
        ValueError: Naming every key that differs, with both values.
    """
    info = model_info(cfg)
    diffs = [f'{key}: {meta.get(key)} in the model, {info[key]} in the '
             'config' for key in MODEL_KEYS if meta.get(key) != info[key]]
    if info['classes'] and meta.get('classes') and (
            meta['classes'] != info['classes']):
        diffs.append(f'classes: {meta["classes"]} in the model, '
                     f'{info["classes"]} in the config')
    if diffs:
        raise ValueError(f'config {config_name} does not match the model '
                         f'{model_path}: ' + '; '.join(diffs))
