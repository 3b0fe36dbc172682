"""The SAE: its configuration, the model (one SAE or a stack), the architectures (one file each, in a registry),
the adaptive weights, the optimiser, the batch reducers, and its files on disk (the SAELens layout).

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
