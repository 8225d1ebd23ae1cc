"""Time series on both sides: aligning channels to one rate and cutting windows (pure)."""
