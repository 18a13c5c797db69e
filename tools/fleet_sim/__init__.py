"""A device simulator that scales: thousands of light devices multiplexed on asyncio MQTT connections
across worker processes, speaking the real wire format and topic tree (docs/scale.md)."""
