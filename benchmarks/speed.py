"""Speed and memory of our Conditional DETR against mmdet's built-in one.

Both models are built in one process with the same random weights (mmdet's,
copied into ours with ``convert_mmdet_state_dict``), get the same synthetic
batch, and are timed ALTERNATELY step by step, so that load from other
processes hits both alike. Reported per model ("variant"):

* train: forward + loss, backward, AdamW step with our config's param groups
  (backbone lr x0.1) and grad-norm clip 0.1, through an mmengine OptimWrapper;
* infer: ``model(..., mode='predict')`` under ``torch.no_grad``;
* memory: the peak growth during a few training steps over the memory held
  between steps (weights, AdamW state), after one warm-up step, each variant
  in a fresh subprocess since peaks are process-wide (CPU: peak RSS, reset
  through ``/proc/self/clear_refs``, minus the RSS before; CUDA:
  ``max_memory_allocated`` minus ``memory_allocated`` before).

Variants are ``NAME[:OPT[+OPT]]`` with NAME ``mmdet`` or ``ours`` and OPT
``amp`` (bf16 autocast on CPU via ``CdetrCPUAmpOptimWrapper``, ``--amp-dtype``
on CUDA via ``AmpOptimWrapper``; inference under ``torch.autocast``) or
``cl`` (our detector's ``channels_last=True``). Ratios are against the plain
``mmdet`` variant. ``--breakdown`` also times backbone+neck, encoder,
decoder (forward+backward each), head+loss (with the matcher inside) and the
optimiser step separately.

Example (the defaults: R50, batch 2, 512x512 on CPU, 800x1216 on CUDA)::

    python benchmarks/speed.py --threads 2 --out speed.json
    python benchmarks/speed.py --variants mmdet,ours,ours:amp+cl --breakdown
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _models  # noqa: E402
from cdetr_mmdet.models import CdetrConditionalDETR  # noqa: E402

STAGES = ('backbone+neck', 'encoder', 'decoder', 'head+loss', 'matcher',
          'optimizer')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--size', default=None,
                        help='H or HxW (default 512 on CPU, 800x1216 CUDA)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--layers', type=int, default=6,
                        help='encoder and decoder layers')
    parser.add_argument('--queries', type=int, default=300)
    parser.add_argument('--num-gts', type=int, default=5,
                        help='ground-truth boxes per image')
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--memory-steps', type=int, default=3,
                        help='training steps per memory subprocess')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--variants', default='mmdet,ours')
    parser.add_argument('--amp', action='store_true',
                        help='add ":amp" to every variant')
    parser.add_argument('--channels-last', action='store_true',
                        help='add ":cl" to every "ours" variant')
    parser.add_argument('--amp-dtype', default=None,
                        help='CUDA autocast dtype (float16 | bfloat16); '
                        'CPU is always bfloat16')
    parser.add_argument('--breakdown', action='store_true')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write JSON here')
    parser.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = '512' if args.device == 'cpu' else '800x1216'
    hw = [int(v) for v in args.size.lower().split('x')]
    args.height, args.width = hw if len(hw) == 2 else hw * 2
    if args.amp_dtype is None:
        args.amp_dtype = 'bfloat16' if args.device == 'cpu' else 'float16'
    names = []
    for name in args.variants.split(','):
        base, _, opts = name.partition(':')
        opts = set(filter(None, opts.split('+')))
        opts |= {'amp'} if args.amp else set()
        opts |= {'cl'} if args.channels_last and base == 'ours' else set()
        if base not in ('mmdet', 'ours') or opts - {'amp', 'cl'}:
            parser.error(f'bad variant {name!r}')
        if base == 'mmdet' and 'cl' in opts:
            parser.error('"cl" is an option of our detector only')
        names.append(base + (':' + '+'.join(sorted(opts)) if opts else ''))
    args.variants = list(dict.fromkeys(names))
    return args


class Variant:
    """One model with its optimiser, inputs and autocast context."""

    def __init__(self, name, model, args):
        self.name = name
        base, _, opts = name.partition(':')
        self.amp = 'amp' in opts.split('+')
        self.model = model.to(args.device)
        self.optim = _models.build_optimizer(
            self.model, args.amp_dtype if self.amp else None, args.device)
        self.inputs, self.samples = _models.make_inputs(
            args.batch, args.height, args.width, args.num_gts,
            self.model.bbox_head.num_classes, args.seed, args.device)
        self.device = args.device
        self.amp_dtype = getattr(torch, args.amp_dtype)
        self.times = {'train': [], 'infer': []}
        self.stages = {stage: [] for stage in STAGES}

    def autocast(self):
        return (torch.autocast(self.device, dtype=self.amp_dtype)
                if self.amp else contextlib.nullcontext())

    def train_step(self):
        self.model.train()
        with self.optim.optim_context(self.model):
            losses = self.model(self.inputs, self.samples, mode='loss')
        loss, _ = self.model.parse_losses(losses)
        self.optim.update_params(loss)

    def infer_step(self):
        self.model.eval()
        with torch.no_grad(), self.autocast():
            self.model(self.inputs, self.samples, mode='predict')

    def breakdown_step(self, sync):
        """Time each stage (forward + backward) on detached inputs."""
        model, times = self.model, {}
        model.train()
        # Ours holds a matcher (``match``), mmdet's head an assigner.
        assigner = getattr(model.bbox_head, 'matcher', None) or \
            model.bbox_head.assigner
        method = 'match' if hasattr(assigner, 'match') else 'assign'
        original = getattr(assigner, method)
        matcher_time = [0.]

        def timed(*a, **kw):
            sync()
            start = time.perf_counter()
            out = original(*a, **kw)
            sync()
            matcher_time[0] += time.perf_counter() - start
            return out

        def stage(name, fn):
            sync()
            start = time.perf_counter()
            out = fn()
            sync()
            times[name] = time.perf_counter() - start
            return out

        def detach(x):
            return x.detach().requires_grad_(x.is_floating_point())

        def backbone():
            with self.autocast():
                feats = model.extract_feat(self.inputs)
            sum(f.float().sum() for f in feats).backward()
            return feats

        # Ours passes explicit arguments between its steps, mmdet's dicts.
        ours = isinstance(model, CdetrConditionalDETR)

        def encoder():
            with self.autocast():
                if ours:
                    feat, mask, pos = model.pre_transformer(
                        detach(feats[-1]), self.samples)
                    enc_out = dict(memory=model.forward_encoder(
                        feat, mask, pos))
                    dec_in = dict(memory_mask=mask, memory_pos=pos)
                else:
                    enc_in, dec_in = model.pre_transformer(
                        tuple(detach(f) for f in feats), self.samples)
                    enc_out = model.forward_encoder(**enc_in)
            enc_out['memory'].float().sum().backward()
            return enc_out, dec_in

        def decoder():
            memory = detach(enc_out['memory'])
            with self.autocast():
                if ours:
                    query, query_pos = model.pre_decoder(memory.shape[0])
                    hidden_states, references = model.forward_decoder(
                        query, query_pos, memory, dec_in['memory_mask'],
                        dec_in['memory_pos'])
                    head_in = dict(hidden_states=hidden_states,
                                   references=references)
                else:
                    tmp_dec_in, head_in = model.pre_decoder(memory=memory)
                    dec_in.update(tmp_dec_in)
                    head_in.update(model.forward_decoder(**dec_in))
            sum(v.float().sum() for v in head_in.values()).backward()
            return head_in

        def head():
            with self.autocast():
                losses = model.bbox_head.loss(
                    **{k: detach(v) for k, v in head_in.items()},
                    batch_data_samples=self.samples)
            model.parse_losses(losses)[0].backward()

        feats = stage('backbone+neck', backbone)
        enc_out, dec_in = stage('encoder', encoder)
        head_in = stage('decoder', decoder)
        setattr(assigner, method, timed)
        try:
            stage('head+loss', head)
        finally:
            delattr(assigner, method)
        times['matcher'] = matcher_time[0]
        stage('optimizer', lambda: (self.optim.step(), self.optim.zero_grad()))
        return times


def summary(values):
    return dict(median=statistics.median(values), min=min(values),
                max=max(values), n=len(values), values=values)


def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def build_variants(args):
    """All variants with the same random weights (mmdet's, one seed)."""
    size = dict(depth=args.depth, num_layers=args.layers,
                num_queries=args.queries)
    state = _models.build_model('mmdet', args.seed, **size).state_dict()
    variants = []
    for name in args.variants:
        # A fresh model per variant: their optimisers diverge.
        base, _, opts = name.partition(':')
        model = _models.build_model(base, args.seed, channels_last='cl' in opts,
                                    **size)
        _models.load_mmdet_weights(model, state)
        variants.append(Variant(name, model, args))
    return variants


def _vm_hwm_bytes():
    """The process's peak RSS since the last reset (``VmHWM``)."""
    with open('/proc/self/status') as f:
        line = next(line for line in f if line.startswith('VmHWM'))
    return int(line.split()[1]) * 1024


def _reset_peak_rss():
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False if refused."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def measure_memory_child(args):
    """Peak memory growth of a few training steps of one variant.

    One warm-up step first allocates the optimiser state and lazily loaded
    kernels; then the peak over ``--memory-steps`` steps is taken relative to
    the memory held between steps (weights, gradients freed, AdamW state).
    """
    base, _, opts = args.memory_child.partition(':')
    model = _models.build_model(
        base, args.seed, depth=args.depth, num_layers=args.layers,
        num_queries=args.queries, channels_last='cl' in opts)
    variant = Variant(args.memory_child, model, args)
    variant.train_step()
    gc.collect()
    if args.device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before, method = torch.cuda.memory_allocated(), 'max_memory_allocated'
    else:
        before = rss_bytes()
        build_peak = _vm_hwm_bytes()
        method = 'VmHWM' if _reset_peak_rss() else 'ru_maxrss'
    for _ in range(args.memory_steps):
        variant.train_step()
    if args.device == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    elif method == 'VmHWM':
        peak = _vm_hwm_bytes()
    else:  # cannot reset the peak: may include the build's
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # ru_maxrss survives exec (it would include the parent's peak): VmHWM.
    process_peak = (peak if args.device == 'cuda' else
                    max(build_peak, _vm_hwm_bytes()))
    print(json.dumps(dict(
        method=method, before_mb=before / 2**20, peak_mb=peak / 2**20,
        growth_mb=(peak - before) / 2**20,
        process_peak_rss_mb=process_peak / 2**20)))


def measure_memory(args, name):
    argv = [a for a in sys.argv[1:] if a != '--breakdown']
    cmd = [sys.executable, os.path.abspath(__file__), *argv,
           '--memory-child', name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine_info(args):
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(),
                torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version())
    if args.device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def ratio(value, reference):
    return value / reference if reference else float('nan')


def report(args, names, results):
    ref = results['variants'].get('mmdet')
    lines = [f"{'variant':<18}{'train s med [min, max]':>26}{'x mmdet':>9}"
             f"{'infer s med [min, max]':>26}{'x mmdet':>9}"
             f"{'mem MB':>9}{'x mmdet':>9}{'RSS MB':>9}"]
    for name in names:
        res = results['variants'][name]
        row = f'{name:<18}'
        for key in ('train', 'infer'):
            t = res[key]
            row += f"{t['median']:>8.3f} [{t['min']:.3f}, {t['max']:.3f}]"
            row += f"{ratio(t['median'], ref[key]['median']):>9.2f}"
        if 'memory' in res:
            mem = res['memory']['growth_mb']
            row += f'{mem:>9.0f}'
            row += f"{ratio(mem, ref['memory']['growth_mb']):>9.2f}"
            row += f"{res['memory']['process_peak_rss_mb']:>9.0f}"
        lines.append(row)
    if args.breakdown:
        lines.append('')
        lines.append(f"{'stage (median s)':<18}" + ''.join(
            f'{name:>16}' for name in names) + f"{'share mmdet':>12}")
        ref_total = sum(ref['breakdown'][s]['median'] for s in STAGES
                        if s != 'matcher')
        for stage in STAGES:
            row = f'{stage:<18}' + ''.join(
                f"{results['variants'][name]['breakdown'][stage]['median']:>16.4f}"
                for name in names)
            share = ref['breakdown'][stage]['median'] / ref_total
            lines.append(row + f'{share:>12.1%}')
    print('\n'.join(lines))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return measure_memory_child(args)
    if 'mmdet' not in args.variants:
        args.variants.insert(0, 'mmdet')
    sync = (torch.cuda.synchronize if args.device == 'cuda' else
            (lambda: None))
    load_before = os.getloadavg()
    variants = build_variants(args)
    phases = [('train', Variant.train_step), ('infer', Variant.infer_step)]
    for key, fn in phases:
        for step in range(args.warmup + args.steps):
            # Alternate, and flip the order every step (ABBA...).
            order = variants if step % 2 == 0 else variants[::-1]
            for v in order:
                torch.manual_seed(args.seed + step)
                sync()
                start = time.perf_counter()
                fn(v)
                sync()
                if step >= args.warmup:
                    v.times[key].append(time.perf_counter() - start)
            print(f'{key} step {step + 1}/{args.warmup + args.steps}: ' +
                  ', '.join(f'{v.name} {v.times[key][-1]:.3f} s'
                            for v in variants if v.times[key]),
                  file=sys.stderr, flush=True)
    if args.breakdown:
        for step in range(args.warmup + args.steps):
            order = variants if step % 2 == 0 else variants[::-1]
            for v in order:
                torch.manual_seed(args.seed + step)
                times = v.breakdown_step(sync)
                if step >= args.warmup:
                    for stage, t in times.items():
                        v.stages[stage].append(t)
    load_after = os.getloadavg()
    results = dict(config={k: v for k, v in vars(args).items()
                           if k != 'memory_child'},
                   machine=machine_info(args),
                   load_avg=dict(before=load_before, after=load_after),
                   variants={})
    for v in variants:
        res = {key: summary(t) for key, t in v.times.items()}
        if args.breakdown:
            res['breakdown'] = {s: summary(t) for s, t in v.stages.items()}
        results['variants'][v.name] = res
    del variants[1:]  # free memory before the subprocesses
    if not args.no_memory:
        for name in args.variants:
            results['variants'][name]['memory'] = measure_memory(args, name)
    ref = results['variants']['mmdet']
    results['ratios'] = {
        name: {key: ratio(res[key]['median'], ref[key]['median'])
               for key in ('train', 'infer')}
        for name, res in results['variants'].items()}
    if not args.no_memory:
        for name, res in results['variants'].items():
            results['ratios'][name]['memory'] = ratio(
                res['memory']['growth_mb'], ref['memory']['growth_mb'])
    results['load_avg']['after_memory'] = os.getloadavg()
    report(args, args.variants, results)
    print(f"load average before/after: {load_before[0]:.2f} / "
          f"{load_after[0]:.2f}; {results['machine']['cpu']}, "
          f"{results['machine']['torch_threads']} threads")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == '__main__':
    main()
