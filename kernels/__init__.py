"""Numeric primitives shared by the indexers and the memory (torch, batched).

This package imports none of vidmem's others. Note: `kernels` is also the import name of Hugging
Face's `kernels` package. Ours is distributed as `vidmem` 0.x, which transformers' version check
(0.18.2 <= v < 0.19 in 5.24) rejects, so transformers never mistakes it for theirs. Transformers 5.25
made theirs a hard dependency: its version passes the check and `from kernels import ...` then finds
ours, so pyproject caps transformers below 5.25 (tests/test_layout.py keeps both true).
"""
