"""A/B of the cheap-dropout lever in one process (issue 15).

"old": PyTorch's dropout (``nn.Dropout``; ``F.scaled_dot_product_attention``
with ``dropout_p``, i.e. ``bernoulli_`` masks and the unfused math path);
"new": ``CheapDropout`` and ``attention``'s explicit path (the default). Two
copies of our model with the same weights; transformer + head forward +
backward on fixed backbone features, alternated step by step (ABBA), then one
profiled step of each (self-CPU op table). Default: R50, 512x512, batch 2.

    python benchmarks/dropout_ab.py --threads 2 --steps 10
"""
import argparse
import statistics
import time
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import profile

import _models

import cdetr_mmdet.models.attention as attention_module
import cdetr_mmdet.models.transformer as encoder_module
from cdetr_mmdet.speedups.dropout import CheapDropout

_CHEAP_ATTENTION = attention_module.attention


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--steps', type=int, default=10, help='timed steps per arm')
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--size', type=int, default=512, help='image side')
    parser.add_argument('--layers', type=int, default=6, help='encoder and decoder layers')
    parser.add_argument('--queries', type=int, default=300)
    parser.add_argument('--profile-rows', type=int, default=14)
    return parser.parse_args(argv)


class _Arms:
    """Switches ``attention`` between the cheap path and PyTorch's SDPA."""

    old = False

    @classmethod
    def attention(cls, q, k, v, attn_mask=None, dropout_p=0.):
        if cls.old:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                  dropout_p=dropout_p)
        return _CHEAP_ATTENTION(q, k, v, attn_mask, dropout_p)


def transformer_step(model: nn.Module, feat: torch.Tensor, samples: list) -> None:
    """Encoder, decoder, head and losses, forward + backward.

    Args:
        feat (Tensor): Neck output, (bs, d, h, w).
    """
    hidden_states, references = model.transformer(feat, model.padding_mask(feat, samples))
    losses = model.bbox_head.loss(hidden_states, references, batch_data_samples=samples)
    model.parse_losses(losses)[0].backward()
    model.zero_grad(set_to_none=True)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size = dict(depth=args.depth, num_layers=args.layers, num_queries=args.queries)
    state = _models.build_model('mmdet', 0, **size).state_dict()
    models = {}
    for arm in ('old', 'new'):
        model = _models.build_model('ours', 0, **size)
        _models.load_mmdet_weights(model, state)
        model.train()
        if arm == 'old':
            for module in model.modules():
                if isinstance(module, CheapDropout):
                    module.__class__ = nn.Dropout
        models[arm] = model
    inputs, samples = _models.make_inputs(2, args.size, args.size, 5, 80, 0)
    with torch.no_grad():
        feat = models['new'].extract_feat(inputs)[-1]

    def step(arm: str) -> float:
        _Arms.old = arm == 'old'
        start = time.perf_counter()
        transformer_step(models[arm], feat, samples)
        return time.perf_counter() - start

    attention_module.attention = encoder_module.attention = _Arms.attention
    try:
        times = {'old': [], 'new': []}
        for i in range(args.steps + 1):  # step 0: warm-up
            for arm in (('old', 'new') if i % 2 else ('new', 'old')):
                torch.manual_seed(i)
                seconds = step(arm)
                if i:
                    times[arm].append(seconds)
        old, new = statistics.median(times['old']), statistics.median(times['new'])
        print(f'transformer+head fwd+bwd median over {args.steps}: old {old:.3f} s, '
              f'new {new:.3f} s, new/old {new / old:.3f}')
        for arm in ('old', 'new'):
            print(arm, [round(t, 3) for t in times[arm]])
        for arm in ('old', 'new'):
            with profile() as prof:
                step(arm)
            print(f'--- {arm} (self CPU, one transformer+head fwd+bwd)')
            print(prof.key_averages().table(sort_by='self_cpu_time_total',
                                            row_limit=args.profile_rows))
    finally:
        attention_module.attention = encoder_module.attention = _CHEAP_ATTENTION
    return dict(old=times['old'], new=times['new'], ratio=new / old)


if __name__ == '__main__':
    main()
