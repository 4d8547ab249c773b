"""A/B of the cheap-dropout lever in one process (issue 15).

"old": PyTorch's dropout (``nn.Dropout``, ``F.scaled_dot_product_attention``
with ``dropout_p``, i.e. ``bernoulli_`` masks and the unfused math path);
"new": ``CheapDropout`` and ``attention``'s explicit path. Two copies of our
R50 model with the same weights; transformer + head forward + backward on
fixed backbone features (512x512, batch 2), alternated step by step (ABBA),
then one profiled step of each (self-CPU op table).

Usage: python benchmarks/dropout_ab.py THREADS STEPS
"""
import sys, time, statistics, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent))
import _models
import cdetr_mmdet.models.attention as A, cdetr_mmdet.models.encoder as E
from cdetr_mmdet.models.dropout import CheapDropout
from torch.profiler import profile
torch.set_num_threads(int(sys.argv[1])); steps = int(sys.argv[2])
OLD = [False]
new_attention = A.attention
def dispatch(q, k, v, attn_mask=None, dropout_p=0.):
    if OLD[0]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    return new_attention(q, k, v, attn_mask, dropout_p)
A.attention = E.attention = dispatch
state = _models.build_model('mmdet', 0).state_dict()
models = {}
for name in ('old', 'new'):
    m = _models.build_model('ours', 0); _models.load_mmdet_weights(m, state); m.train()
    if name == 'old':
        for mod in m.modules():
            if isinstance(mod, CheapDropout): mod.__class__ = nn.Dropout
    models[name] = m
inputs, samples = _models.make_inputs(2, 512, 512, 5, 80, 0)
with torch.no_grad():
    feats = models['new'].extract_feat(inputs)
def step(name):
    OLD[0] = name == 'old'
    m = models[name]
    enc_in, dec_in = m.pre_transformer(feats, samples)
    enc_out = m.forward_encoder(**enc_in)
    tmp, head_in = m.pre_decoder(**enc_out); dec_in.update(tmp)
    head_in.update(m.forward_decoder(**dec_in))
    losses = m.bbox_head.loss(**head_in, batch_data_samples=samples)
    m.parse_losses(losses)[0].backward()
    m.zero_grad(set_to_none=True)
ts = {'old': [], 'new': []}
for i in range(steps + 1):
    for name in (('old', 'new') if i % 2 else ('new', 'old')):
        torch.manual_seed(i); s = time.perf_counter(); step(name)
        if i: ts[name].append(time.perf_counter() - s)
o, n = statistics.median(ts['old']), statistics.median(ts['new'])
print(f'transformer+head fwd+bwd median over {steps}: old {o:.3f} s, new {n:.3f} s, new/old {n/o:.3f}')
print('old', [round(t, 3) for t in ts['old']]); print('new', [round(t, 3) for t in ts['new']])
for name in ('old', 'new'):
    with profile() as p: step(name)
    print(f'--- {name} (self CPU, one transformer+head fwd+bwd)')
    print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=14))
