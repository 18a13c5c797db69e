"""pulsewire edge runtime: the light (no TensorFlow) side that runs on a gateway or Raspberry Pi.

The signal path in this package (filter, beat windows, RR features) is the single definition of
the model's input: training imports it, so what a device computes is what the model learned from.
"""
