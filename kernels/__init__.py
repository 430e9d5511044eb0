"""Numeric primitives shared by the indexers and the memory (torch, batched).

This package imports none of vidmem's others. Note: `kernels` is also the import name of Hugging
Face's `kernels` package; ours is distributed as `vidmem` 0.x, which transformers' version check
(0.18.2 <= v < 0.19) rejects, so transformers never mistakes it for theirs (a test keeps that true).
"""
