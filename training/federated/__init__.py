"""Federated learning: client updates and the strategies that combine them (no I/O here)."""
