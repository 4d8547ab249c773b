"""Hugging Face ``ConditionalDetrForObjectDetection`` -> ours, numerically.

A small HF model (ResNet-18 backbone from transformers' ``ResNetConfig``,
d=64, 2 encoder and 3 decoder layers, 12 queries, 91 COCO-id classes) is
built offline with every weight random, saved both as ``save_pretrained``
writes it (``model.safetensors``, the hub file layout) and as a
``pytorch_model.bin`` of the module's ``state_dict()`` (transformers 5
names), converted, and run on the same normalised, padded batch of two
differently sized images as ours.

Per decoder layer, HF's outputs are taken the way the official code takes
its auxiliary outputs: the layer's raw output (a forward hook), HF's shared
``layernorm``, then HF's class and box heads. (HF's own
``config.auxiliary_loss=True`` is not used: it feeds each layer the
*normalised* output of the previous one, so its forward differs from the
official model's; see docs/checkpoints.md.)
"""
import ast
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from torch import Tensor

from cdetr_mmdet.convert import (COCO_CATEGORY_IDS, build_target_model,
                                 convert_checkpoint, hf_to_official)
from cdetr_testing import detection_differences, padded_batch, randomize_

transformers = pytest.importorskip('transformers')
try:  # transformers 5 without torchvision
    from transformers import ConditionalDetrImageProcessorPil as Processor
except ImportError:
    from transformers import ConditionalDetrImageProcessor as Processor

D, HEADS, FFN, QUERIES, ENC, DEC = 64, 4, 128, 12, 2, 3
SIZES = [(160, 224), (128, 176)]  # (h, w) of the two inputs
SCALE = 0.5  # inputs are resized by 0.5 from the "original" images
ATOL = 1e-4

# Our R50 config, shrunk to the HF model's dims (mmdet ResNet-18 has the
# same layout as transformers' basic-block ResNet).
OUR_OPTIONS = {
    'model.num_queries': QUERIES,
    'model.backbone.depth': 18,
    'model.neck.in_channels': [512],
    'model.neck.out_channels': D,
    'model.positional_encoding.num_feats': D // 2,
    'model.encoder.num_layers': ENC,
    'model.encoder.layer_cfg': dict(embed_dims=D, num_heads=HEADS,
                                    feedforward_channels=FFN),
    'model.decoder.num_layers': DEC,
    'model.decoder.layer_cfg': dict(embed_dims=D, num_heads=HEADS,
                                    feedforward_channels=FFN),
    'model.bbox_head.embed_dims': D,
}


@pytest.fixture(scope='module')
def hf_model():
    """The random HF model and the folder / file it was saved to."""
    config = transformers.ConditionalDetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(
            layer_type='basic', depths=[2, 2, 2, 2],
            hidden_sizes=[64, 128, 256, 512], out_features=['stage4']),
        d_model=D, encoder_layers=ENC, decoder_layers=DEC,
        encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
        num_queries=QUERIES, num_labels=91)
    model = transformers.ConditionalDetrForObjectDetection(config).eval()
    return randomize_(model, seed=1)


@pytest.fixture(scope='module')
def hf_files(hf_model, tmp_path_factory):
    """{'safetensors': save_pretrained folder, 'bin': pytorch_model.bin}."""
    root = tmp_path_factory.mktemp('hf')
    hf_model.save_pretrained(root / 'pretrained')
    torch.save(hf_model.state_dict(), root / 'pytorch_model.bin')
    return {'safetensors': root / 'pretrained',
            'bin': root / 'pytorch_model.bin'}


@torch.no_grad()
def hf_layer_outputs(model, inputs: Tensor,
                     pixel_mask: Tensor) -> Tuple[Tensor, Tensor, object]:
    """HF class logits and boxes of every decoder layer, plus its output."""
    raw: List[Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: raw.append(o))
             for layer in model.model.decoder.layers]
    try:
        outputs = model(pixel_values=inputs, pixel_mask=pixel_mask)
    finally:
        for hook in hooks:
            hook.remove()
    hidden = model.model.decoder.layernorm(torch.stack(raw))  # (L, bs, nq, d)
    reference = model.model.decoder.ref_point_head(
        model.model.query_position_embeddings.weight).sigmoid()  # (nq, 2)
    offset = torch.logit(reference.clamp(1e-5, 1 - 1e-5))  # HF's clamping
    boxes = model.bbox_predictor(hidden)
    boxes[..., :2] += offset
    return model.class_labels_classifier(hidden), boxes.sigmoid(), outputs


