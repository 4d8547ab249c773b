"""bf16 autocast training on CPU (``CdetrCPUAmpOptimWrapper``) and the
``channels_last`` detector option, the two speed options of
``docs/benchmarks.md``."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.optim import build_optim_wrapper

from cdetr_mmdet.engine import CdetrCPUAmpOptimWrapper
from cdetr_mmdet.speedups.channels_last import frozen_stages_end
from cdetr_testing import detection_differences
from conftest import make_batch, randomize_


def amp_optim_wrapper(model):
    """Built through mmengine from a config dict, as a runner does."""
    return build_optim_wrapper(model, dict(
        type='CdetrCPUAmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
        clip_grad=dict(max_norm=0.1, norm_type=2),
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)})))


def test_bf16_training_steps_stay_finite(tiny_model_cfg):
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg)
    model.init_weights()
    model.train()
    optim_wrapper = amp_optim_wrapper(model)
    assert isinstance(optim_wrapper, CdetrCPUAmpOptimWrapper)
    # Record the dtype the decoder's linear layers compute in.
    dtypes = []
    model.decoder.layers[0].linear1.register_forward_hook(
        lambda mod, inp, out: dtypes.append(out.dtype))
    before = copy.deepcopy(model.decoder.state_dict())
    inputs, samples = make_batch(num_gts=(3, 2))
    for _ in range(3):
        with optim_wrapper.optim_context(model):
            losses = model(inputs, samples, mode='loss')
        loss, log_vars = model.parse_losses(losses)
        for name, value in log_vars.items():
            assert torch.isfinite(value).all(), name
            assert value.dtype == torch.float32, name  # losses stay fp32
        optim_wrapper.update_params(loss)
    assert dtypes == [torch.bfloat16] * 3
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, name  # master weights stay fp32
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name
    after = model.decoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


# bf16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 of its magnitude
# and the outputs are themselves bf16, one unit in the last place (ulp) apart: 2^-8 for
# scores in [0.5, 1), 0.5 px for boxes in [64, 128) px. Measured on an AVX2 CPU (bf16
# emulated through fp32): scores 1.8 ulp, boxes 1.5 ulp from fp32; AMX rounds the same
# inputs and accumulates in fp32 too. 4 ulp leaves room for both; a bf16-only bug of one
# softmax scale (halved in every attention) moves the boxes 3.3 px, and the test fails.
BF16_SCORE_ATOL = 4 * 2 ** -8
BF16_BOX_ATOL = 4 * 0.5  # px, the images are 64x96 and 48x80


def test_bf16_predict_matches_fp32(tiny_model_cfg):
    """The same detections under bf16 autocast as in fp32, paired (not compared by rank: the
    near-tied scores of random weights reorder), within 4 bf16 ulp; the results are float32, as
    mmdet's CocoMetric needs (`.numpy()` of bfloat16 raised `Got unsupported ScalarType
    BFloat16` in `tools/test.py --cfg-options test_cfg.fp16=True`)."""
    model = MODELS.build(tiny_model_cfg).eval()
    randomize_(model)
    inputs, samples = make_batch()
    with torch.no_grad():
        # predict writes into the data samples it is given: one copy per run.
        ref = model(inputs, copy.deepcopy(samples), mode='predict')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(inputs, copy.deepcopy(samples), mode='predict')
    for r, b in zip(ref, low):
        r, b = r.pred_instances, b.pred_instances
        assert r.scores.dtype == b.scores.dtype == torch.float32
        assert r.bboxes.dtype == b.bboxes.dtype == torch.float32
        b.bboxes.numpy(), b.scores.numpy()  # what CocoMetric.process does
        assert len(r) == len(b) == 30  # every (query, class) of 10 queries x 3 classes
        assert torch.isfinite(b.bboxes).all() and torch.isfinite(b.scores).all()
        score_diff, box_diff = detection_differences(
            b.scores.float(), b.labels, b.bboxes.float(), r.scores, r.labels, r.bboxes,
            score_tol=BF16_SCORE_ATOL)
        assert score_diff <= BF16_SCORE_ATOL and box_diff <= BF16_BOX_ATOL, (score_diff, box_diff)


def test_amp_wrapper_refuses_float16(tiny_model_cfg):
    model = MODELS.build(tiny_model_cfg)
    with pytest.raises(ValueError, match='bfloat16'):
        build_optim_wrapper(model, dict(
            type='CdetrCPUAmpOptimWrapper', dtype='float16',
            optimizer=dict(type='AdamW', lr=1e-4)))


def test_channels_last_matches_the_default_layout(tiny_model_cfg):
    default = MODELS.build(tiny_model_cfg).eval()
    randomize_(default)
    fast_cfg = copy.deepcopy(tiny_model_cfg)
    fast_cfg.channels_last = True
    fast = MODELS.build(fast_cfg).eval()
    fast.load_state_dict(default.state_dict(), strict=True)
    conv = fast.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    inputs, samples = make_batch()
    with torch.no_grad():
        loss_d = default.loss(inputs, samples)
        loss_f = fast.loss(inputs, samples)
        out_d = default._forward(inputs, samples)
        out_f = fast._forward(inputs, samples)
    for a, b in zip(out_f, out_d):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for key in loss_d:
        torch.testing.assert_close(loss_f[key], loss_d[key], rtol=1e-4,
                                   atol=1e-4, msg=key)


def _formats(model):
    """Record whether each stage's input is NHWC, in call order."""
    seen = []
    for name in ('layer1', 'layer2', 'layer4'):
        getattr(model.backbone, name).register_forward_pre_hook(
            lambda mod, args, name=name: seen.append(
                (name, args[0].is_contiguous(
                    memory_format=torch.channels_last)
                 and not args[0].is_contiguous())))
    return seen


def test_frozen_stages_run_channels_last_with_equal_results(tiny_model_cfg):
    """Default ``frozen_channels_last``: the frozen stem and layer1 run NHWC
    in training (layer2 on gets NCHW), the whole backbone under no_grad;
    features and gradients equal the all-NCHW model's."""
    cfg = copy.deepcopy(tiny_model_cfg)
    cfg.backbone.frozen_stages = 1  # the R50 configs' (tiny: -1)
    fast = MODELS.build(cfg)
    randomize_(fast)
    plain_cfg = copy.deepcopy(cfg)
    plain_cfg.frozen_channels_last = False
    plain = MODELS.build(plain_cfg)
    plain.load_state_dict(fast.state_dict(), strict=True)
    fast_formats, plain_formats = _formats(fast), _formats(plain)
    inputs, _ = make_batch()
    fast.train(), plain.train()
    feats_f, feats_p = fast.extract_feat(inputs), plain.extract_feat(inputs)
    assert fast_formats == [('layer1', True), ('layer2', False),
                            ('layer4', False)]
    assert plain_formats == [('layer1', False), ('layer2', False),
                             ('layer4', False)]
    # Float rounding of a different summation order, relative to the scale.
    scale = feats_p[0].abs().max().item()
    torch.testing.assert_close(feats_f, feats_p, rtol=0, atol=1e-5 * scale)
    assert feats_f[0].is_contiguous()  # the transformer flattens with view
    (feats_f[0] ** 2).sum().backward()
    (feats_p[0] ** 2).sum().backward()
    grads_p = {n: p.grad for n, p in plain.named_parameters()}
    trained = [(n, p.grad) for n, p in fast.named_parameters()
               if p.grad is not None]
    assert trained and all(n.startswith(('backbone.layer2', 'backbone.layer3',
                                         'backbone.layer4', 'neck'))
                           for n, _ in trained)
    for name, grad in trained:
        torch.testing.assert_close(
            grad, grads_p[name], rtol=0,
            atol=1e-4 * grads_p[name].abs().max().item(), msg=name)
    fast_formats.clear()
    fast.eval(), plain.eval()
    with torch.no_grad():
        feats_f, feats_p = fast.extract_feat(inputs), plain.extract_feat(inputs)
    assert fast_formats == [('layer1', True), ('layer2', True),
                            ('layer4', True)]
    torch.testing.assert_close(feats_f, feats_p, rtol=0, atol=1e-5 * scale)
    assert feats_f[0].is_contiguous()


def test_frozen_channels_last_needs_frozen_stages(tiny_model_cfg):
    cfg = copy.deepcopy(tiny_model_cfg)
    cfg.backbone.frozen_stages = -1  # nothing frozen: all NCHW
    model = MODELS.build(cfg).train()
    formats = _formats(model)
    model.extract_feat(make_batch()[0])
    assert formats == [('layer1', False), ('layer2', False),
                       ('layer4', False)]
    cfg.backbone.frozen_stages = 0  # the stem alone runs NHWC
    model = MODELS.build(cfg).train()
    formats = _formats(model)
    model.extract_feat(make_batch()[0])
    assert formats == [('layer1', False), ('layer2', False),
                       ('layer4', False)]
    assert frozen_stages_end(model.backbone) is model.backbone.maxpool
