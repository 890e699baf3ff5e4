"""The Textual app: config picker and training dashboard (app.py), live state (state.py),
the training thread (runner.py), widgets (widgets.py), styles (loop.tcss)."""
