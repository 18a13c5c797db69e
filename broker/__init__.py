"""pulsewire message-bus contract: wire format (and, next, topics, broker configs, launcher).

Imported by ``training`` and ``edge_runtime``; imports neither.
"""
