"""Benchmark of caching methods on small reference video DiTs (``python -m benchmarks``).

- ``data``: procedural videos used as latents,
- ``train``: flow-matching training of the reference models (``python -m benchmarks.train``),
- ``models``: ``load_reference`` / ``list_reference``,
- ``sampling``: Euler, UniPC and DPM-Solver++ flow-matching loops with two-call
  classifier-free guidance,
- ``metrics``: PSNR and SSIM,
- ``counting``: executed-block counting,
- ``methods``: the method registry (diffusers' cache hooks, the peers and the uniform baselines
  in ``peers/``),
- ``run``: the command line entry, with the named sampling settings (``--setting hard``),
- ``report``: tables from result files (``python -m benchmarks.report``; ``--held-out``,
  ``--presets``),
- ``compare``: the presets at their budgets against the baselines and peers, per model,
  scheduler and step count (``python -m benchmarks.compare``),
- ``hardness``: how far 50% uniform skipping falls in a setting (``python -m
  benchmarks.hardness``).
"""
