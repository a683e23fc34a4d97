"""splat stage."""