@pytest.mark.parametrize('keep_91', [True, False])
@pytest.mark.parametrize('layout', ['safetensors', 'bin'])
def test_hf_outputs_match_per_layer(hf_model, hf_files, tmp_path, layout,
                                    keep_91):
    dst = tmp_path / 'converted.pth'
    convert_checkpoint(hf_files[layout], dst, 'hf', keep_91=keep_91,
                       cfg_options=OUR_OPTIONS)
    ours = build_target_model(cfg_options=OUR_OPTIONS,
                              num_classes=91 if keep_91 else None).eval()
    checkpoint = torch.load(dst, weights_only=True)
    ours.load_state_dict(checkpoint['state_dict'], strict=True)

    inputs, pixel_mask, samples = padded_batch(SIZES, seed=2,
                                               scale_factor=SCALE)
    hf_logits, hf_boxes, hf_out = hf_layer_outputs(hf_model, inputs,
                                                   pixel_mask)
    rows = slice(None) if keep_91 else list(COCO_CATEGORY_IDS)
    with torch.no_grad():
        logits, boxes = ours(inputs, samples, mode='tensor')
    assert logits.shape == (DEC, 2, QUERIES, 91 if keep_91 else 80)
    for layer in range(DEC):
        torch.testing.assert_close(logits[layer], hf_logits[layer][..., rows],
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(boxes[layer], hf_boxes[layer],
                                   atol=ATOL, rtol=0)
    # The last layer also equals HF's own final outputs.
    torch.testing.assert_close(logits[-1], hf_out.logits[..., rows],
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(boxes[-1], hf_out.pred_boxes, atol=ATOL,
                               rtol=0)

    # Final detections: HF's post-process (top 100 over queries x classes,
    # boxes scaled to the original size) vs our predict (img_shape, then
    # / scale_factor). For 80 classes HF post-processes the 80 COCO rows.
    hf_out.logits = hf_out.logits[..., rows]
    hf_dets = Processor().post_process_object_detection(
        hf_out, threshold=0.0,
        target_sizes=[s.metainfo['ori_shape'] for s in samples])
    with torch.no_grad():
        our_dets = ours.predict(inputs, samples)
    for hf_det, our_det in zip(hf_dets, our_dets):
        pred = our_det.pred_instances
        assert len(pred) == 100
        score_diff, box_diff = detection_differences(
            pred.scores, pred.labels, pred.bboxes, hf_det['scores'],
            hf_det['labels'], hf_det['boxes'], score_tol=ATOL)
        assert score_diff <= ATOL and box_diff <= 1e-3, (score_diff, box_diff)


def test_hf_checkpoint_meta_and_keys(hf_files, tmp_path):
    """The written file is weights-only loadable and names its classes."""
    result = convert_checkpoint(hf_files['safetensors'], tmp_path / 'c.pth',
                                'hf', cfg_options=OUR_OPTIONS)
    checkpoint = torch.load(tmp_path / 'c.pth', weights_only=True)
    assert set(checkpoint) == {'state_dict', 'meta'}
    meta = checkpoint['meta']
    assert meta['converted_from'] == 'hf'
    assert meta['dataset_meta']['classes'][0] == 'person'
    assert len(meta['dataset_meta']['classes']) == 80
    assert list(checkpoint['state_dict']) == list(result['state_dict'])


def r50_official_shapes():
    path = Path(__file__).parent / 'data' / \
        'official_conditional_detr_r50_state_dict.tsv'
    return {key: ast.literal_eval(shape) for key, shape in
            (line.split('\t') for line in path.read_text().splitlines())}


@pytest.fixture(scope='module')
def hf_r50_state_dict():
    """The state dict of HF's R50 model (transformers ResNet-50 backbone)."""
    config = transformers.ConditionalDetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(out_features=['stage4']),
        num_labels=91)
    return transformers.ConditionalDetrForObjectDetection(config).state_dict()


def test_hf_r50_maps_onto_the_official_layout(hf_r50_state_dict):
    """HF <-> official correspondence: same keys and shapes as the release."""
    official = hf_to_official(hf_r50_state_dict)
    assert not official.unmapped and not official.collisions
    shapes = {k: tuple(v.shape) for k, v in official.tensors.items()}
    assert shapes == r50_official_shapes()


def test_hf_timm_backbone_layout(hf_r50_state_dict):
    """The hub checkpoint's timm backbone (torchvision names) maps too."""
    official = hf_to_official(hf_r50_state_dict).tensors
    timm_layout = {k: v for k, v in hf_r50_state_dict.items()
                   if not k.startswith('model.backbone.')}
    for key, value in official.items():
        if key.startswith('backbone.0.body.'):
            name = key[len('backbone.0.body.'):]
            timm_layout[f'model.backbone.conv_encoder.model.{name}'] = value
    converted = hf_to_official(timm_layout)
    assert not converted.unmapped and not converted.collisions
    assert converted.tensors.keys() == official.keys()
    for key, value in official.items():
        assert torch.equal(converted.tensors[key], value), key


def assert_same_tensors(actual, expected):
    assert list(actual) == list(expected) or set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


@pytest.fixture(scope='module')
def sharded(hf_model, tmp_path_factory):
    """save_pretrained folders cut into shards: safetensors (transformers)
    and pytorch_model.bin (the same cut, written as transformers 4 did)."""
    import json

    from safetensors.torch import load_file
    root = tmp_path_factory.mktemp('sharded')
    hf_model.save_pretrained(root / 'safetensors', max_shard_size='20MB')
    index = json.loads((root / 'safetensors' / 'model.safetensors.index.json').read_text())
    (root / 'bin').mkdir()
    weight_map = {}
    for shard in sorted(set(index['weight_map'].values())):
        name = shard.replace('model', 'pytorch_model').replace('.safetensors', '.bin')
        tensors = load_file(str(root / 'safetensors' / shard))
        torch.save(tensors, root / 'bin' / name)
        weight_map.update({k: name for k in tensors})
    (root / 'bin' / 'pytorch_model.bin.index.json').write_text(json.dumps(
        dict(metadata={}, weight_map=weight_map)))
    return root


@pytest.mark.parametrize('layout', ['safetensors', 'bin'])
def test_sharded_folder_is_read_whole(hf_files, sharded, layout):
    """docs/checkpoints.md: sharded ``*.index.json`` folders work: every
    shard is read, and the tensors equal the single-file checkpoint's."""
    from cdetr_mmdet.convert import load_source_state_dict
    shards = [p for p in (sharded / layout).iterdir() if p.suffix in ('.safetensors', '.bin')]
    assert len(shards) >= 2, shards
    whole = load_source_state_dict(hf_files['safetensors'], 'hf')
    assert_same_tensors(load_source_state_dict(sharded / layout, 'hf'), whole)


def test_sharded_folder_converts_like_the_single_file(hf_files, sharded, tmp_path):
    single = convert_checkpoint(hf_files['safetensors'], tmp_path / 'a.pth', 'hf',
                                cfg_options=OUR_OPTIONS)['state_dict']
    cut = convert_checkpoint(sharded / 'safetensors', tmp_path / 'b.pth', 'hf',
                             cfg_options=OUR_OPTIONS)['state_dict']
    assert list(cut) == list(single)
    assert_same_tensors(cut, single)


def test_safetensors_file_and_folder_precedence(hf_files, tmp_path):
    """A bare ``.safetensors`` file is a state dict for every source; a folder
    holding both files is read from ``model.safetensors``, not the ``.bin``."""
    import shutil

    from safetensors.torch import save_file

    from cdetr_mmdet.convert import load_source_state_dict
    folder = hf_files['safetensors']
    whole = load_source_state_dict(folder, 'hf')
    assert_same_tensors(load_source_state_dict(folder / 'model.safetensors', 'hf'), whole)
    both = tmp_path / 'both'
    shutil.copytree(folder, both)
    torch.save({k: torch.zeros_like(v) for k, v in whole.items()}, both / 'pytorch_model.bin')
    assert_same_tensors(load_source_state_dict(both, 'hf'), whole)
    flat = {'a.weight': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2)}
    save_file(flat, str(tmp_path / 'flat.safetensors'))
    for source in ('official', 'mmdet'):  # no {'model': ...} / {'state_dict': ...} wrapper
        assert_same_tensors(load_source_state_dict(tmp_path / 'flat.safetensors', source), flat)


