"""edgectl: the host side — train, prune, quantize, export, bundle, bench, serve, deploy."""
