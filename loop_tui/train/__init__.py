"""Training: the loop (trainer.py), checkpoints (checkpoint.py), sampling (sample.py), MPI
(distributed.py) and the headless reporters (console.py, tensorboard.py)."""
