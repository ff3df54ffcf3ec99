"""`jupyter-remote swarm`: agents as a global service of a Docker Swarm."""
