"""The router's request counters and latency histogram in Prometheus text."""

from __future__ import annotations

from app.observability import RouterMetrics


def test_histogram_buckets_are_cumulative() -> None:
    metrics = RouterMetrics()
    for seconds in (0.0005, 0.001, 0.003, 20.0):
        metrics.observe("echo", "infer", 200, seconds)
    metrics.observe("echo", "infer", 429, 0.0001)
    text = metrics.render()
    base = 'triton_serve_request_duration_seconds_bucket{model="echo",route="infer",le='
    assert f'{base}"0.001"}} 3' in text  # bounds are inclusive
    assert f'{base}"0.0025"}} 3' in text
    assert f'{base}"0.005"}} 4' in text
    assert f'{base}"10.0"}} 4' in text
    assert f'{base}"+Inf"}} 5' in text
    assert 'triton_serve_request_duration_seconds_count{model="echo",route="infer"} 5' in text
    assert 'triton_serve_requests_total{model="echo",route="infer",status="200"} 4' in text
    assert 'triton_serve_requests_total{model="echo",route="infer",status="429"} 1' in text
