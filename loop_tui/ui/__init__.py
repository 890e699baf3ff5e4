"""The Textual app (app.py): the config picker (picker.py), the training dashboard (dashboard.py,
with widgets.py and loop.tcss), the runs table (runs_screen.py) and the run viewer (view.py); live
state (state.py), the training thread (runner.py), and rank 0's terminal under mpiexec
(rank_terminal.py)."""
