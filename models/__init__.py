"""Pure torch: encoders, heads, losses, loss weighting. No I/O, no Prefect."""