def test_broken_sharded_folder_is_refused_by_name(sharded, tmp_path):
    """A missing shard, an index without ``weight_map`` and a shard that does
    not hold what the index lists each stop the read, naming the file."""
    import json
    import re
    import shutil

    from cdetr_mmdet.convert import load_source_state_dict
    folder = tmp_path / 'cut'
    shutil.copytree(sharded / 'bin', folder)
    index_path = folder / 'pytorch_model.bin.index.json'
    index = json.loads(index_path.read_text())
    shards = sorted(set(index['weight_map'].values()))
    first = folder / shards[0]
    first.rename(tmp_path / 'away.bin')
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{str(index_path)!r} names {len(shards)} shards, 1 of them missing in "
            f"{str(folder)!r}: {[shards[0]]}; download every file of the model folder")):
        load_source_state_dict(folder, 'hf')
    (tmp_path / 'away.bin').rename(first)
    key = next(k for k, s in index['weight_map'].items() if s == shards[0])
    tensors = torch.load(first, weights_only=True)
    del tensors[key]
    tensors['stray.weight'] = torch.zeros(1)
    torch.save(tensors, first)
    with pytest.raises(ValueError, match=re.escape(
            f"{str(first)!r} does not hold the tensors its index assigns to it: 1 listed but "
            f"absent {[key]}, 1 present but not listed ['stray.weight']")):
        load_source_state_dict(folder, 'hf')
    index_path.write_text(json.dumps(dict(metadata={})))
    with pytest.raises(ValueError, match=re.escape(
            f"{str(index_path)!r} is not a sharded checkpoint index: expected a JSON object "
            "whose 'weight_map' maps each tensor name to its shard file (KeyError: "
            "'weight_map')")):
        load_source_state_dict(folder, 'hf')
