"""The engine-state gateway: UDP datagrams from inference engines, validated, kept, logged."""
