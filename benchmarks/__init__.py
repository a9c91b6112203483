"""Benchmark of caching methods on small reference video DiTs (``python -m benchmarks``).

- ``data``: procedural videos used as latents,
- ``train``: flow-matching training of the reference models (``python -m benchmarks.train``),
- ``models``: ``load_reference`` / ``list_reference``,
- ``sampling``: Euler and UniPC flow-matching loops with two-call classifier-free guidance,
- ``metrics``: PSNR and SSIM,
- ``counting``: executed-block counting,
- ``methods``: the method registry (diffusers' cache hooks, the peers in ``peers/``),
- ``run``: the command line entry.
"""
