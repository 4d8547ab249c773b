"""Inference speed of the deployed model against mmdet's and ours in PyTorch.

Variants, all with the same random weights (mmdet's, copied into ours):

* ``mmdet``: mmdet's built-in ConditionalDETR, PyTorch fp32,
  ``model(..., mode='predict')`` under ``torch.no_grad``;
* ``ours``: our detector, the same;
* ``ours:onnxruntime``, ``ours:openvino`` (OpenVINO's default precision
  hint), ``ours:openvino-fp32``: our detector exported once with
  ``tools/export_onnx.py``'s exporter (dynamic shapes, verified against
  PyTorch), timed on ``runner.infer`` (the graph: model + top-k; the NumPy
  resize/normalise is not timed, as mmdet's data preprocessor is not);
* ``ours:openvino-int8``, ``ours:onnxruntime-int8``: that export quantised
  to INT8 with NNCF (``tools/export_onnx.py --int8``'s recipe, calibrated
  on ``--calib`` random normalised images of the first setting: random
  weights make accuracy meaningless here, speed is what is measured);
* on CPUs with bf16 (``avx512_bf16`` or ``amx_bf16`` in the CPU flags):
  ``ours:openvino-bf16`` (``INFERENCE_PRECISION_HINT`` bf16) and
  ``ours:bf16`` (PyTorch ``torch.autocast('cpu', torch.bfloat16)``).

The CPU's flags that decide the fast paths (avx2, avx512f, avx512_vnni,
avx_vnni, avx512_bf16, amx_*) are printed and stored in the JSON.

Each setting (``BxHxW``: batch, height, width) runs every variant ALTERNATELY
step by step, so load from other processes hits all alike; every variant's
detections are compared to ``ours`` (scores, boxes as a fraction of the
image size, labels tie-aware, ranks whose scores are within 1e-3 count as
ties: random weights give many near-equal scores). Defaults: R50, 6+6 layers, 300 queries, 80
classes, settings ``1x800x1216`` (one deployment-size image) and
``2x512x512``, 2 threads.

    python benchmarks/speed_deploy.py --threads 2 --out speed_deploy.json
    python benchmarks/speed_deploy.py --quick      # tiny smoke run (tests)
"""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import _models

from cdetr_mmdet.deploy import OpenVINORunner, build_runner
from cdetr_mmdet.deploy.compare import compare_detections
from cdetr_mmdet.deploy.exporter import export_onnx
from cdetr_mmdet.deploy.quantize import quantize_samples

# ONNX variants: (graph precision, runner backend, OpenVINO precision hint).
ONNX_VARIANTS = {
    'ours:onnxruntime': ('fp32', 'onnxruntime', None),
    'ours:openvino': ('fp32', 'openvino', None),
    'ours:openvino-fp32': ('fp32', 'openvino', 'f32'),
    'ours:openvino-bf16': ('fp32', 'openvino', 'bf16'),
    'ours:openvino-int8': ('int8', 'openvino', None),
    'ours:onnxruntime-int8': ('int8', 'onnxruntime', None)}
BF16_VARIANTS = ('ours:bf16', 'ours:openvino-bf16')
VARIANTS = ('mmdet', 'ours', 'ours:bf16', *ONNX_VARIANTS)
FLAGS_OF_INTEREST = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni',
                     'avx512_bf16', 'amx_bf16', 'amx_int8', 'amx_tile')


def cpu_flags():
    """The fast-path CPU flags of this machine: {flag: present}."""
    flags = set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
                    break
    except OSError:  # not Linux: unknown, reported as absent
        pass
    return {flag: flag in flags for flag in FLAGS_OF_INTEREST}


def default_variants(flags):
    """Every variant; the bf16 ones only where the CPU has bf16, the INT8
    ones only where NNCF is installed (the ``int8`` extra)."""
    import importlib.util
    has_bf16 = flags['avx512_bf16'] or flags['amx_bf16']
    has_nncf = importlib.util.find_spec('nncf') is not None
    if not has_nncf:
        print("INT8 rows skipped: nncf is not installed (pip install -e "
              "'.[int8]')")
    return [v for v in VARIANTS
            if (has_bf16 or v not in BF16_VARIANTS)
            and (has_nncf or not v.endswith('-int8'))]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--layers', type=int, default=6)
    parser.add_argument('--queries', type=int, default=300)
    parser.add_argument('--settings', default='1x800x1216,2x512x512',
                        help='comma-separated BxHxW')
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--variants', default=None,
                        help='comma-separated; default all (bf16 ones only '
                        'on CPUs with bf16)')
    parser.add_argument('--calib', type=int, default=4,
                        help='calibration inputs of the INT8 variants')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true',
                        help='R18, 1 layer, 10 queries, 1x64x96 and 2x64x64, '
                        '2 steps: a smoke run, not a measurement')
    parser.add_argument('--out', default=None, help='write JSON here')
    args = parser.parse_args(argv)
    if args.quick:
        args.depth, args.layers, args.queries = 18, 1, 10
        args.settings, args.steps, args.warmup = '1x64x96,2x64x64', 2, 1
    args.settings = [tuple(int(v) for v in s.lower().split('x'))
                     for s in args.settings.split(',')]
    args.cpu_flags = cpu_flags()
    args.variants = (args.variants.split(',') if args.variants
                     else default_variants(args.cpu_flags))
    bad = set(args.variants) - set(VARIANTS)
    if bad:
        parser.error(f'unknown variants {sorted(bad)}; choose from '
                     f'{", ".join(VARIANTS)}')
    return args


