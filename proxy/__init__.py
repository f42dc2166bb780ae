"""proxy stage."""
