"""loop_tui: train small GPT-2 models on a folder of text with hand-written C kernels."""

__version__ = "0.1.0"
