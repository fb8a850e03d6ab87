"""Self-supervised pre-training: FCMAE for ConvNeXt V2."""
from ..tasks.fcmae import FCMAE, masked_forward_features, random_mask, upsample_mask

__all__ = ["FCMAE", "masked_forward_features", "random_mask", "upsample_mask"]
