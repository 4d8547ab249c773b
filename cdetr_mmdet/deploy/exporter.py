"""Export a Conditional DETR to ONNX and verify it against PyTorch."""
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor

from .compare import compare_detections, within
from .export_model import INPUT_NAMES, OUTPUT_NAMES, CdetrExportModel
from .model_info import metadata_props
from .requirements import import_optional


class ExportMismatchError(RuntimeError):
    """The exported graph does not reproduce PyTorch's detections."""


def example_batch(sizes: Sequence[Tuple[int, int]], pad_shape: Tuple[int, int],
                  seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Random normalised images, zero-padded bottom-right to ``pad_shape``.

    Returns:
        tuple: ``inputs`` (bs, 3, H, W) float32 and ``mask`` (bs, H, W) bool,
        True at padding.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.zeros(len(sizes), 3, *pad_shape)
    mask = torch.ones(len(sizes), *pad_shape, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        inputs[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        mask[i, :h, :w] = False
    return inputs, mask


def verification_batches(shape: Tuple[int, int], batch: int, dynamic: bool
                         ) -> List[Tuple[Tensor, Tensor]]:
    """Batches the export is checked on (seeds other than the trace's).

    Static: one batch of the exported shape, the last image padded. Dynamic
    also: another image size and a batch of two of different sizes.
    """
    h, w = shape
    sizes = [(h, w)] * batch
    if batch > 1:
        sizes[-1] = (h - h // 4, w - w // 8)
    batches = [example_batch(sizes, (h, w), seed=1)]
    if dynamic:
        other = (h - h // 2 + 8, w + w // 4)
        batches.append(example_batch([other], other, seed=2))
        pair = [(h, w - w // 3), (h - h // 3, w)]
        batches.append(example_batch(pair, (h, w), seed=3))
    return batches


def scores_count(outputs: Sequence[np.ndarray]) -> int:
    """Number of detections in a (scores, labels, boxes) batch."""
    return int(np.asarray(outputs[0]).size)


def _run_onnxruntime(path: str, inputs: Tensor, mask: Tensor
                     ) -> List[np.ndarray]:
    ort = import_optional('onnxruntime')
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(list(OUTPUT_NAMES), {'inputs': inputs.numpy(),
                                            'mask': mask.numpy()})


def export_onnx(detector: torch.nn.Module, cfg: Config, out_path: str,
                shape: Tuple[int, int], batch: int = 1, dynamic: bool = False,
                opset: int = 17, max_per_img: Optional[int] = None,
                exporter: str = 'torchscript', tol: float = 1e-4,
                log=print) -> List[Dict[str, float]]:
    """Export, check with ``onnx.checker``, verify with ONNX Runtime, save.

    The graph is written to a temporary file next to ``out_path`` and moved
    there only if ONNX Runtime reproduces PyTorch's detections on every
    verification batch (scores and size-normalised boxes within ``tol``,
    labels equal up to ties); otherwise it is deleted.

    Args:
        detector (nn.Module): A ``CdetrConditionalDETR`` with its weights.
        cfg (Config): Its config (recorded in the file's metadata).
        out_path (str): Where to write the ``.onnx`` file.
        shape (tuple[int, int]): (H, W) of the traced input.
        batch (int): Batch size of the traced input. Defaults to 1.
        dynamic (bool): Dynamic batch, height and width. Defaults to False.
        opset (int): ONNX opset. Defaults to 17.
        max_per_img (int, optional): Top-k of the graph; default the
            config's ``test_cfg.max_per_img``.
        exporter (str): 'torchscript' (``dynamo=False``, fast) or 'dynamo'
            (``torch.export``, needs onnxscript). Defaults to 'torchscript'.
        tol (float): Verification tolerance. Defaults to 1e-4.
        log (callable): Progress printer. Defaults to print.

    Returns:
        list[dict]: Per verification batch, the differences
        (:func:`~cdetr_mmdet.deploy.compare.compare_detections`).

    Raises:
        ExportMismatchError: ONNX Runtime disagrees with PyTorch.
    """
    onnx = import_optional('onnx')
    import_optional('onnxruntime')
    head = detector.bbox_head
    if max_per_img is not None:
        head.max_per_img = max_per_img
    model = CdetrExportModel(detector).eval()  # eval: also after export
    # torch.export specialises dimensions of size 1: trace a dynamic batch
    # with two images.
    trace_batch = max(batch, 2) if dynamic else batch
    trace_inputs = example_batch([shape] * trace_batch, shape, seed=0)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f'.{out_path.name}.{os.getpid()}.tmp')
    dims = {0: 'batch', 2: 'height', 3: 'width'}
    try:
        with torch.no_grad():
            if exporter == 'torchscript':
                torch.onnx.export(
                    model, trace_inputs, str(tmp_path), dynamo=False,
                    input_names=list(INPUT_NAMES),
                    output_names=list(OUTPUT_NAMES), opset_version=opset,
                    dynamic_axes=dict(
                        inputs=dims, mask={0: 'batch', 1: 'height',
                                           2: 'width'},
                        scores={0: 'batch'}, labels={0: 'batch'},
                        boxes={0: 'batch'}) if dynamic else None)
            elif exporter == 'dynamo':
                import_optional('onnxscript')
                auto = torch.export.Dim.DYNAMIC
                torch.onnx.export(
                    model, trace_inputs, str(tmp_path), dynamo=True,
                    external_data=False, input_names=list(INPUT_NAMES),
                    output_names=list(OUTPUT_NAMES), opset_version=opset,
                    dynamic_shapes=dict(
                        inputs={0: auto, 2: auto, 3: auto},
                        mask={0: auto, 1: auto, 2: auto}) if dynamic else None)
            else:
                raise ValueError(f'unknown exporter {exporter!r}; expected '
                                 "'torchscript' or 'dynamo'")
        proto = onnx.load(str(tmp_path))
        onnx.checker.check_model(proto, full_check=True)
        # The dynamo exporter writes its own opset (18) when converting down
        # fails (e.g. "No Adapter To Version $17 for Pad"): say which it is.
        written = next(o.version for o in proto.opset_import
                       if o.domain in ('', 'ai.onnx'))
        note = '' if written == opset else f', not the {opset} asked for'
        log(f'onnx.checker: OK (opset {written}{note}, '
            f'{len(proto.graph.node)} nodes)')
        for key, value in metadata_props(cfg, head.max_per_img).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp_path))

        reports = []
        for inputs, mask in verification_batches(shape, batch, dynamic):
            with torch.no_grad():
                ref = [t.numpy() for t in model(inputs, mask)]
            out = _run_onnxruntime(str(tmp_path), inputs, mask)
            sizes = np.stack([(~mask[:, :, 0]).sum(1).numpy(),
                              (~mask[:, 0, :]).sum(1).numpy()], 1)
            diffs = compare_detections(ref, out, sizes, tol)
            log(f'ONNX Runtime vs PyTorch, batch {tuple(inputs.shape)} '
                f'images {sizes.tolist()}: max |score diff| '
                f'{diffs["score"]:.2e}, max |box diff| {diffs["box"]:.2e} of '
                f'the image size ({diffs["box_px"]:.2e} px), label '
                f'mismatches {diffs["label_mismatches"]} (ties at the top-k '
                f'boundary, not compared: {diffs["boundary_ties"]})')
            reports.append(diffs)
            if diffs['compared'] < scores_count(ref) // 2:
                log('WARNING: most top-k scores tie with the last one (a '
                    'model with random weights?): this check compared only '
                    f'{diffs["compared"]} of {scores_count(ref)} detections')
            if not within(diffs, tol):
                raise ExportMismatchError(
                    f'the exported graph does not match PyTorch (tolerance '
                    f'{tol}): {diffs}; nothing written to {out_path}')
        os.replace(tmp_path, out_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    log(f'wrote {out_path}')
    return reports
