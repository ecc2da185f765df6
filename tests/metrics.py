"""The app's metrics as a test reads them: OpenTelemetry allows one meter provider per process, so one reads into
memory for the whole session (``tests/conftest.py``, fixture ``metric_reader``), and a test compares totals before
and after what it does (the sums are cumulative)."""

from __future__ import annotations

from collections import Counter

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

Totals = Counter[tuple[str, tuple[tuple[str, str], ...]]]


def totals(reader: InMemoryMetricReader) -> Totals:
    """Each metric's total by its attributes: a counter's sum, a histogram's count of recordings."""
    found: Totals = Counter()
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items())))
                    if isinstance(point, NumberDataPoint):
                        found[key] += int(point.value)
                    elif isinstance(point, HistogramDataPoint):
                        found[key] += point.count
    return found


def delta(before: Totals, after: Totals) -> dict[str, dict[tuple[tuple[str, str], ...], int]]:
    """What changed, by metric name then attributes."""
    out: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
    for (name, attributes), value in after.items():
        if value - before.get((name, attributes), 0):
            out.setdefault(name, {})[attributes] = value - before.get((name, attributes), 0)
    return out
