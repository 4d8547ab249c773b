"""The models ``benchmarks/speed.py`` times: parsing, building, one step each."""
import contextlib
import copy
import dataclasses
import gc
import os
import platform
import re
import resource
import time
from typing import Callable, Dict

import torch
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh
from mmengine.structures import InstanceData

import _models
from cdetr_mmdet.apis import optimize_for_inference
from cdetr_mmdet.models import CdetrConditionalDETR

STAGES = ('backbone+neck', 'encoder', 'decoder', 'head+loss', 'matcher',
          'optimizer')
OPTIONS = {'amp': ('mmdet', 'ours', 'hf'), 'cl': ('ours', ),
           'opt': ('ours', ), 'compile': ('ours', ), 'hfrecipe': ('ours', ),
           'official': ('hf', ), 'gK': ('ours', )}
# torch.compile'd parts of ours: the transformer and the head (issue 15).
COMPILED_PARTS = ('encoder', 'decoder', 'bbox_head')


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """One variant: a model (``base``) and its options."""
    base: str
    amp: bool = False
    channels_last: bool = False
    optimize: bool = False
    compile: bool = False
    hf_recipe: bool = False
    official: bool = False
    group_detr: int = 1  # ':g11': Group DETR with K = 11 (ours only)

    @property
    def name(self) -> str:
        """``NAME[:OPT[+OPT]]``, options in a fixed order."""
        opts = [opt for opt, on in (('amp', self.amp),
                                    ('cl', self.channels_last),
                                    ('opt', self.optimize),
                                    ('compile', self.compile),
                                    ('hfrecipe', self.hf_recipe),
                                    ('official', self.official),
                                    (f'g{self.group_detr}',
                                     self.group_detr > 1)) if on]
        return self.base + (':' + '+'.join(opts) if opts else '')

    @classmethod
    def parse(cls, text: str, amp: bool = False,
              channels_last: bool = False) -> 'VariantSpec':
        """Parse ``NAME[:OPT[+OPT]]``; ``amp``/``channels_last`` add options.

        Raises:
            ValueError: An unknown name or option, or an option the model
                does not have, named in the message.
        """
        base, _, opts = text.strip().partition(':')
        opts = set(filter(None, opts.split('+')))
        if base not in ('mmdet', 'ours', 'hf'):
            raise ValueError(f'bad variant {text!r}: NAME must be mmdet, '
                             'ours or hf')
        groups = [opt for opt in opts if re.fullmatch(r'g[1-9]\d*', opt)]
        opts -= set(groups)
        if len(groups) > 1 or (groups and base != 'ours'):
            raise ValueError(f'bad variant {text!r}: one gK (Group DETR '
                             'groups) option, of ours only')
        for opt in sorted(opts):
            if opt not in OPTIONS or opt == 'gK':
                raise ValueError(f'bad variant {text!r}: unknown option '
                                 f'{opt!r} ({", ".join(OPTIONS)})')
            if base not in OPTIONS[opt]:
                raise ValueError(f'bad variant {text!r}: {opt!r} is an '
                                 f'option of {", ".join(OPTIONS[opt])} only')
        return cls(base, amp=amp or 'amp' in opts,
                   channels_last=('cl' in opts or
                                  (channels_last and base == 'ours')),
                   optimize='opt' in opts, compile='compile' in opts,
                   hf_recipe='hfrecipe' in opts, official='official' in opts,
                   group_detr=int(groups[0][1:]) if groups else 1)


def timed(sync: Callable, fn: Callable):
    """``(fn(), seconds)`` with the device synchronised around it."""
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


