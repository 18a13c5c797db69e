"""pulsewire training side: data, models, federated strategies, export (needs TensorFlow)."""
