"""Model optimization for the microcontroller: distillation, pruning, quantization-aware training.

Each stage takes a trained model and returns a trained model (``Stage`` objects in ``pipeline.py``), so
they compose in any order: ``distill -> structured prune -> QAT``. Every stage selects its epoch on the
protocol's validation split (held-out DS1 patients for inter-patient), never on the test set.
"""