def torch_outputs(samples):
    """(scores, labels, boxes) arrays of a batch of DetDataSamples.

    Scores and boxes come back in float32: under bf16 autocast
    (``ours:bf16``) they are bfloat16, which NumPy has no type for.
    """
    def array(tensor):
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()

    inst = [s.pred_instances for s in samples]
    return tuple(np.stack([array(getattr(i, key)) for i in inst])
                 for key in ('scores', 'labels', 'bboxes'))


def main(argv=None):
    args = parse_args(argv)
    print('CPU flags: ' + ', '.join(
        f'{flag} {"yes" if have else "no"}'
        for flag, have in args.cpu_flags.items()))
    torch.set_num_threads(args.threads)
    kwargs = dict(depth=args.depth, num_layers=args.layers,
                  num_queries=args.queries)
    models = {'mmdet': _models.build_model('mmdet', args.seed, **kwargs),
              'ours': _models.build_model('ours', args.seed + 1, **kwargs)}
    _models.load_mmdet_weights(models['ours'],
                               models['mmdet'].state_dict())
    for model in models.values():
        model.eval()
    cfg = _models.Config.fromfile(str(_models.OURS_CFG))
    cfg.model = _models.model_cfg('ours', **kwargs)
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_variants = [v for v in args.variants if v in ONNX_VARIANTS]
        if onnx_variants:
            path = os.path.join(tmp, 'model.onnx')
            _, height, width = args.settings[0]
            start = time.perf_counter()
            export_onnx(models['ours'], cfg, path, (height, width),
                        dynamic=True)
            print(f'export + verification: {time.perf_counter() - start:.1f} s')
            paths = dict(fp32=path)
            if any(ONNX_VARIANTS[v][0] == 'int8' for v in onnx_variants):
                paths['int8'] = os.path.join(tmp, 'model.int8.onnx')
                rng = np.random.default_rng(args.seed)
                samples = [dict(inputs=rng.standard_normal(
                    (1, 3, height, width)).astype(np.float32),
                    mask=np.zeros((1, height, width), bool))
                    for _ in range(args.calib)]
                start = time.perf_counter()
                quantize_samples(path, paths['int8'], samples)
                print(f'INT8 quantisation: {time.perf_counter() - start:.1f}'
                      ' s')
            for name in onnx_variants:
                graph, backend, hint = ONNX_VARIANTS[name]
                if backend == 'openvino':
                    runners[name] = OpenVINORunner(
                        paths[graph], cfg, args.threads, precision=hint)
                else:
                    runners[name] = build_runner(backend, paths[graph], cfg,
                                                 num_threads=args.threads)
        results = {}
        for batch, height, width in args.settings:
            key = f'{batch}x{height}x{width}'
            inputs, samples = _models.make_inputs(batch, height, width,
                                                  num_classes=80,
                                                  seed=args.seed)
            mask = np.zeros((batch, height, width), bool)
            sizes = np.array([[height, width]] * batch)

            def step(name):
                if name in runners:
                    return runners[name].infer(inputs.numpy(), mask)
                autocast = torch.autocast('cpu', dtype=torch.bfloat16,
                                          enabled=name == 'ours:bf16')
                with torch.no_grad(), autocast:
                    return torch_outputs(models[name.split(':')[0]](
                        inputs, samples, mode='predict'))

            times = {name: [] for name in args.variants}
            outputs = {}
            for i in range(args.warmup + args.steps):
                for name in args.variants:
                    start = time.perf_counter()
                    outputs[name] = step(name)
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - start)
            ref = outputs.get('ours') or step('ours')
            base = statistics.median(times['mmdet']) if (
                'mmdet' in times) else None
            res = {}
            print(f'\n{key} (R{args.depth}, {args.layers}+{args.layers} '
                  f'layers, {args.queries} queries, {args.threads} threads)')
            print(f'{"variant":<20} {"median ms":>10} {"min ms":>8} '
                  f'{"x mmdet":>8} {"score diff":>11} {"box diff":>9} '
                  f'{"labels":>7}')
            for name in args.variants:
                diffs = compare_detections(ref, outputs[name], sizes, tol=1e-3)
                med = statistics.median(times[name])
                res[name] = dict(
                    median_ms=1e3 * med, min_ms=1e3 * min(times[name]),
                    max_ms=1e3 * max(times[name]), n=len(times[name]),
                    ratio_vs_mmdet=med / base if base else None,
                    diff_vs_ours=diffs)
                ratio = f'{med / base:.2f}' if base else '-'
                print(f'{name:<20} {1e3 * med:>10.1f} '
                      f'{1e3 * min(times[name]):>8.1f} {ratio:>8} '
                      f'{diffs["score"]:>11.1e} {diffs["box"]:>9.1e} '
                      f'{diffs["label_mismatches"]:>7}')
            results[key] = res
    precision = {n: r.inference_precision for n, r in runners.items()
                 if hasattr(r, 'inference_precision')}
    report = dict(
        config=dict(depth=args.depth, layers=args.layers,
                    queries=args.queries, steps=args.steps,
                    warmup=args.warmup, threads=args.threads,
                    variants=args.variants,
                    settings=[f'{b}x{h}x{w}' for b, h, w in args.settings]),
        machine=dict(cpu=platform.processor() or platform.machine(),
                     cpu_flags=args.cpu_flags,
                     logical_cpus=os.cpu_count(),
                     torch=torch.__version__, load_avg=os.getloadavg()),
        openvino_precision=precision, results=results)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f'wrote {args.out}')
    return report


if __name__ == '__main__':
    main()
