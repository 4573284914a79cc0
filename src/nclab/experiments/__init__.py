"""Applications built on the collapse and recovery engines (``probe``: any model, any layer, streamed)."""
