"""Retrieval evaluation (§3, CMC/mAP) and the diagnostics that read the hidden truth to explain training."""
