"""A short version of ``make bench-serve``: mixed valid and hostile uploads from 8 concurrent clients."""

from skinlesion.serve.loadtest import encoded, run_load
from skinlesion.serve.process import running_server
from tests.helpers import COLOURS, synthetic_image

LIMIT_MB = 2


def test_mixed_load_gets_the_expected_answers_and_no_server_error(deployed):
    valid = [
        (f"{name}{k}.png", encoded(synthetic_image(colour, seed=500 + k, size=60 + 13 * k)))
        for k, (name, colour) in enumerate(COLOURS.items())
    ]
    with running_server(deployed.onnx, [f"max_upload_mb={LIMIT_MB}"]) as server:
        summary = run_load(server, valid, requests=120, max_bytes=LIMIT_MB << 20, clients=8, warmup=24)
    assert summary["requests"] == 120
    assert summary["server_errors_5xx"] == 0 and summary["connection_errors"] == 0
    assert summary["unexpected"] == 0, summary["unexpected_by_kind"]
    assert set(summary["status_counts"]) == {200, 400, 413, 415}
    assert summary["p99_ms"] < 30_000 and summary["throughput_rps"] > 0
    assert summary["rss_growth_mb"] < 100, summary  # a leak of decoded images would show here
