"""Talking HTTP: the kernel's one client, the record relay and the one handler base."""
