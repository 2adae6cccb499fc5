"""The extract jobs' progress lines: start-up and steady rate apart, on a fake clock."""

import logging

import pytest

from vitprobe.pipeline.extract import Progress


class FakeClock:
    """Seconds that advance only when the test says so."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_startup_and_steady_rate_are_apart(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="vitprobe")
    progress = Progress(20, "extract vit_b16 shard 2/5", load_seconds=4.0, clock=clock)
    clock.now += 6.0  # first batch: trace, compile and run
    progress.update(8)
    assert progress.startup_seconds == pytest.approx(10.0) and progress.rate is None
    clock.now += 2.0
    progress.update(8)
    clock.now += 1.0  # a last, partial batch
    progress.update(4)
    clock.now += 30.0  # writing the outputs: not part of the rate
    progress.close()
    assert progress.first_batch_seconds == pytest.approx(6.0)
    assert progress.steady_images == 12 and progress.steady_seconds == pytest.approx(3.0)
    assert progress.rate == pytest.approx(12 / 3.0)
    assert [r.getMessage() for r in caplog.records] == [
        "extract vit_b16 shard 2/5: 8/20 images, start-up 10.0 s (model load 4.0 s + first batch, with trace and compile, 6.0 s)",
        "extract vit_b16 shard 2/5: 16/20 images, 4.00 img/s after the first batch",
        "extract vit_b16 shard 2/5: 20/20 images, 4.00 img/s after the first batch",
        (
            "extract vit_b16 shard 2/5: done, 20 images; 4.00 img/s over the 12 images after the first batch; "
            "start-up 10.0 s (model load 4.0 s + first batch, with trace and compile, 6.0 s)"
        ),
    ]


def test_a_single_batch_has_no_steady_rate(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="vitprobe")
    progress = Progress(5, "extract deit shard 0 (of 1)", load_seconds=2.5, clock=clock)
    clock.now += 3.0
    progress.update(5)
    progress.close()
    assert progress.rate is None
    assert caplog.records[-1].getMessage() == (
        "extract deit shard 0 (of 1): done, 5 images; no steady rate: all 5 images were in the first batch, "
        "which includes compilation; start-up 5.5 s (model load 2.5 s + first batch, with trace and compile, 3.0 s)"
    )
