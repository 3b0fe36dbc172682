"""Results: the record format and its store, the reference sets (synthetic and language-model), the factorial
analysis and the claims the book checks.

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
