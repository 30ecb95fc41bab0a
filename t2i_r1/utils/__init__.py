"""Small shared helpers: image grids, atomic file writes, loading scoring checkpoints, image batches."""
