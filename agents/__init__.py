"""ClipZoo agents and the pieces they share (weight clipping, diagnostics)."""
