"""CPU speed-ups kept out of the model files; each device's path.

=========================  ==============================  =====================
operation                  CPU (training, p > 0)           CUDA / other devices
=========================  ==============================  =====================
attention-weight dropout   explicit softmax, SFC64 masks   fused SDPA, dropout_p
                           (:mod:`.attention`)
encoder self-attention     the same explicit path          nn.MultiheadAttention
                                                           (SDPA, dropout_p)
residual / FFN dropout     :class:`.dropout.CheapDropout`  F.dropout
                           (SFC64 masks)
=========================  ==============================  =====================

Without dropout (eval, ``p = 0``) every device runs PyTorch's fused
``scaled_dot_product_attention``. On CUDA no dropout mask is drawn on the
host. The channels-last backbone options are the detector's
``channels_last`` / ``frozen_channels_last`` config keys.
"""
# The functions ``attention`` and ``dropout`` are not re-exported: they
# would shadow the submodules of the same names.
from .attention import uses_explicit_path
from .dropout import CheapDropout, drop_mask, keep_scale_mask

__all__ = ['uses_explicit_path', 'CheapDropout', 'drop_mask',
           'keep_scale_mask']
