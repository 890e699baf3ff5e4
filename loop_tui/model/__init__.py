"""GPT-2 model: tensor layout (layout.py) and forward/backward over a backend's ops (gpt.py)."""
