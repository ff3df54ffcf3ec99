"""Small stdlib helpers shared by the agent and the server (change notices, worker pool, retention policy)."""
