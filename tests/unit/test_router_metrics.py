"""The router's request counters and latency histogram in Prometheus text."""

from __future__ import annotations

from app.observability import RouterMetrics


def test_histogram_buckets_are_cumulative() -> None:
    metrics = RouterMetrics()
    for seconds in (0.0005, 0.001, 0.003, 20.0):
        metrics.observe("echo", "infer", 200, seconds)
    metrics.observe("echo", "infer", 429, 0.0001)
    text = metrics.render()

    def bucket(le: str) -> str:
        return (
            f'triton_serve_request_duration_seconds_bucket{{le="{le}",model="echo",route="infer"}}'
        )

    assert f"{bucket('0.001')} 3.0" in text  # bounds are inclusive
    assert f"{bucket('0.0025')} 3.0" in text
    assert f"{bucket('0.005')} 4.0" in text
    assert f"{bucket('10.0')} 4.0" in text
    assert f"{bucket('+Inf')} 5.0" in text
    assert 'triton_serve_request_duration_seconds_count{model="echo",route="infer"} 5.0' in text
    assert 'triton_serve_requests_total{model="echo",route="infer",status="200"} 4.0' in text
    assert 'triton_serve_requests_total{model="echo",route="infer",status="429"} 1.0' in text


def test_text_has_no_created_series_and_parses() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = RouterMetrics()
    metrics.observe('a "quoted" model', "infer", 200, 0.002)
    text = metrics.render()
    assert "_created" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["triton_serve_requests"].type == "counter"
    (sample,) = families["triton_serve_requests"].samples
    assert sample.labels["model"] == 'a "quoted" model' and sample.value == 1.0


def test_model_labels_are_bounded() -> None:
    from app.observability import MAX_MODEL_LABELS, OTHER_MODELS

    metrics = RouterMetrics()
    for i in range(MAX_MODEL_LABELS + 50):
        metrics.observe(f"made-up-{i}", "infer", 404, 0.001)
    metrics.observe("made-up-0", "infer", 404, 0.001)  # a name seen before keeps its label
    text = metrics.render()
    assert text.count("triton_serve_requests_total{") == MAX_MODEL_LABELS + 1
    assert f'model="{OTHER_MODELS}",route="infer",status="404"}} 50.0' in text
    assert 'triton_serve_requests_total{model="made-up-0",route="infer",status="404"} 2.0' in text
