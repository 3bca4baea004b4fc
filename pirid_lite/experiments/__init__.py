"""Batches of runs and what is built from them: reproduce (Tables 1-2), calibrate, result tables."""
