"""The fleet server: a bus consumer that stores what the fleet says and shows it on a web dashboard.

Imports ``broker`` only (never ``training``, ``tools`` or TensorFlow).
"""
