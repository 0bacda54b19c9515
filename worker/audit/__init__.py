"""The saliency-map fragility audit: saliency maps, attacks on them, metrics and the report."""
