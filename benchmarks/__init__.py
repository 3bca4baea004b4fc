"""Benchmarks of pirid_lite's hot paths against straightforward references (``python -m benchmarks.run_all``)."""
