"""The agent's HTTP face: tornado handlers over the Agent, one route table."""
