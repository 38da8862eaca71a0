"""Benchmarks (``fieldhub bench ...``): load generators and raw-limit measurements."""
