"""Headless progress (`loop train --no-tui`): one whole line per event on a pipe; on a terminal the
same lines above a live rich.progress bar that is gone when the run ends."""

from __future__ import annotations

import io

from loop_tui.train.console import ConsoleReporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def step(n: int) -> dict:
    return {"step": n, "loss": 5.0 - n / 10, "tokens_per_s": 12345.0, "eta_s": 125.0}


def log(n: int) -> dict:
    return {**step(n), "lr": 6e-4, "mfu": 0.25, "elapsed_s": 3.0}


def feed(reporter: ConsoleReporter) -> None:
    reporter("progress", {"phase": "encoding", "done": 50, "total": 100, "bytes_per_s": 2e6, "eta_s": 5.0})
    reporter("progress", {"phase": "encoding", "done": 100, "total": 100, "bytes_per_s": 2e6, "eta_s": 0.0})
    reporter("info", {"message": "x" * 150})  # longer than any default width: never wrapped
    for n in range(1, 11):
        reporter("step", step(n))
        if n % 5 == 0:
            reporter("log", log(n))
    reporter("eval", {"step": 10, "val_loss": 4.5, "val_ppl": 90.0})
    reporter("done", {"step": 10})


def test_pipe_gets_one_plain_line_per_event():
    out = io.StringIO()
    feed(ConsoleReporter(10, out))
    lines = out.getvalue().splitlines()
    assert lines == [
        "encoding:  50% of 0.0 MB, 2.0 MB/s, ETA 0m05s",
        "encoding: 100% of 0.0 MB, 2.0 MB/s, ETA 0m00s",
        "x" * 150,
        "step      5/10 | loss 4.5000 | lr 6.00e-04 | 12,345 tok/s | MFU 25.0% | elapsed 0m03s | ETA 2m05s",
        "step     10/10 | loss 4.0000 | lr 6.00e-04 | 12,345 tok/s | MFU 25.0% | elapsed 0m03s | ETA 2m05s",
        "eval  step 10: val loss 4.5000, perplexity 90.0",
    ]


def test_terminal_gets_the_lines_above_a_live_bar_that_goes_at_the_end():
    out = Terminal()
    reporter = ConsoleReporter(10, out)
    reporter("step", step(3))
    live = out.getvalue()
    assert "step 3/10" in live and "loss 4.700 · 12,345 tok/s · ETA 2m05s" in live and "━" in live
    assert "\x1b[?25l" in live  # rich hid the cursor while the bar is shown
    feed(reporter)
    text = out.getvalue()
    assert "encoding" in text and "100% of 0.0 MB, 2.0 MB/s, ETA 0m00s" in text  # a phase end is always drawn
    for line in ("x" * 150, "step      5/10 | loss 4.5000", "eval  step 10: val loss 4.5000"):
        assert line in text
    assert reporter.progress is None and "\x1b[?25h" in text[-40:]  # the bar is gone, the cursor back
    reporter.close()  # closing twice (cli.py always closes) is harmless
