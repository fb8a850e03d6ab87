"""See inside a model: the analyses the seed papers explain their designs with, for any checkpoint.

- `attention`: Mobile-Former's Mobile->Former and Mobile<-Former attention weights, captured with hooks;
- `collapse`: ConvNeXt V2's feature-collapse statistic (average pairwise cosine distance between channels);
- `activations`: the channel-mean map of every stage.

The CLI is `mobilevision explain attention|collapse|activations` (cli/explain.py).
"""
from .activations import plot_activations, stage_activation_maps
from .attention import BlockAttention, attention_arrays, capture_mobile_former_attention, plot_attention
from .collapse import CollapseResult, channel_cosine_distance, collapse_taps, feature_collapse, plot_collapse

__all__ = ["BlockAttention", "CollapseResult", "attention_arrays", "capture_mobile_former_attention",
           "channel_cosine_distance", "collapse_taps", "feature_collapse", "plot_activations", "plot_attention",
           "plot_collapse", "stage_activation_maps"]
