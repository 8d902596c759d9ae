"""CLEFT's losses: symmetric InfoNCE (`clip_loss`), sigmoid (`siglip_loss`), stage 2's multi-label BCE.

They are defined once, beside the model (`modeling/loss_cleft.py`), so that `CLEFTModel(return_loss=True)`, the
trainer and a Hub copy of the model code (`trust_remote_code`) use the same function and the same logit-scale
clamp; this module is their library address.
"""

from .modeling.loss_cleft import (
    MAX_LOGIT_SCALE,
    clip_loss,
    logit_scale_value,
    multilabel_bce_prompt_loss,
    siglip_loss,
)

__all__ = ["MAX_LOGIT_SCALE", "clip_loss", "logit_scale_value", "multilabel_bce_prompt_loss", "siglip_loss"]
