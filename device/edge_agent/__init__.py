"""edge-agent: the on-board inspection service (never imports torch or edgectl)."""
