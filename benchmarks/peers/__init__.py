"""Peer caching methods written for the benchmark (TeaCache-style rule, uniform skipping)."""
