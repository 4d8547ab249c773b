"""Pre-train the convergence benchmark's backbone: our stand-in for ImageNet.

The paper starts every detector from an ImageNet-pretrained ResNet; nothing can
be downloaded here, and DETR-family models trained from scratch on a few
thousand images stay at zero AP for a long time (docs/convergence.md). So the
benchmark first trains its backbone on an image-level task, "which shapes are
in this image" (multi-label, one sigmoid per class), on images of its own: drawn
with the synthetic generator's 'easy' style but from a different seed stream
than the detection splits, never written to disk, never with boxes. The three
detectors then start from the same backbone weights, as the paper's do.

The backbone is built from the detector config's own ``model.backbone`` dict,
so its architecture is the detector's by construction. The result is a plain
tensor dict ``{'state_dict': ...}`` (loadable with ``weights_only=True``), used
through mmengine's ``Pretrained`` init, written atomically with a JSON sidecar
of its settings and accuracy; an existing file with the same settings is reused.

Command (``benchmarks/convergence.py`` calls it)::

    python benchmarks/pretrain_backbone.py --config \
        configs/convergence/conditional_detr_r18_shapes_d256.py --out backbone.pth
"""
import argparse
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
# Seed-stream tag: the detection splits use [seed, split_id(0/1), ...]; 7 is neither.
PRETRAIN_STREAM = 7
DEFAULTS = dict(num_train=4000, num_val=500, epochs=6, batch_size=64, lr=1e-3,
                weight_decay=1e-4, img_size=128, min_objects=0, max_objects=3, seed=0)


def render_split(num: int, split_tag: int, settings: Dict) -> Tuple[Tensor, Tensor]:
    """Draw ``num`` images and their multi-hot class labels.

    Args:
        num: Number of images.
        split_tag: 0 for the pre-training train split, 1 for its val split.
        settings: ``DEFAULTS``-like dict (img_size, min/max_objects, seed).

    Returns:
        Images, (num, 3, H, W) uint8 in RGB order (the detector's
        ``DetDataPreprocessor`` turns the BGR PNGs into RGB too), and labels,
        (num, num_classes) float in {0, 1}.
    """
    from cdetr_mmdet.data.synthetic_shapes import CLASSES, PRESETS, render_image
    size = settings['img_size']
    images = np.empty((num, size, size, 3), np.uint8)
    labels = np.zeros((num, len(CLASSES)), np.float32)
    for index in range(num):
        rng = np.random.default_rng([settings['seed'], PRETRAIN_STREAM, split_tag, index])
        count = int(rng.integers(settings['min_objects'], settings['max_objects'] + 1))
        img, anns = render_image(rng, size, size, count, PRESETS['easy'])
        images[index] = img[..., ::-1]  # BGR -> RGB
        for ann in anns:
            labels[index, ann['category_id'] - 1] = 1.0
    # (num, H, W, 3) -> (num, 3, H, W)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


class Classifier(nn.Module):
    """Backbone, global average pooling of its last output, one linear layer.

    Args:
        backbone: The detector's backbone module (mmdet ``ResNet``).
        channels: Channels of the backbone's last output.
        num_classes: Number of labels.
        mean: Per-channel RGB mean, from the detector's data preprocessor.
        std: Per-channel RGB std, from the detector's data preprocessor.
    """

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int,
                 mean: List[float], std: List[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, num_classes)
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits, (bs, num_classes), of uint8 RGB images (bs, 3, H, W)."""
        x = (images.float() - self.mean) / self.std
        feat = self.backbone(x)[-1]  # (bs, c, h, w)
        return self.fc(feat.mean(dim=(2, 3)))


def build_classifier(config: str) -> Classifier:
    """The detector config's backbone under a fresh classification layer."""
    import cdetr_mmdet  # noqa: F401  (registers our modules for the config's imports)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from cdetr_mmdet.data.synthetic_shapes import CLASSES
    register_all_modules()
    cfg = Config.fromfile(config)
    backbone_cfg = cfg.model.backbone.copy()
    backbone_cfg.pop('init_cfg', None)  # this script makes the pretrained weights
    # The detector freezes the stem, stage 1 and BN (as the paper does); pre-training trains all.
    backbone_cfg.update(frozen_stages=-1, norm_eval=False,
                        norm_cfg=dict(type='BN', requires_grad=True))
    backbone = MODELS.build(backbone_cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # its parameter-by-parameter init report says nothing here
    backbone.init_weights()
    logger.setLevel(level)
    with torch.no_grad():
        channels = backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1]
    pre = cfg.model.data_preprocessor
    return Classifier(backbone, channels, len(CLASSES), pre.mean, pre.std)