class Variant:
    """One model with its optimiser, inputs and autocast context."""

    def __init__(self, spec: VariantSpec, model: torch.nn.Module, args):
        self.spec = spec
        self.device = args.device
        self.model = model.to(args.device)
        # ':opt' predicts with a folded, channels-last copy; trains the model.
        self.infer_model = (optimize_for_inference(copy.deepcopy(self.model))
                            if spec.optimize else self.model)
        optim_cfg = 'ours' if spec.base == 'ours' else 'mmdet'
        self.optim = _models.build_optimizer(
            self.model, args.amp_dtype if spec.amp else None, args.device,
            config=optim_cfg)
        self.inputs, self.samples = _models.make_inputs(
            args.batch, args.height, args.width, args.num_gts,
            80, args.seed, args.device)
        self.amp_dtype = getattr(torch, args.amp_dtype)
        self.times: Dict[str, list] = {}
        self.first: Dict[str, float] = {}  # seconds of the first warm-up step
        if spec.base == 'hf':
            self.hf_labels = _models.hf_labels(self.samples)
            self.pixel_mask = self.inputs.new_ones(
                self.inputs.shape[0], *self.inputs.shape[2:], dtype=torch.long)
            self.processor = _models.hf_processor()

    def autocast(self):
        return (torch.autocast(self.device, dtype=self.amp_dtype)
                if self.spec.amp else contextlib.nullcontext())

    def loss(self) -> torch.Tensor:
        """The total training loss of one forward."""
        if self.spec.base == 'hf':
            return self.model(pixel_values=self.inputs,
                              pixel_mask=self.pixel_mask,
                              labels=self.hf_labels).loss
        losses = self.model(self.inputs, self.samples, mode='loss')
        return self.model.parse_losses(losses)[0]

    def train_step(self, sync: Callable) -> float:
        """One training step; its seconds."""
        def step():
            self.model.train()
            with self.optim.optim_context(self.model):
                loss = self.loss()
            self.optim.update_params(loss)
        return timed(sync, step)[1]

    def infer_step(self, sync: Callable) -> float:
        """One prediction with post-processing; its seconds."""
        def step():
            self.infer_model.eval()
            with torch.no_grad(), self.autocast():
                if self.spec.base != 'hf':
                    return self.infer_model(self.inputs, self.samples,
                                            mode='predict')
                out = self.model(pixel_values=self.inputs,
                                 pixel_mask=self.pixel_mask)
                sizes = [s.metainfo['ori_shape'] for s in self.samples]
                return self.processor.post_process_object_detection(
                    out, threshold=0., target_sizes=sizes, top_k=100)
        return timed(sync, step)[1]

    def breakdown_step(self, sync: Callable) -> Dict[str, float]:
        """Time each stage (forward + backward) on detached inputs."""
        return run_stages(self, sync)


def _detach(x):
    return x.detach().requires_grad_(x.is_floating_point())


def run_stages(v: Variant, sync: Callable) -> Dict[str, float]:
    """Seconds of each of :data:`STAGES` of mmdet's or our model."""
    model, times, state = v.model, {}, {}
    model.train()

    def backbone():
        with v.autocast():
            state['feats'] = model.extract_feat(v.inputs)
        sum(f.float().sum() for f in state['feats']).backward()

    # Ours passes explicit arguments between its steps, mmdet's dicts.
    ours = isinstance(model, CdetrConditionalDETR)

    def encoder():
        with v.autocast():
            if ours:
                feat = _detach(state['feats'][-1])
                core = model.transformer
                feat, mask, pos = core.flatten(
                    feat, model.padding_mask(feat, v.samples))
                state['enc_out'] = dict(memory=core.encode(feat, mask, pos))
                state['dec_in'] = dict(memory_mask=mask, memory_pos=pos)
            else:
                enc_in, state['dec_in'] = model.pre_transformer(
                    tuple(_detach(f) for f in state['feats']), v.samples)
                state['enc_out'] = model.forward_encoder(**enc_in)
        state['enc_out']['memory'].float().sum().backward()

    def decoder():
        memory = _detach(state['enc_out']['memory'])
        with v.autocast():
            if ours:
                query, query_pos = model.transformer.object_queries(memory.shape[0])
                hidden_states, references = model.transformer.decode(
                    query, query_pos, memory, state['dec_in']['memory_mask'],
                    state['dec_in']['memory_pos'])
                head_in = dict(hidden_states=hidden_states, references=references)
            else:
                dec_in, head_in = model.pre_decoder(
                    **dict(state['enc_out'], memory=memory))
                state['dec_in'].update(dec_in)
                head_in.update(model.forward_decoder(**state['dec_in']))
        sum(x.float().sum() for x in head_in.values()).backward()
        state['head_in'] = {k: _detach(x) for k, x in head_in.items()}

    def head():
        with v.autocast():
            losses = model.bbox_head.loss(**state['head_in'],
                                          batch_data_samples=v.samples)
        model.parse_losses(losses)[0].backward()

    def matcher():
        with torch.no_grad(), v.autocast():
            cls, box = model.bbox_head(**state['head_in'])
        match_predictions(model.bbox_head, cls.float(), box.float(),
                          v.samples)

    for name, fn in (('backbone+neck', backbone), ('encoder', encoder),
                     ('decoder', decoder), ('head+loss', head),
                     ('matcher', matcher)):
        times[name] = timed(sync, fn)[1]
    times['optimizer'] = timed(
        sync, lambda: (v.optim.step(), v.optim.zero_grad()))[1]
    return times


