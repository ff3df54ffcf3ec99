"""The node registry, the executor pool and reconciliation of nodes that come back."""
