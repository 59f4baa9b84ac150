"""pytest fixtures wiring the irqlab library (filled in below)."""