def match_predictions(head, cls, box, samples) -> None:
    """Run the head's matcher on (layers, bs, nq, ...) predictions, as its
    loss does (ours: one batched call; mmdet: per layer and image)."""
    matcher = getattr(head, 'matcher', None) or head.assigner
    metas = [s.metainfo for s in samples]
    factors = [box.new_tensor([m['img_shape'][1], m['img_shape'][0]] * 2)
               for m in metas]
    if hasattr(matcher, 'match'):
        gt_boxes = [bbox_xyxy_to_cxcywh(s.gt_instances.bboxes.float()) / f
                    for s, f in zip(samples, factors)]
        matcher.match(cls, box, [s.gt_instances.labels for s in samples],
                      gt_boxes)
        return
    for layer in range(cls.shape[0]):
        for i, sample in enumerate(samples):
            pred = InstanceData(
                scores=cls[layer, i],
                bboxes=bbox_cxcywh_to_xyxy(box[layer, i]) * factors[i])
            matcher.assign(pred_instances=pred,
                           gt_instances=sample.gt_instances,
                           img_meta=metas[i])


def build_model(spec: VariantSpec, args) -> torch.nn.Module:
    """The model of ``spec`` with random weights (seed ``args.seed``)."""
    size = dict(depth=args.depth, num_layers=args.layers,
                num_queries=args.queries)
    if spec.base == 'hf':
        return _models.build_hf_model(spec.official, args.seed, **size)
    if spec.group_detr > 1:
        size['group_detr'] = spec.group_detr
    model = _models.build_model(spec.base, args.seed,
                                channels_last=spec.channels_last,
                                hf_recipe=spec.hf_recipe, **size)
    if spec.compile:  # in place: parameter names (and weight loading) unchanged
        for part in COMPILED_PARTS:
            getattr(model, part).compile()
    return model


def build_variants(args):
    """All variants; mmdet's and ours share mmdet's random weights."""
    state = build_model(VariantSpec('mmdet'), args).state_dict()
    variants = []
    for spec in args.variants:  # a fresh model each: optimisers diverge
        model = build_model(spec, args)
        if spec.base != 'hf':
            _models.load_mmdet_weights(model, state)
        variants.append(Variant(spec, model, args))
    return variants


def profile_tables(variants, sync: Callable, rows: int = 25) -> Dict[str, str]:
    """One profiled training step per variant: its top self-CPU ops table.

    Op counts and shares are steadier than wall times on a shared machine.
    """
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available() and variants and variants[0].device == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    tables = {}
    for v in variants:
        with profile(activities=activities) as prof:
            v.train_step(sync)
        tables[v.spec.name] = prof.key_averages().table(
            sort_by='self_cpu_time_total', row_limit=rows)
    return tables


