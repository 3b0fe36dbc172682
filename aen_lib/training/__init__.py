"""Training: the one loop, resumable sweeps over grids, the torchrun launcher (DDP), the memory/time planner and
the run locks.

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
