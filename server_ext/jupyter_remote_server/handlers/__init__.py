"""Thin tornado handlers over the RemoteManager."""
