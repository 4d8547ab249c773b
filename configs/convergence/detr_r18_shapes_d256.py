# Convergence benchmark: mmdet's built-in DETR. Everything but the
# transformer, head, loss and matcher comes from our Conditional DETR config.
_base_ = ['conditional_detr_r18_shapes_d256.py', '../_base_/mmdet_twins.py']

embed_dims = _base_.embed_dims
# The sizes are our model's (layers, heads, feed-forward width, queries).
attn_cfg = dict(
    embed_dims=embed_dims, num_heads=_base_.layer_cfg.num_heads, dropout=0.0,
    batch_first=True)
ffn_cfg = dict(
    _base_.ffn_cfg, embed_dims=embed_dims,
    feedforward_channels=_base_.layer_cfg.feedforward_channels)
model = dict(
    type='DETR',
    encoder=dict(  # DetrTransformerEncoder
        _delete_=True,
        num_layers=_base_.model.encoder.num_layers,
        layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(  # DetrTransformerDecoder
        _delete_=True,
        num_layers=_base_.model.decoder.num_layers,
        layer_cfg=dict(
            self_attn_cfg=attn_cfg, cross_attn_cfg=attn_cfg,
            ffn_cfg=ffn_cfg),
        return_intermediate=True),
    bbox_head=dict(
        _base_.detr_head, _delete_=True,
        num_classes=_base_.model.bbox_head.num_classes, embed_dims=embed_dims),
    train_cfg=dict(_delete_=True, assigner=_base_.detr_assigner),
    # DETRHead takes the top-k queries: k must not exceed num_queries.
    test_cfg=dict(_delete_=True, max_per_img=_base_.model.num_queries))
