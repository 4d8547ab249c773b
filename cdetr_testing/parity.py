"""Helpers to check a conversion numerically against the source model.

A parity check runs the source model and ours, with converted weights, on
the same normalised, padded batch and compares every decoder layer's class
logits and boxes. Two things make such a check meaningful: weights that are
all random (freshly initialised models have zero biases, a zero last box
layer and identity BatchNorm statistics, which would hide a mapping error
in those tensors), and a batch of differently sized images (which exercises
the padding masks).
"""
from typing import List, Sequence, Tuple

import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import Tensor, nn


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every floating parameter and buffer a random value, in place.

    Matrices get N(0, 1 / fan_in) so activations stay O(1) through a deep
    network; 1-D weights and BatchNorm variances U(0.5, 1.5); biases and
    BatchNorm means N(0, 0.2).

    Args:
        module (nn.Module): The model.
        seed (int): Seed of the generator. Defaults to 0.

    Returns:
        nn.Module: ``module``.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in module.state_dict(keep_vars=True).items():
        if not tensor.is_floating_point():
            continue  # e.g. num_batches_tracked
        if tensor.dim() >= 2:
            fan_in = tensor[0].numel()
            value = torch.randn(tensor.shape, generator=generator) / fan_in**.5
        elif name.endswith(('weight', 'running_var')):
            value = torch.rand(tensor.shape, generator=generator) + 0.5
        else:
            value = torch.randn(tensor.shape, generator=generator) * 0.2
        tensor.data.copy_(value)
    return module


def padded_batch(sizes: Sequence[Tuple[int, int]], seed: int = 0,
                 scale_factor: float = 1.0
                 ) -> Tuple[Tensor, Tensor, List[DetDataSample]]:
    """A normalised batch of differently sized images, padded bottom-right.

    Args:
        sizes (Sequence[tuple[int, int]]): (h, w) of each image as fed to
            the model.
        seed (int): Seed of the pixel values. Defaults to 0.
        scale_factor (float): Resize factor from the original image to the
            input, stored in the metainfo (``ori_shape = img_shape /
            scale_factor``). Defaults to 1.0.

    Returns:
        tuple: ``inputs`` (bs, 3, H, W) with zeros in the padding,
        ``pixel_mask`` (bs, H, W) long, 1 inside each image (Hugging Face's
        convention), and the data samples with ``img_shape``, ``ori_shape``,
        ``pad_shape``, ``batch_input_shape`` and ``scale_factor``.
    """
    pad_h = max(h for h, _ in sizes)
    pad_w = max(w for _, w in sizes)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.zeros(len(sizes), 3, pad_h, pad_w)
    pixel_mask = torch.zeros(len(sizes), pad_h, pad_w, dtype=torch.long)
    samples = []
    for i, (h, w) in enumerate(sizes):
        inputs[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
        samples.append(DetDataSample(metainfo=dict(
            img_shape=(h, w),
            ori_shape=(round(h / scale_factor), round(w / scale_factor)),
            pad_shape=(pad_h, pad_w), batch_input_shape=(pad_h, pad_w),
            scale_factor=(scale_factor, scale_factor))))
    return inputs, pixel_mask, samples


def add_random_gts(samples: Sequence[DetDataSample], num_gts: Sequence[int],
                   num_classes: int, seed: int = 0,
                   device: str = 'cpu') -> None:
    """Give each data sample random ``gt_instances`` and an ``img_path``.

    Boxes are xyxy pixels inside the sample's ``img_shape``, each side
    10-40 % of the image's; labels uniform in ``[0, num_classes)``.

    Args:
        samples (Sequence[DetDataSample]): E.g. from :func:`padded_batch`.
        num_gts (Sequence[int]): Number of boxes of each sample.
        num_classes (int): Number of classes.
        seed (int): Seed of the generator. Defaults to 0.
        device (str): Device of the boxes and labels. Defaults to 'cpu'.
    """
    generator = torch.Generator().manual_seed(seed)
    for i, (sample, n) in enumerate(zip(samples, num_gts)):
        h, w = sample.img_shape
        xy = torch.rand(n, 2, generator=generator) * torch.tensor([w * .6, h * .6])
        wh = (torch.rand(n, 2, generator=generator) * .3 + .1) * torch.tensor([w, h])
        sample.set_metainfo(dict(img_path=f'img{i}.png'))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1).to(device),  # (n, 4)
            labels=torch.randint(num_classes, (n, ), generator=generator).to(device))


def detection_differences(scores: Tensor, labels: Tensor, boxes: Tensor,
                          ref_scores: Tensor, ref_labels: Tensor,
                          ref_boxes: Tensor,
                          score_tol: float = 1e-4) -> Tuple[float, float]:
    """Pair two detection lists and return their largest differences.

    Top-k lists of two implementations may order near-tied scores (equal to
    ~1e-7) differently, so detections are paired rather than compared by
    rank: each reference detection takes the unused detection of the same
    label, with a score within ``score_tol``, whose box is closest.

    Args:
        scores, labels, boxes (Tensor): (k,), (k,), (k, 4) detections.
        ref_scores, ref_labels, ref_boxes (Tensor): The reference's.
        score_tol (float): Largest score difference of a pair.
            Defaults to 1e-4.

    Returns:
        tuple[float, float]: Max absolute score and box coordinate
        differences over the pairs.

    Raises:
        AssertionError: The lists differ in length or a reference detection
            has no partner.
    """
    assert len(scores) == len(ref_scores), (len(scores), len(ref_scores))
    used = torch.zeros(len(scores), dtype=torch.bool)
    max_score, max_box = 0., 0.
    for score, label, box in zip(ref_scores, ref_labels, ref_boxes):
        candidates = ((labels == label) & ~used &
                      ((scores - score).abs() <= score_tol))
        assert candidates.any(), f'no partner for {label=} {score=} {box=}'
        distance = (boxes - box).abs().amax(dim=1)
        distance[~candidates] = float('inf')
        index = int(distance.argmin())
        used[index] = True
        max_score = max(max_score, float((scores[index] - score).abs()))
        max_box = max(max_box, float(distance[index]))
    return max_score, max_box
