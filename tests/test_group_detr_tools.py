"""Group DETR (K > 1) through the runner, its hooks, export and attention tools.

Everything downstream of training sees the first query group only: the
ONNX graph is the K = 1 graph, the attention maps are the K = 1 model's, and
the runner trains, validates, checkpoints and strictly reloads a K-group
model.
"""
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner

from cdetr_mmdet.analysis import analyze_cross_attention
from cdetr_mmdet.data import ensure_dataset
from cdetr_mmdet.checkpoint import CheckpointMismatchError
from conftest import ROOT, make_batch, randomize_

TINY_CFG = ROOT / 'tests' / 'data' / 'tiny_cdetr_shapes.py'
K = 3


def tiny_cfg(group_detr, data_root=None, work_dir=None):
    cfg = Config.fromfile(str(TINY_CFG))
    cfg.model.group_detr = group_detr
    if data_root is not None:
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            cfg[loader].dataset.data_root = str(data_root)
        for evaluator in ('val_evaluator', 'test_evaluator'):
            cfg[evaluator].ann_file = str(
                data_root / 'annotations' / 'instances_val.json')
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    return cfg


def k_and_first_group_models():
    """A random K-group model and the K = 1 model of its first rows."""
    grouped = randomize_(MODELS.build(tiny_cfg(K).model), seed=0).eval()
    single = MODELS.build(tiny_cfg(1).model).eval()
    state = grouped.state_dict()
    state['query_embedding.weight'] = state['query_embedding.weight'][:10]
    single.load_state_dict(state, strict=True)
    return grouped, single


def test_attention_maps_are_the_first_groups(tmp_path):
    grouped, single = k_and_first_group_models()
    inputs, samples = make_batch(num_classes=4)
    maps = analyze_cross_attention(grouped, inputs, samples)
    ref = analyze_cross_attention(single, inputs, samples)
    assert maps.combined.shape[3] == 10  # (L, bs, heads, nq, H, W)
    for name in ('combined', 'spatial', 'content', 'boxes', 'references'):
        assert torch.equal(getattr(maps, name), getattr(ref, name)), name


def test_onnx_graph_is_the_k1_graph(tmp_path):
    onnx = pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    from cdetr_mmdet.deploy.exporter import export_onnx
    grouped, single = k_and_first_group_models()
    graphs = []
    for name, model, group_detr in (('k', grouped, K), ('one', single, 1)):
        path = tmp_path / f'{name}.onnx'
        # Writes the file only if ONNX Runtime reproduces PyTorch.
        export_onnx(model, tiny_cfg(group_detr), str(path), (64, 64),
                    log=lambda *_: None)
        graphs.append(onnx.load(str(path)).graph)
    ops = [[node.op_type for node in graph.node] for graph in graphs]
    assert ops[0] == ops[1]
    shapes = [sorted(tuple(i.dims) for i in graph.initializer)
              for graph in graphs]
    assert shapes[0] == shapes[1]  # no K * N query table in the graph


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    ensure_dataset(root, num_train=8, num_val=4, img_size=64,
                   empty_fraction=0.0, seed=0)
    return root


def test_runner_trains_validates_and_reloads_strictly(data_root, tmp_path):
    cfg = tiny_cfg(K, data_root, tmp_path / 'train')
    cfg.train_cfg.update(max_iters=3, val_interval=3)
    cfg.default_hooks.checkpoint.interval = 3
    runner = Runner.from_cfg(cfg)
    runner.train()  # divergence guard, dataset check, checkpoint hooks on
    checkpoint = tmp_path / 'train' / 'iter_3.pth'
    assert checkpoint.is_file()
    saved = torch.load(checkpoint, weights_only=True)['state_dict']
    assert saved['query_embedding.weight'].shape[0] == K * 10

    test_cfg = tiny_cfg(K, data_root, tmp_path / 'test')
    test_cfg.load_from = str(checkpoint)
    metrics = Runner.from_cfg(test_cfg).test()
    assert 'coco/bbox_mAP' in metrics

    refused = tiny_cfg(1, data_root, tmp_path / 'refused')
    refused.load_from = str(checkpoint)
    with pytest.raises(CheckpointMismatchError,
                       match='tools/keep_first_group.py'):
        Runner.from_cfg(refused).test()

