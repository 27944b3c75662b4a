"""Progress (moco_ref/progress.py): tqdm's bar on a terminal, a plain line every N steps elsewhere, with the
same fields; nothing from NoProgress, nor before the delay."""

import io
import re

from moco_ref.progress import NoProgress, Progress

PLAIN = re.compile(r"^epoch 2/5 (\d+)/10 \[(\d\d:\d\d)<(\d\d:\d\d|\?)\], run left (\d\d:\d\d), loss (\S+), data 7 %$")


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def shown_steps(every: int, done: int = 0) -> list[int]:
    stream = io.StringIO()
    progress = Progress(10, "epoch 2/5", done=done, after=30, every=every, stream=stream)
    for step in range(done + 1, 11):
        progress.show(step, [f"loss {step / 10:.3f}", "data 7 %"])
    progress.close()
    lines = stream.getvalue().splitlines()
    for line in lines:
        assert PLAIN.match(line), line
    return [int(PLAIN.match(line).group(1)) for line in lines]


def test_off_a_terminal_a_plain_line_every_n_steps_and_at_the_last():
    assert shown_steps(every=4) == [4, 8, 10]
    assert shown_steps(every=1) == list(range(1, 11))


def test_a_resumed_bar_counts_its_steps_from_where_it_starts():
    assert shown_steps(every=3, done=4) == [7, 10]


def test_the_fields_given_last_are_shown_until_new_ones_come():
    stream = io.StringIO()
    progress = Progress(3, "epoch 2/5", every=1, stream=stream)
    progress.show(1, ["loss 9.000"])
    progress.show(2)
    progress.show(3, ["loss 7.000"])
    assert [line.rsplit(", ", 1)[1] for line in stream.getvalue().splitlines()] == [
        "loss 9.000",
        "loss 9.000",
        "loss 7.000",
    ]


def test_time_left_for_the_run_is_shown_only_when_the_steps_after_are_known():
    stream = io.StringIO()
    progress = Progress(2, "linear probe epoch", every=1, stream=stream)
    progress.show(1, ["loss 1.000"])
    line = stream.getvalue().strip()
    assert line.startswith("linear probe epoch 1/2 [") and "run left" not in line, line


def test_on_a_terminal_tqdm_draws_the_bar_with_time_left_for_the_epoch_and_the_run():
    stream = Terminal()
    progress = Progress(10, "epoch 2/5", after=30, every=4, stream=stream)
    for step in range(1, 11):
        progress.show(step, ["loss 8.412", "640 img/s", "data 12 %"])
    progress.close()
    last = stream.getvalue().split("\r")[-1].strip()
    assert re.match(
        r"^epoch 2/5 100%\|[█#]+\| 10/10 \[\d\d:\d\d<\d\d:\d\d\], run left \d\d:\d\d, loss 8\.412, "
        r"640 img/s, data 12 %$",
        last,
    ), repr(last)


def test_nothing_is_shown_before_the_delay():
    for stream in (io.StringIO(), Terminal()):
        progress = Progress(4, "kNN bank", every=1, delay=3600, stream=stream)
        for step in range(1, 5):
            progress.show(step, ["x"])
        progress.close()
        assert stream.getvalue() == ""


def test_no_progress_shows_nothing_and_takes_progress_arguments():
    progress = NoProgress(10, "epoch 1/1", done=2, after=3, every=1, delay=0, leave=False, stream=io.StringIO())
    progress.show(3, ["loss 1"])
    progress.close()
