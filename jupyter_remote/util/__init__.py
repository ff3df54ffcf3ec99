"""Small shared helpers (change notices, a worker pool, the retention policy and settings)."""
