"""Group DETR under DDP: 2 gloo processes of one image each equal 1 of two.

One training step of a K-group model: the gradients DDP averages over two
CPU processes, each with one image, equal the gradients of one process
with both images, for every parameter, the K * N query rows included. The
images have different box counts (3 and 1), so the equality holds only if
every loss term is normalised by K times the box count averaged over the
processes; the same run with a per-process normaliser is shown to differ.
The factor K is pinned independently: the K-group gradient equals the mean
of the K single-group (K = 1) models' gradients, one per group of rows.
"""
import multiprocessing
import os
import socket
import time
from typing import Dict, List, Tuple

import pytest
import torch
import torch.distributed as dist
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

import cdetr_mmdet.models.head as head_module
from conftest import ROOT, make_batch, randomize_, shrink_model_cfg

K = 3
NUM_GTS = (3, 1)  # different box counts: a wrong normaliser shows
# float32 rounding of a different summation order (per image, then the
# all-reduce): measured up to ~3e-6 of a tensor's largest gradient. Tensors
# whose exact gradient is zero or a cancellation (attention key biases: the
# softmax ignores them) carry only rounding noise, ~1e-8 of the model's
# largest gradient. A wrong normaliser is off by > 1e-2.
RTOL, MODEL_RTOL = 1e-5, 1e-7
# Only stops a hung process: on an overloaded machine the step takes minutes.
TIMEOUT_S = 900


def k_group_model(group_detr: int = K) -> nn.Module:
    """The tiny R18 detector (frozen BN, no dropout) with random weights.

    Frozen BN and no dropout make one image's forward independent of the
    other image in its batch, so one step can be split across processes.
    """
    cfg = shrink_model_cfg(Config.fromfile(
        str(ROOT / 'configs' / 'conditional_detr_r50_50e.py')).model)
    cfg.group_detr = group_detr
    for part in ('encoder', 'decoder'):
        cfg[part].layer_cfg.dropout = 0.
    return randomize_(MODELS.build(cfg), seed=0).train()


def two_images() -> Tuple[torch.Tensor, List[DetDataSample]]:
    """Two 64 x 64 images (no padding) with 3 and 1 boxes."""
    return make_batch(sizes=((64, 64), (64, 64)), num_gts=NUM_GTS)


def gradients(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()
            if p.requires_grad}


