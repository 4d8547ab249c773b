"""Speed and memory of our Conditional DETR against mmdet's and Hugging Face's.

All models are built in one process and get the same synthetic batch; ours
gets mmdet's random weights (the strict ``convert_state_dict(..., "mmdet", model)``), Hugging Face's
``ConditionalDetrForObjectDetection`` its own random init. They are timed
ALTERNATELY step by step (ABBA order), so that load from other processes hits
all alike. Reported per variant:

* train: forward + loss, backward, AdamW step (backbone lr x0.1, grad-norm
  clip 0.1) through an mmengine OptimWrapper built from each model's own
  config (ours: ``configs/conditional_detr_r50_50e.py``; mmdet and HF:
  mmdet's Conditional DETR config);
* infer: prediction under ``torch.no_grad`` with the post-processing (top-100
  boxes rescaled to the image; HF: ``post_process_object_detection``);
* memory: the peak growth during a few training steps over the memory held
  between steps (weights, AdamW state), after one warm-up step, each variant
  in a fresh subprocess since peaks are process-wide (CPU: peak RSS, reset
  through ``/proc/self/clear_refs``, minus the RSS before; CUDA:
  ``max_memory_allocated`` minus ``memory_allocated`` before).

Variants are ``NAME[:OPT[+OPT]]``: NAME ``mmdet``, ``ours`` or ``hf``; OPT
``amp`` (bf16 autocast on CPU via ``CdetrCPUAmpOptimWrapper``, ``--amp-dtype``
on CUDA via ``AmpOptimWrapper``; inference under ``torch.autocast``), ``cl``
(ours only: ``channels_last=True``), ``opt`` (ours only: predictions
with ``cdetr_mmdet.apis.optimize_for_inference``, i.e. batch norms folded
into the convolutions and channels-last; training as the plain model),
``compile`` (ours only: ``torch.compile`` of encoder, decoder and head, in
place; the first warm-up step includes the compilation, reported as
``first_s``), ``hfrecipe`` (ours only: trained with HF's defaults, no
dropout on the attention weights and losses on the last decoder layer, i.e.
the same work as plain ``hf``) or ``official`` (hf only: the official
recipe, attention dropout 0.1 and losses on every decoder layer; plain ``hf``
is HF's defaults, no attention dropout, losses on the last layer). HF's
backbone stages 2-4 are trainable as in the official code. Ratios are
against ``mmdet`` and ``hf``. ``--breakdown`` also times (ours and mmdet)
backbone+neck, encoder, decoder (forward+backward each), head+loss, the
matcher alone (on the same detached predictions) and the optimiser step.

Group DETR (``ours:gK``, e.g. ``ours:g11``: ``model.group_detr=11``): with a
``gK`` variant, plain ``ours`` (K = 1) is added and becomes a third reference
(``x ours``), and every ``ours`` variant's training FLOPs are counted once
(``torch.utils.flop_counter``: forward + backward; matrix products,
convolutions and attention). Their ratio is the bound the added decoder work
sets (K times the decoder, head and their backward; backbone and encoder
once), printed beside the measured step-time and memory ratios; what the
matching, the losses and the K-group bookkeeping add is the difference.

Example (the defaults: R50, batch 2, 512x512 on CPU, 800x1216 on CUDA)::

    python benchmarks/speed.py --threads 2 --out speed.json
    python benchmarks/speed.py --variants mmdet,ours,ours:amp+cl --breakdown
    python benchmarks/speed.py --variants mmdet,ours,hf --profile 25
    python benchmarks/speed.py --variants ours,ours:g11 --size 512 --profile 25
    python benchmarks/speed.py --variants ours,ours:g11 --size 800x1216
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import _speed_variants as sv

DEFAULT_VARIANTS = 'mmdet,ours,hf,hf:official'
REFERENCES = ('mmdet', 'hf')


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``); variants parsed once."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add = parser.add_argument
    add('--device', default='cpu', choices=['cpu', 'cuda'])
    add('--depth', type=int, default=50)
    add('--size', default=None,
        help='H or HxW (default 512 on CPU, 800x1216 CUDA)')
    add('--batch', type=int, default=2)
    add('--layers', type=int, default=6, help='encoder and decoder layers')
    add('--queries', type=int, default=300)
    add('--num-gts', type=int, default=5, help='ground-truth boxes per image')
    add('--steps', type=int, default=10)
    add('--warmup', type=int, default=3)
    add('--memory-steps', type=int, default=3,
        help='training steps per memory subprocess')
    add('--threads', type=int, default=None,
        help='torch CPU threads (default: torch default)')
    add('--variants', default=DEFAULT_VARIANTS)
    add('--amp', action='store_true', help='add ":amp" to every variant')
    add('--channels-last', action='store_true',
        help='add ":cl" to every "ours" variant')
    add('--amp-dtype', default=None,
        help='CUDA autocast dtype (float16 | bfloat16); CPU is always '
        'bfloat16')
    add('--breakdown', action='store_true')
    add('--no-memory', action='store_true')
    add('--profile', type=int, default=0, metavar='ROWS',
        help='also print the top ROWS self-CPU ops of one profiled training '
        'step per variant (torch.profiler), saved in the JSON')
    add('--seed', type=int, default=0)
    add('--out', default=None, help='write JSON here')
    add('--memory-child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.size is None:
        args.size = '512' if args.device == 'cpu' else '800x1216'
    hw = [int(v) for v in args.size.lower().split('x')]
    args.height, args.width = hw if len(hw) == 2 else hw * 2
    if args.amp_dtype is None:
        args.amp_dtype = 'bfloat16' if args.device == 'cpu' else 'float16'
    try:
        specs = [sv.VariantSpec.parse(text, args.amp, args.channels_last)
                 for text in args.variants.split(',')]
        if args.memory_child:
            args.memory_child = sv.VariantSpec.parse(args.memory_child)
    except ValueError as err:
        parser.error(str(err))
    if args.memory_child is None and 'mmdet' not in [s.name for s in specs]:
        specs.insert(0, sv.VariantSpec('mmdet'))
    if any(s.group_detr > 1 for s in specs) and sv.VariantSpec('ours') \
            not in specs and args.memory_child is None:
        specs.insert(1, sv.VariantSpec('ours'))  # Group DETR's K = 1
    args.variants = list(dict.fromkeys(specs))  # unique, in order
    return args


def summary(values):
    return dict(median=statistics.median(values), min=min(values),
                max=max(values), n=len(values), values=values)


def time_phase(variants, key, fn, args, sync):
    """``warmup + steps`` rounds of ``fn`` over all variants, ABBA order."""
    for step in range(args.warmup + args.steps):
        order = variants if step % 2 == 0 else variants[::-1]
        for v in order:
            torch.manual_seed(args.seed + step)
            times = fn(v)
            if step == 0:  # includes torch.compile's compilation (':compile')
                v.first.update(times)
            if step >= args.warmup:
                for name, t in times.items():
                    v.times.setdefault(name, []).append(t)
        print(f'{key} step {step + 1}/{args.warmup + args.steps}: ' +
              ', '.join(f'{v.spec.name} {v.times[key][-1]:.3f} s'
                        for v in variants if v.times.get(key)),
              file=sys.stderr, flush=True)


def measure_memory(args, spec):
    """Run one variant's memory measurement in a fresh subprocess."""
    argv = [a for a in args.argv if a != '--breakdown']
    cmd = [sys.executable, os.path.abspath(__file__), *argv,
           '--memory-child', spec.name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(value, reference):
    return value / reference if reference else float('nan')


def references(args):
    """mmdet, hf and, with a Group DETR variant, ours (K = 1)."""
    grouped = any(s.group_detr > 1 for s in args.variants)
    return REFERENCES + (('ours', ) if grouped else ())


def collect(args, variants, load, flops=None):
    """The results dict: per-variant summaries, memory and ratios.

    ``flops``: training FLOPs per variant name (Group DETR runs), if any.
    """
    results = dict(config={k: v for k, v in vars(args).items()
                           if k not in ('memory_child', 'argv')},
                   machine=sv.machine_info(args.device), load_avg=load,
                   variants={})
    results['config']['variants'] = [s.name for s in args.variants]
    for v in variants:
        results['variants'][v.spec.name] = {
            key: dict(summary(t), first_s=v.first[key])
            for key, t in v.times.items() if key in ('train', 'infer')}
        if args.breakdown and v.spec.base != 'hf':
            results['variants'][v.spec.name]['breakdown'] = {
                s: summary(v.times[s]) for s in sv.STAGES}
    del variants[:]  # free memory before the subprocesses
    if not args.no_memory:
        for spec in args.variants:
            results['variants'][spec.name]['memory'] = measure_memory(
                args, spec)
    results['ratios'] = {}
    for name, count in (flops or {}).items():
        results['variants'][name]['train_flops'] = count
    for ref_name in references(args):
        ref = results['variants'].get(ref_name)
        if ref is None:
            continue
        results['ratios'][ref_name] = {
            name: {key: ratio(res[key]['median'], ref[key]['median'])
                   for key in ('train', 'infer')}
            for name, res in results['variants'].items()}
        if not args.no_memory:
            for name, res in results['variants'].items():
                results['ratios'][ref_name][name]['memory'] = ratio(
                    res['memory']['growth_mb'], ref['memory']['growth_mb'])
        if 'train_flops' in ref:
            for name, res in results['variants'].items():
                if 'train_flops' in res:
                    results['ratios'][ref_name][name]['train_flops'] = ratio(
                        res['train_flops'], ref['train_flops'])
    results['load_avg']['after_memory'] = os.getloadavg()
    return results


def report(args, results):
    """Print the table (and the breakdown) of ``results``."""
    refs = [r for r in references(args) if r in results['ratios']]
    head = f"{'variant':<16}{'train s med [min, max]':>25}"
    head += ''.join(f'{"x " + r:>8}' for r in refs)
    head += f"{'infer s med [min, max]':>25}"
    head += ''.join(f'{"x " + r:>8}' for r in refs)
    head += f"{'mem MB':>8}" + ''.join(f'{"x " + r:>8}' for r in refs)
    lines = [head + f"{'RSS MB':>8}"]
    for name, res in results['variants'].items():
        row = f'{name:<16}'
        for key in ('train', 'infer'):
            t = res[key]
            row += f"{t['median']:>8.3f} [{t['min']:.3f}, {t['max']:.3f}]"
            row += ''.join(f"{results['ratios'][r][name][key]:>8.2f}"
                           for r in refs)
        if 'memory' in res:
            row += f"{res['memory']['growth_mb']:>8.0f}"
            row += ''.join(f"{results['ratios'][r][name]['memory']:>8.2f}"
                           for r in refs)
            row += f"{res['memory']['process_peak_rss_mb']:>8.0f}"
        lines.append(row)
    for name, res in results['variants'].items():
        if 'train_flops' not in res or name == 'ours':
            continue
        vs = results['ratios']['ours'][name]
        memory = (f", memory x{vs['memory']:.2f}" if 'memory' in vs else '')
        lines.append(
            f"Group DETR {name} vs ours (K = 1): train step x{vs['train']:.2f}"
            f"{memory}, inference x{vs['infer']:.2f}; FLOP bound of the added "
            f"decoder work x{vs['train_flops']:.2f} "
            f"({res['train_flops'] / 1e9:.1f} vs "
            f"{results['variants']['ours']['train_flops'] / 1e9:.1f} GFLOP "
            'per training forward + backward)')
    if args.breakdown:
        lines += ['', sv.breakdown_table(results['variants'])]
    load = results['load_avg']
    lines.append(f"load average (1 min) before/after/after memory: "
                 f"{load['before'][0]:.2f} / {load['after'][0]:.2f} / "
                 f"{load['after_memory'][0]:.2f}; {results['machine']['cpu']}"
                 f", {results['machine']['torch_threads']} threads")
    print('\n'.join(lines))


def main(argv=None):
    """Run the benchmark with ``argv`` (default ``sys.argv[1:]``)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        result = sv.measure_memory_child(args, args.memory_child)
        print(json.dumps(result))
        return result
    sync = (torch.cuda.synchronize if args.device == 'cuda' else
            (lambda: None))
    load = dict(before=os.getloadavg())
    variants = sv.build_variants(args)
    time_phase(variants, 'train', lambda v: {'train': v.train_step(sync)},
               args, sync)
    time_phase(variants, 'infer', lambda v: {'infer': v.infer_step(sync)},
               args, sync)
    if args.breakdown:
        staged = [v for v in variants if v.spec.base != 'hf']
        time_phase(staged, 'optimizer', lambda v: v.breakdown_step(sync),
                   args, sync)
    tables = (sv.profile_tables(variants, sync, args.profile)
              if args.profile else {})
    flops = ({v.spec.name: sv.train_flops(v) for v in variants
              if v.spec.base == 'ours'}
             if 'ours' in references(args) else None)  # Group DETR runs
    load['after'] = os.getloadavg()
    results = collect(args, variants, load, flops)
    results['profiles'] = tables
    for name, table in tables.items():
        print(f'--- {name}: one training step, top self-CPU ops\n{table}')
    report(args, results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == '__main__':
    main()