def breakdown_table(results: Dict[str, dict]) -> str:
    """The per-stage median seconds of the variants that have them."""
    names = [n for n, r in results.items() if 'breakdown' in r]
    ref = results['mmdet']['breakdown']
    ref_total = sum(ref[s]['median'] for s in STAGES if s != 'matcher')
    lines = [f"{'stage (median s)':<18}" + ''.join(
        f'{name:>16}' for name in names) + f"{'share mmdet':>12}"]
    for stage in STAGES:
        row = f'{stage:<18}' + ''.join(
            f"{results[n]['breakdown'][stage]['median']:>16.4f}"
            for n in names)
        lines.append(row + f"{ref[stage]['median'] / ref_total:>12.1%}")
    lines.append('(matcher: the matching alone, also inside head+loss)')
    return '\n'.join(lines)


def machine_info(device: str) -> dict:
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(),
                torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                cpu_capability=torch.backends.cpu.get_cpu_capability())
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _vm_hwm_bytes() -> int:
    """The process's peak RSS since the last reset (``VmHWM``)."""
    with open('/proc/self/status') as f:
        line = next(line for line in f if line.startswith('VmHWM'))
    return int(line.split()[1]) * 1024


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False if refused."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def measure_memory_child(args, spec: VariantSpec) -> dict:
    """Peak memory growth of a few training steps of one variant.

    One warm-up step first allocates the optimiser state and lazily loaded
    kernels; then the peak over ``--memory-steps`` steps is taken relative to
    the memory held between steps (weights, gradients freed, AdamW state).
    """
    variant = Variant(spec, build_model(spec, args), args)
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: 0)
    variant.train_step(sync)
    gc.collect()
    if args.device == 'cuda':
        sync()
        torch.cuda.reset_peak_memory_stats()
        before, method = torch.cuda.memory_allocated(), 'max_memory_allocated'
    else:
        before, build_peak = _rss_bytes(), _vm_hwm_bytes()
        method = 'VmHWM' if _reset_peak_rss() else 'ru_maxrss'
    for _ in range(args.memory_steps):
        variant.train_step(sync)
    if args.device == 'cuda':
        peak = process_peak = torch.cuda.max_memory_allocated()
    else:
        # ru_maxrss survives exec (it would include the parent's peak).
        peak = (_vm_hwm_bytes() if method == 'VmHWM' else
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        process_peak = max(build_peak, _vm_hwm_bytes())
    return dict(method=method, before_mb=before / 2**20,
                peak_mb=peak / 2**20, growth_mb=(peak - before) / 2**20,
                process_peak_rss_mb=process_peak / 2**20)


def _count_cpu_sdpa() -> None:
    """Teach ``FlopCounterMode`` the CPU fused attention (it skips it).

    Our attention calls ``scaled_dot_product_attention`` without dropout;
    on CPU that dispatches to ``_scaled_dot_product_flash_attention_for_cpu``,
    which torch's FLOP registry lacks (counted as 0); the CUDA kernels are
    registered. Same formulas as torch's own SDPA entries.
    """
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    fwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    bwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu_backward',
                  None)
    if fwd is not None and fwd not in fc.flop_registry:
        fc.register_flop_formula(fwd)(
            lambda q, k, v, *args, out_shape=None, **kwargs:
            fc.sdpa_flop_count(q, k, v))
    if bwd is not None and bwd not in fc.flop_registry:
        fc.register_flop_formula(bwd)(
            lambda grad, q, k, v, *args, out_shape=None, **kwargs:
            fc.sdpa_backward_flop_count(grad, q, k, v))


def train_flops(v: Variant) -> int:
    """FLOPs of one training forward + backward of ``v`` (no optimiser step).

    Counted by torch's ``FlopCounterMode`` (matrix products, convolutions,
    attention); element-wise work, the matcher and the optimiser are not
    FLOPs it counts, so the ratio of two variants is the bound the added
    matrix work sets (Group DETR: K times the decoder and head, the
    backbone and encoder once).
    """
    from torch.utils.flop_counter import FlopCounterMode
    _count_cpu_sdpa()
    v.model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        with v.autocast():
            loss = v.loss()
        loss.backward()
    v.model.zero_grad(set_to_none=True)
    return counter.get_total_flops()
