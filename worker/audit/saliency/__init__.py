"""Saliency maps that can be differentiated with respect to the input.

Every method returns attributions of shape (N, C, H, W); ``saliency_map`` reduces them to a map
of shape (N, H, W) by summing absolute values over channels (or signed values, as an option).
With ``create_graph=True`` the map keeps its graph, so a loss on the map has a gradient with
respect to the input: the attacks need this, and Captum's implementations do not provide it.
"""

from worker.audit.saliency.config import SaliencyConfig
from worker.audit.saliency.maps import attributions, reduce_channels, saliency_map

__all__ = ["SaliencyConfig", "attributions", "reduce_channels", "saliency_map"]
