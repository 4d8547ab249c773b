"""CdetrFrozenBatchNorm2d: nn.BatchNorm2d's outputs and gradients, no saved input."""
import torch
from mmdet.models.backbones import ResNet
from torch import nn

from cdetr_mmdet.models import CdetrFrozenBatchNorm2d


def _random_stats_(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen)
            m.running_mean = torch.randn(c, generator=gen)
            m.running_var = torch.rand(c, generator=gen) + 0.1
    return module


def _resnet(norm_type: str) -> ResNet:
    torch.manual_seed(0)
    net = ResNet(depth=18, num_stages=4, out_indices=(3, ), frozen_stages=1,
                 norm_cfg=dict(type=norm_type, requires_grad=False),
                 norm_eval=True, style='pytorch')
    _random_stats_(net).train()  # norm_eval keeps the BNs in eval mode
    return net


def _saved_bytes(fn) -> int:
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


def test_resnet_outputs_and_gradients_equal_plain_bn():
    ref, ours = _resnet('BN'), _resnet('CdetrFrozenBatchNorm2d')
    ours.load_state_dict(ref.state_dict())  # same keys
    assert sum(isinstance(m, CdetrFrozenBatchNorm2d)
               for m in ours.modules()) == 20
    x = torch.randn(2, 3, 96, 128)
    trained_bn_inputs = []  # the BNs after trainable convs (stages 2-4)
    for name, m in ref.named_modules():
        if isinstance(m, nn.BatchNorm2d) and not name.startswith(
                ('bn1', 'layer1')):
            m.register_forward_hook(lambda m, args, out: trained_bn_inputs
                                    .append(args[0].numel() * 4))
    out_ref, saved_ref = _saved_bytes(lambda: ref(x)[0])
    out_ours, saved_ours = _saved_bytes(lambda: ours(x)[0])
    assert torch.equal(out_ours, out_ref)  # full tensor, bit for bit
    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)
    out_ours.backward(grad)
    for (name, p_ref), p_ours in zip(ref.named_parameters(),
                                     ours.parameters()):
        assert (p_ref.grad is None) == (p_ours.grad is None), name
        if p_ref.grad is not None:
            # Equal up to float rounding of the summed products.
            err = (p_ours.grad - p_ref.grad).norm() / p_ref.grad.norm()
            assert err < 1e-5, (name, err)
    # Stages 2-4 train: their 15 BNs no longer keep their (N, C, H, W)
    # inputs, only a (C,) scale each instead of four (C,) vectors.
    assert len(trained_bn_inputs) == 15
    assert saved_ref - saved_ours > 0.99 * sum(trained_bn_inputs)


def test_falls_back_to_batch_norm_outside_frozen_use():
    bn = _random_stats_(CdetrFrozenBatchNorm2d(4))
    ref = _random_stats_(nn.BatchNorm2d(4))
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    # Trainable affine, eval mode: plain batch norm (gradients to weight).
    bn.eval()(x).sum().backward()
    assert bn.weight.grad is not None
    # Training mode: batch statistics, running stats updated as nn's.
    bn.train(), ref.train()
    assert torch.allclose(bn(x), ref(x))
    assert torch.allclose(bn.running_mean, ref.running_mean)
