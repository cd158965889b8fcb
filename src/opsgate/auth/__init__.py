"""API keys, their store, and resolving a presented key to a ``Principal``."""
