"""Training: the loop (trainer.py), checkpoints (checkpoint.py), sampling (sample.py), the
machine's measured peak for MFU (peak.py)."""
