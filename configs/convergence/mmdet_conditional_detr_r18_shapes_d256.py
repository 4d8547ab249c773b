# Convergence benchmark: mmdet's built-in ConditionalDETR (d must be 256).
# Everything but the transformer, head, loss and matcher comes from our
# Conditional DETR config.
_base_ = ['conditional_detr_r18_shapes_d256.py', '../_base_/mmdet_twins.py']

embed_dims = _base_.embed_dims
ffn_cfg = dict(
    _base_.ffn_cfg, embed_dims=embed_dims, feedforward_channels=1024)
model = dict(
    type='ConditionalDETR',
    encoder=dict(  # DetrTransformerEncoder
        _delete_=True,
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=embed_dims, num_heads=8, dropout=0.0,
                batch_first=True),
            ffn_cfg=ffn_cfg)),
    decoder=dict(  # ConditionalDetrTransformerDecoder
        _delete_=True,
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=embed_dims, num_heads=8, attn_drop=0.0,
                cross_attn=False),
            cross_attn_cfg=dict(
                embed_dims=embed_dims, num_heads=8, attn_drop=0.0,
                cross_attn=True),
            ffn_cfg=ffn_cfg),
        return_intermediate=True),
    bbox_head=dict(
        _base_.conditional_detr_head, _delete_=True, num_classes=4,
        embed_dims=embed_dims),
    train_cfg=dict(_delete_=True, assigner=_base_.conditional_detr_assigner),
    test_cfg=dict(_delete_=True, max_per_img=100))