def one_step(model: nn.Module, inputs: torch.Tensor,
             samples: List[DetDataSample],
             module: nn.Module) -> Dict[str, torch.Tensor]:
    """Loss and backward as ``train_step`` does; the gradients of ``module``.

    ``model`` is ``module`` or its DDP wrapper.
    """
    module.zero_grad(set_to_none=True)
    loss, _ = module.parse_losses(model(inputs, samples, mode='loss'))
    loss.backward()
    return gradients(module)


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    """Process ``rank`` of 2: one step on image ``rank``, then the same
    step with each process normalising by its own box count (no reduce).

    The second step's forward would also raise if the first had left a
    parameter without gradient (DDP's ``find_unused_parameters=False``).
    """
    torch.set_num_threads(1)  # no OpenMP pool inherited across the fork
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    module = k_group_model()
    # The wrapper the runner uses on CPU (setup_cpu_distributed selects it).
    model = MODEL_WRAPPERS.build(dict(type='CdetrCPUDistributedDataParallel'),
                                 default_args=dict(module=module))
    inputs, samples = two_images()
    mine = (inputs[rank:rank + 1], samples[rank:rank + 1])
    result = {'ddp': one_step(model, *mine, module)}
    head_module.reduce_mean = lambda x: x  # the known mistake
    result['unreduced'] = one_step(model, *mine, module)
    torch.save(result, os.path.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def assert_equal_to_rounding(got: Dict[str, torch.Tensor],
                             ref: Dict[str, torch.Tensor]) -> None:
    """Every gradient within RTOL of its tensor's largest entry, plus
    MODEL_RTOL of the model's largest."""
    assert got.keys() == ref.keys()
    model_scale = max(grad.abs().max().item() for grad in ref.values())
    for name, grad in ref.items():
        atol = RTOL * grad.abs().max().item() + MODEL_RTOL * model_scale
        torch.testing.assert_close(got[name], grad, rtol=0, atol=atol,
                                   msg=lambda m: f'{name}: {m}')


def relative_difference(got: Dict[str, torch.Tensor],
                        ref: Dict[str, torch.Tensor]) -> float:
    return max(((got[n] - g).abs().max() / g.abs().max()).item()
               for n, g in ref.items())


@pytest.fixture(scope='module')
def ddp_gradients(tmp_path_factory) -> List[Dict[str, Dict]]:
    """Both ranks' gradients from one 2-process gloo run.

    The processes are forked: they inherit the imported modules, which
    would take longer to import again than the step takes.
    """
    out_dir = str(tmp_path_factory.mktemp('ddp'))
    context = multiprocessing.get_context('fork')
    port = free_port()
    workers = [context.Process(target=ddp_worker, args=(rank, port, out_dir))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + TIMEOUT_S  # a guard against a hang only
    for worker in workers:
        worker.join(timeout=max(0., deadline - time.monotonic()))
    hung = [rank for rank, worker in enumerate(workers) if worker.is_alive()]
    for rank in hung:
        workers[rank].kill()
        workers[rank].join()
    if hung:
        pytest.fail(f'DDP ranks {hung} did not finish in {TIMEOUT_S} s (killed)')
    for rank, worker in enumerate(workers):
        assert worker.exitcode == 0, (
            f'DDP rank {rank} exited with {worker.exitcode} (traceback in '
            'the captured stderr)')
    return [torch.load(os.path.join(out_dir, f'rank{rank}.pth'),
                       weights_only=True) for rank in range(2)]


@pytest.fixture(scope='module')
def one_process_gradients() -> Dict[str, torch.Tensor]:
    model = k_group_model()
    return one_step(model, *two_images(), model)


def test_two_processes_equal_one_process(ddp_gradients,
                                         one_process_gradients):
    for rank in range(2):
        assert_equal_to_rounding(ddp_gradients[rank]['ddp'],
                                 one_process_gradients)
    n = 10  # shrink_model_cfg's queries per group
    rows = one_process_gradients['query_embedding.weight']  # (K * N, d)
    assert rows.shape[0] == K * n
    assert (rows.abs().sum(1) > 0).all()  # every group's rows get one


def test_a_per_process_normaliser_breaks_the_equality(ddp_gradients,
                                                      one_process_gradients):
    """Rank 0 over-, rank 1 under-weights its images: far from rounding."""
    assert relative_difference(ddp_gradients[0]['unreduced'],
                               one_process_gradients) > 1e-2


def test_k_group_gradient_is_the_mean_of_the_single_group_models(
        one_process_gradients):
    """Normaliser K x boxes: each group's loss counts 1 / K. Group g of a
    K-group model is the K = 1 model of rows g (no attention across groups,
    matching per group), so the gradients are the mean of those models'."""
    grouped = k_group_model()
    n = grouped.num_queries
    inputs, samples = two_images()
    mean = {name: torch.zeros_like(g)
            for name, g in one_process_gradients.items()}
    for g in range(K):
        single = k_group_model(group_detr=1)
        state = grouped.state_dict()
        state['query_embedding.weight'] = state['query_embedding.weight'][
            g * n:(g + 1) * n]
        single.load_state_dict(state, strict=True)
        for name, grad in one_step(single, inputs, samples, single).items():
            if name == 'query_embedding.weight':
                mean[name][g * n:(g + 1) * n] = grad / K
            else:
                mean[name] += grad / K
    assert_equal_to_rounding(one_process_gradients, mean)
