"""Attention statistics: how much of each decoder cross-attention falls on the object.

For every model of the convergence benchmark and every given epoch, runs
``cdetr_mmdet.analysis.analyze_cross_attention`` over the val images and, for each
ground-truth box, takes the query whose predicted box overlaps it most (IoU) and measures,
relative to that query's *predicted* box (``cdetr_mmdet.analysis.box_regions``; expanded by
``--margin`` cells on each side, default half a cell = the cells that overlap the box):

* per layer and map type (spatial / content / combined), the share of attention mass in the
  box, averaged over heads and objects, next to what a uniform map would put there;
* per layer and head, the spatial map's mass in the box's core (``inside``), its four edge
  bands (``left``, ``right``, ``top``, ``bottom``) and ``outside``, and the part of the box
  (core or band) that holds most of the in-box mass.

Writes JSON and a markdown table. Checkpoints: ``KEEP_DIR/<model>_seed<seed>/epoch_<N>.pth``
(``benchmarks/convergence.py``'s models: ours, detr, mmdet_cdetr); configs and data paths as
``benchmarks/convergence.py`` sets them::

    nice -n 5 python benchmarks/attention_stats.py --epochs 5 30 --num-images 100 \\
        --keep-dir work_dirs/convergence_keep --data-dir work_dirs/convergence/data \\
        --out docs/attention_stats
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]

MAPS = ('spatial', 'content', 'combined')
CONVERGENCE_DATA = REPO / 'work_dirs' / 'convergence' / 'data'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    from convergence import MODELS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='*', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--epochs', type=int, nargs='+', default=[5, 30],
                        help='checkpoints to measure (default: 5 30)')
    parser.add_argument('--seed', type=int, default=0, help='training seed of the runs (0)')
    parser.add_argument('--keep-dir', default=str(REPO / 'work_dirs' / 'convergence_keep'),
                        help='holds <model>_seed<seed>/epoch_<N>.pth')
    parser.add_argument('--data-dir',
                        help="val data root (annotations/, val/); default: the convergence "
                        "benchmark's work_dirs/convergence/data for its models, each "
                        "--model-file config's own")
    parser.add_argument('--num-images', type=int, default=0,
                        help='first N val images only (default: 0 = all)')
    parser.add_argument('--margin', type=float, default=0.5,
                        help='box expansion on each side, in feature cells (default: 0.5)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default: 1)')
    parser.add_argument('--model-file', nargs=4, action='append', default=[],
                        metavar=('NAME', 'EPOCH', 'CONFIG', 'CHECKPOINT'),
                        help='also measure this config + checkpoint on its own val set '
                        '(repeatable; e.g. the demo model)')
    parser.add_argument('--figure-images', type=int, nargs='*', default=[],
                        help='val image indices to draw (Figure-4 PNG per model and epoch of the '
                        'query that best matches the largest object, and figure1_img<i>.png: '
                        'their spatial maps, one row per model and epoch; default: none)')
    parser.add_argument('--figure-dir', default=None,
                        help='where those PNGs go (default: next to OUT)')
    parser.add_argument('--out', default=str(REPO / 'work_dirs' / 'attention_stats'),
                        help='writes OUT.json and OUT.md')
    return parser.parse_args(argv)


def build_model(config: Path, checkpoint: Path, data_dir: Optional[Path]):
    """A config (data root set unless None), weights loaded, eval mode."""
    from mmdet.registry import MODELS as REGISTRY
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    cfg = Config.fromfile(str(config))
    if data_dir is not None:
        cfg.val_dataloader.dataset.data_root = str(data_dir) + '/'
    cfg.model.backbone.init_cfg = None  # the checkpoint holds the backbone
    model = REGISTRY.build(cfg.model)
    load_checkpoint(model, str(checkpoint), map_location='cpu', logger='silent')
    return model.eval(), cfg


def draw_figure(maps, b: int, sample, label: str, out_path: Path, short: str = ''):
    """Figure-4 PNG of the query best matching the image's largest ground-truth box.

    Returns:
        tuple: The PNG's path, the image (RGB, as fed) and that query's row of the
        Figure-1 comparison (label, last layer's spatial maps (heads, H, W), box,
        reference point in pixels or None, metainfo).
    """
    import mmcv
    from mmdet.structures.bbox import bbox_overlaps

    from cdetr_mmdet.analysis.figures import draw_query_attention
    gts = sample.gt_instances
    largest = int(((gts.bboxes[:, 2] - gts.bboxes[:, 0])
                   * (gts.bboxes[:, 3] - gts.bboxes[:, 1])).argmax())
    iou = bbox_overlaps(gts.bboxes[largest:largest + 1], maps.boxes[b])[0]
    query = int(iou.argmax())
    h, w = sample.metainfo['img_shape']
    image = mmcv.imresize(mmcv.imread(sample.metainfo['img_path'], channel_order='rgb'), (w, h))
    layer = maps.num_layers - 1
    title = (f'{label}: query {query}, predicted box IoU {float(iou[query]):.2f} with the '
             f'largest object, score {float(maps.scores[b, query]):.2f}, decoder layer '
             f'{layer + 1}/{maps.num_layers}')
    png = draw_query_attention(image, maps, sample.metainfo, b, query, layer,
                               range(maps.num_heads), title, out_path)
    ref = (None if maps.references is None else
           (maps.references[b, query] * maps.references.new_tensor([w, h])).tolist())
    row = (f'{short or label}\nIoU {float(iou[query]):.2f}',
           maps.spatial[layer, b, :, query].clone(), maps.boxes[b, query].tolist(), ref,
           sample.metainfo)
    return png, image, row


def measure(model, cfg, num_images: int, batch_size: int, margin: float,
            figure_images=(), figure_prefix: Optional[Path] = None,
            label: str = '', figure_rows: Optional[Dict] = None, short: str = '') -> Dict:
    """Sum the statistics over the val images; returns per-layer/head means.

    ``figure_rows`` (image index -> (image, rows)) collects the Figure-1 rows.
    """
    import torch
    from mmdet.registry import DATASETS
    from mmdet.structures.bbox import bbox_overlaps
    from mmengine.dataset import pseudo_collate

    from cdetr_mmdet.analysis import analyze_cross_attention
    from cdetr_mmdet.analysis.box_regions import REGIONS, region_index, region_mass
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    count = len(dataset) if num_images <= 0 else min(num_images, len(dataset))
    inside = {name: 0. for name in MAPS}  # summed over objects: (L, heads) tensors
    uniform, regions_sum, ious, objects = 0., 0., [], 0
    for start in range(0, count, batch_size):
        batch = model.data_preprocessor(
            pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, count))]),
            False)
        maps = analyze_cross_attention(model, batch['inputs'], batch['data_samples'])
        for b, sample in enumerate(batch['data_samples']):
            gts = sample.gt_instances.bboxes
            if len(gts) == 0:
                continue
            if start + b in figure_images:
                png, image, row = draw_figure(maps, b, sample, label,
                                              Path(f'{figure_prefix}_img{start + b}.png'), short)
                if figure_rows is not None:
                    figure_rows.setdefault(start + b, (image, []))[1].append(row)
                print(f'  wrote {png}', flush=True)
            iou = bbox_overlaps(gts, maps.boxes[b])  # (num_gts, nq)
            best_iou, queries = iou.max(1)
            for q, value in zip(queries.tolist(), best_iou.tolist()):
                region = region_index(maps.boxes[b, q].tolist(), maps.feat_size,
                                      sample.metainfo['batch_input_shape'], margin)
                valid = torch.ones_like(region, dtype=torch.bool)
                if maps.key_padding_mask is not None:
                    valid = ~maps.key_padding_mask[b]
                in_box = (region < len(REGIONS) - 1)
                uniform += float((in_box & valid).sum() / valid.sum())
                for name in MAPS:
                    attn = getattr(maps, name)[:, b, :, q]  # (L, heads, H, W)
                    inside[name] = inside[name] + (attn * in_box).flatten(-2).sum(-1)
                regions_sum = regions_sum + region_mass(maps.spatial[:, b, :, q], region)
                ious.append(value)
                objects += 1
        print(f'  {min(start + batch_size, count)}/{count} images', flush=True)
    mean = {name: (inside[name] / objects).tolist() for name in MAPS}
    return dict(images=count, objects=objects, mean_iou=sum(ious) / max(objects, 1),
                uniform_inside=uniform / max(objects, 1), inside=mean,
                spatial_regions=(regions_sum / objects).tolist(), regions=list(REGIONS))


def markdown(results: List[Dict], margin: float) -> str:
    """The two tables: in-box mass per layer/map, dominant spatial region per head."""
    lines = [f'Attention mass inside the predicted box (expanded by {margin} cell per side), '
             'mean over heads and objects; "uniform" is what a flat map would put there.', '',
             '| model | epoch | layer | spatial | content | combined | uniform | objects | '
             'mean IoU |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in results:
        for layer in range(len(r['inside']['spatial'])):
            cells = [sum(r['inside'][m][layer]) / len(r['inside'][m][layer]) for m in MAPS]
            lines.append(f"| {r['model']} | {r['epoch']} | {layer + 1} | "
                         + ' | '.join(f'{c:.2f}' for c in cells)
                         + f" | {r['uniform_inside']:.2f} | {r['objects']} | "
                         f"{r['mean_iou']:.2f} |")
    heads = len(results[0]['spatial_regions'][0])
    lines += ['', 'Spatial map, last decoder layer, per head: of the mass that falls in the '
              'box, the part holding most of it (box core "inside" or an edge band) and its '
              'share; a flat map would give about 0.25 to the core and 0.19 to each band.', '',
              '| model | epoch | ' + ' | '.join(f'head {h}' for h in range(heads)) + ' |',
              '| --- | --- | ' + ' | '.join('---' for _ in range(heads)) + ' |']
    for r in results:
        cells = []
        for mass in r['spatial_regions'][-1]:
            in_box = mass[:-1]  # the last region is 'outside'
            top = max(range(len(in_box)), key=in_box.__getitem__)
            cells.append(f"{r['regions'][top]} {in_box[top] / max(sum(in_box), 1e-9):.2f}")
        lines.append(f"| {r['model']} | {r['epoch']} | " + ' | '.join(cells) + ' |')
    regions = results[0]['regions']
    lines += ['', 'Spatial map, last decoder layer: mean mass per region, per head.', '',
              '| model | epoch | head | ' + ' | '.join(regions) + ' |',
              '| --- | --- | --- | ' + ' | '.join('---' for _ in regions) + ' |']
    for r in results:
        for head, mass in enumerate(r['spatial_regions'][-1]):
            lines.append(f"| {r['model']} | {r['epoch']} | {head} | "
                         + ' | '.join(f'{m:.2f}' for m in mass) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    """Measure every (model, epoch); write OUT.json and OUT.md."""
    args = parse_args(argv)
    from convergence import MODELS
    import torch
    torch.set_num_threads(args.threads)
    import cdetr_mmdet  # noqa: F401  (our modules, safe checkpoint globals)
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    results = []
    from convergence import CONFIG_DIR
    runs = [(name, epoch, CONFIG_DIR / MODELS[name][0],
             Path(args.keep_dir) / f'{name}_seed{args.seed}' / f'epoch_{epoch}.pth',
             Path(args.data_dir or CONVERGENCE_DATA).resolve(), MODELS[name][1])
            for name in args.models for epoch in args.epochs]
    runs += [(name, int(epoch), Path(config), Path(ckpt),
              Path(args.data_dir).resolve() if args.data_dir else None, name)
             for name, epoch, config, ckpt in args.model_file]
    for name, epoch, config, ckpt, data_dir, title in runs:
        if not ckpt.is_file():
            sys.exit(f'error: no checkpoint {ckpt}')
    figure_rows = {}
    for name, epoch, config, ckpt, data_dir, title in sorted(
            runs, key=lambda run: run[1]):  # by epoch: Figure-1 rows at equal epochs together
        start = time.perf_counter()
        print(f'[attention_stats] {name} epoch {epoch}: {ckpt}', flush=True)
        model, cfg = build_model(config, ckpt, data_dir)
        prefix = Path(args.figure_dir or Path(args.out).parent) / f'{name}_epoch{epoch}'
        row = dict(model=name, epoch=epoch, checkpoint=str(ckpt),
                   **measure(model, cfg, args.num_images, args.batch_size, args.margin,
                             set(args.figure_images), prefix, f'{title}, epoch {epoch}',
                             figure_rows, f'{name}\nepoch {epoch}'))
        row['seconds'] = round(time.perf_counter() - start, 1)
        results.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from cdetr_mmdet.analysis.figures import draw_spatial_comparison
    for index, (image, rows) in sorted(figure_rows.items()):
        png = draw_spatial_comparison(
            image, rows, f'val image {index}: spatial maps, last decoder layer, of the query '
            'best matching the largest object', Path(args.figure_dir or out.parent)
            / f'figure1_img{index}.png')
        print(f'  wrote {png}', flush=True)
    meta = dict(margin_cells=args.margin, num_images=args.num_images, seed=args.seed,
                command=' '.join(sys.argv))
    out.with_suffix('.json').write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    table = markdown(results, args.margin)
    out.with_suffix('.md').write_text(table)
    print(table)
    print(f'[attention_stats] wrote {out.with_suffix(".json")} and {out.with_suffix(".md")}')
    return results


if __name__ == '__main__':
    main()