@torch.no_grad()
def evaluate(model: Classifier, images: Tensor, labels: Tensor) -> Dict[str, float]:
    """Mean BCE and per-label accuracy (threshold 0.5) on a held-out split."""
    model.eval()
    logits = torch.cat([model(images[i:i + 128]) for i in range(0, len(images), 128)])
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    acc = ((logits > 0).float() == labels).float().mean().item()
    return dict(val_bce=round(loss, 4), val_label_acc=round(acc, 4))


def check_settings(settings: Dict) -> None:
    """ValueError, naming the setting, on sizes that would give an empty epoch or split."""
    for key in ('num_train', 'num_val', 'epochs', 'batch_size'):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ValueError(f'pre-training setting {key!r} must be a positive int, '
                             f'got {settings[key]!r}')
    if settings['num_train'] < settings['batch_size']:
        raise ValueError(f"pre-training needs num_train ({settings['num_train']}) >= batch_size "
                         f"({settings['batch_size']}): an epoch is num_train // batch_size steps")


def train_epoch(model: Classifier, optimizer: torch.optim.Optimizer, scheduler,
                images: Tensor, labels: Tensor, batch_size: int,
                generator: torch.Generator) -> float:
    """One pass over shuffled, randomly flipped batches; returns the last batch's BCE."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    for i in range(len(images) // batch_size):
        idx = order[i * batch_size:(i + 1) * batch_size]
        batch = images[idx]
        flip = torch.rand(len(idx), generator=generator) < 0.5  # the detector's RandomFlip
        batch[flip] = batch[flip].flip(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return loss.item()


def save_backbone(model: Classifier, out: Path) -> None:
    """Write ``{'state_dict': backbone weights}`` atomically (a crash leaves no half file)."""
    state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    tmp = out.with_name(out.name + '.tmp')
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': state}, tmp)
    os.replace(tmp, out)


def pretrain(config: str, out: Path, settings: Optional[Dict] = None, log=print) -> Dict:
    """Pre-train the backbone of ``config`` unless ``out`` holds one with these settings.

    Args:
        config: Detector config whose ``model.backbone`` is trained.
        out: Path of the weights file; ``<out>.json`` records settings and results.
        settings: Overrides of ``DEFAULTS``.
        log: Progress printer.

    Returns:
        The sidecar dict: settings, per-epoch val metrics, seconds.

    Raises:
        ValueError: On sizes that would give an empty epoch or split.
    """
    settings = dict(DEFAULTS, **(settings or {}), config=Path(config).name)
    check_settings(settings)
    sidecar = Path(str(out) + '.json')
    if out.exists() and sidecar.exists():
        previous = json.loads(sidecar.read_text())
        if previous['settings'] == settings:
            log(f'[pretrain] {out} exists with the same settings: reused')
            return previous
    torch.manual_seed(settings['seed'])
    start = time.perf_counter()
    train_x, train_y = render_split(settings['num_train'], 0, settings)
    val_x, val_y = render_split(settings['num_val'], 1, settings)
    log(f'[pretrain] rendered {len(train_x)} + {len(val_x)} images in '
        f'{time.perf_counter() - start:.0f} s; label frequency {train_y.mean(0).tolist()}')
    model = build_classifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings['lr'],
                                  weight_decay=settings['weight_decay'])
    steps = settings['epochs'] * (len(train_x) // settings['batch_size'])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings['lr'], total_steps=steps,
                                                    pct_start=0.1)
    generator = torch.Generator().manual_seed(settings['seed'])
    history = []
    for epoch in range(1, settings['epochs'] + 1):
        loss = train_epoch(model, optimizer, scheduler, train_x, train_y,
                           settings['batch_size'], generator)
        history.append(dict(epoch=epoch, train_bce=round(loss, 4),
                            **evaluate(model, val_x, val_y),
                            seconds=round(time.perf_counter() - start, 1)))
        log(f'[pretrain] {history[-1]}')
    save_backbone(model, out)
    result = dict(settings=settings, history=history, seconds=round(time.perf_counter() - start, 1))
    sidecar.write_text(json.dumps(result, indent=1))
    return result


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', required=True, help='detector config (its model.backbone)')
    parser.add_argument('--out', required=True, help='weights file to write')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (2)')
    for key, value in DEFAULTS.items():
        parser.add_argument(f'--{key.replace("_", "-")}', type=type(value), default=value)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pretrain(args.config, Path(args.out), {k: getattr(args, k) for k in DEFAULTS})


if __name__ == '__main__':
    main()
