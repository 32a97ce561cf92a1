"""Prometheus /metrics: jobs by status, events received, request latency."""
from .conftest import event, started_job


def test_metrics_count_jobs_events_and_latency(api, production, client):
    job_id, token = started_job(api, production)
    api.as_(token).post(f"/jobs/{job_id}/events", json=[event(1), event(2)])
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sbk_jobs{status="running"} 1.0' in text
    total = [line for line in text.splitlines() if line.startswith("sbk_events_received_total ")]
    assert total and float(total[0].split()[1]) >= 2
    assert 'sbk_request_seconds_count{endpoint="jobs.post_events",method="POST"}' in text
