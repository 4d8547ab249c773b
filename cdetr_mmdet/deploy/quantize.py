"""INT8 post-training quantisation of an export with NNCF (QDQ ONNX).

NNCF's ONNX backend inserts QuantizeLinear/DequantizeLinear pairs around the
convolutions and matrix products, calibrated on real preprocessed images;
the result is still one ``.onnx`` file with the export's metadata
(``cdetr.precision`` set to ``int8``), so the config-based runners and
``cdetr_runtime`` run it unchanged: OpenVINO executes the QDQ pattern as int8
kernels, ONNX Runtime's CPU provider as QLinear ops.

Which layers stay in float was decided by measuring the demo model's AP
(docs/deploy.md): :data:`DEFAULT_FLOAT_PATTERNS`.
"""
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from .requirements import import_optional

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# Node-name regexes (torchscript export names: /module/path/OpType) kept in
# float by default, found by measurement on the demo model (docs/deploy.md):
# the decoder's conditional cross-attention (all its projections and both
# attention MatMuls; quantising it alone cost the whole AP drop, no single
# node of it did) and the head (class Linear, box MLP, inverse_sigmoid).
DEFAULT_FLOAT_PATTERNS: Tuple[str, ...] = ('.*bbox_head.*',
                                           '.*/cross_attn/.*')


def calibration_images(cfg, num: int, folder: Optional[str] = None
                       ) -> List[str]:
    """Paths of ``num`` calibration images.

    Args:
        cfg (Config): The model's config; without ``folder`` its
            ``val_dataloader`` dataset gives the images (the first ``num``).
        num (int): How many.
        folder (str, optional): Take the first ``num`` images of this
            folder (sorted by name) instead.

    Raises:
        FileNotFoundError: The folder holds no images.
    """
    if folder is not None:
        paths = sorted(str(p) for p in Path(folder).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(
                f'no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
        return paths[:num]
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    return [dataset.get_data_info(i)['img_path']
            for i in range(min(num, len(dataset)))]


def quantize_int8(fp32_path: str, out_path: str, images: Sequence[str],
                  float_patterns: Iterable[str] = DEFAULT_FLOAT_PATTERNS,
                  smooth_quant: bool = True, log=print) -> dict:
    """Quantise an exported ``.onnx`` to INT8 (QDQ), calibrated on images.

    Args:
        fp32_path (str): The fp32 export (tools/export_onnx.py).
        out_path (str): Where to write the INT8 ``.onnx``.
        images (Sequence[str]): Calibration images, preprocessed one at a
            time exactly as at inference (the file's own metadata, via
            ``cdetr_runtime``).
        float_patterns (Iterable[str]): Regexes of node names kept in float
            (NNCF ``IgnoredScope(patterns=...)``). Defaults to
            :data:`DEFAULT_FLOAT_PATTERNS`.
        smooth_quant (bool): NNCF's SmoothQuant (TRANSFORMER model type:
            migrates activation outliers into the weights). Defaults to True.
        log (callable): Progress printer. Defaults to print.

    Returns:
        dict: ``quantized_nodes`` (QuantizeLinear count), ``float_patterns``.
    """
    from cdetr_runtime import Preprocessor, read_model_info
    if not images:
        raise ValueError('no calibration images')
    pre = Preprocessor(read_model_info(fp32_path))
    samples = []
    for i, path in enumerate(images):
        inputs, mask, _ = pre([path], offset=i)
        samples.append(dict(inputs=inputs, mask=mask))
    return quantize_samples(fp32_path, out_path, samples, float_patterns,
                            smooth_quant, log)


def quantize_samples(fp32_path: str, out_path: str, samples: List[dict],
                     float_patterns: Iterable[str] = DEFAULT_FLOAT_PATTERNS,
                     smooth_quant: bool = True, log=print) -> dict:
    """:func:`quantize_int8` on preprocessed batches.

    Args:
        samples (list[dict]): Graph inputs ``inputs`` (1, 3, H, W) float32
            and ``mask`` (1, H, W) bool, e.g. from ``cdetr_runtime``'s
            ``Preprocessor``.
        fp32_path, out_path, float_patterns, smooth_quant, log: See
            :func:`quantize_int8`.
    """
    onnx = import_optional('onnx')
    try:
        nncf = import_optional('nncf')
    except ImportError as err:
        raise ImportError("--int8 needs NNCF: pip install -e '.[int8]' (or "
                          'pip install nncf)') from err
    model = onnx.load(fp32_path)
    untied = untie_shared_weights(model)
    if untied:
        log(f'INT8: {untied} shared weight uses given their own copies')
    patterns = list(float_patterns)
    log(f'INT8: calibrating on {len(samples)} images; kept in float: '
        f'{patterns or "nothing"}')
    advanced = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(
            matmul=0.95 if smooth_quant else -1))
    quantized = nncf.quantize(
        model, nncf.Dataset(samples), subset_size=len(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False)
        if patterns else None,
        advanced_parameters=advanced)
    for prop in quantized.metadata_props:
        if prop.key == 'cdetr.precision':
            prop.value = '"int8"'
    out_path = Path(out_path)
    tmp = out_path.with_name(f'.{out_path.name}.{os.getpid()}.tmp')
    onnx.save(quantized, str(tmp))
    os.replace(tmp, out_path)
    count = sum(n.op_type == 'QuantizeLinear' for n in quantized.graph.node)
    log(f'wrote {out_path} ({count} QuantizeLinear nodes)')
    return dict(quantized_nodes=count, float_patterns=patterns)


def untie_shared_weights(model) -> int:
    """Give every ``Identity`` of an initializer its own copy of the tensor.

    torch's ONNX export writes a parameter used by several calls once and
    routes the later uses through ``Identity`` nodes: the decoder's
    ``query_scale`` MLP, called by layers 2 to L, is one such (so every
    config with 3 or more decoder layers, all the R50 ones, has them). NNCF's
    SmoothQuant finds no weight behind an ``Identity`` (``AttributeError:
    'NoneType' object has no attribute 'shape'``), and one tensor smoothed
    for several inputs would be wrong for all but one; with a copy per use
    each matrix product is smoothed and quantised on its own. The float
    values, hence the fp32 graph's outputs, do not change.

    Args:
        model (onnx.ModelProto): Changed in place.

    Returns:
        int: How many ``Identity`` nodes were replaced by copies.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    outputs = {out.name for out in model.graph.output}
    kept, copies = [], []
    for node in model.graph.node:
        if (node.op_type == 'Identity' and node.input[0] in initializers
                and node.output[0] not in outputs):
            copy = type(initializers[node.input[0]])()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            copies.append(copy)
        else:
            kept.append(node)
    if copies:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.initializer.extend(copies)
    return len(copies)


def int8_path(out_path: str) -> str:
    """Default INT8 file next to the fp32 one: ``demo.onnx`` ->
    ``demo.int8.onnx``."""
    path = Path(out_path)
    return str(path.with_name(path.stem + '.int8' + path.suffix))
