"""Evaluation of a trained SAE: the metrics, dead latents (one definition module), spliced language-model evaluation
and feature analysis.

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
