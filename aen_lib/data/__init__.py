"""Data: the spiked-dictionary generator, the offline corpus and texts, the language models, harvesting activations,
the activation cache and the row sources the trainer reads.

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
