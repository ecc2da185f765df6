"""The benchmark's statistics: the figures it prints are only as right as these."""

from devtools.bench import Rounds, ingest_rate, percentile


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.5
    assert percentile(values, 99) == 99.01
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order of input does not matter


def test_ingest_rate_counts_every_notification_over_the_total_time() -> None:
    rounds = Rounds(batch=1000, times_ms=[100.0, 300.0], queued_messages={7})
    assert ingest_rate(rounds) == 5000.0  # 2,000 notifications in 0.4 s
