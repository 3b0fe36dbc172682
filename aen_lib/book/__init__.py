"""The book's helpers: notebook support (parameters, glue, running chapters) and plotting.

Imports nothing: importing a subpackage loads no torch (entry points configure OpenMP first).
"""
