"""Theory: the classical sparse-coding solvers, the geometry of the penalties, and the mechanism measures that put
trained encoders against them.

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
