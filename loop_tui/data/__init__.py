"""Data: text corpus from a folder (corpus.py), BPE tokenizer and token cache (tokens.py),
seeded batch sampling (batches.py)."""
