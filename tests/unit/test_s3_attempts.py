"""``max_attempts`` counts every attempt a request makes, the first included (botocore's own
``max_attempts`` setting counts the retries only). Counted at a fault proxy answering 503 SlowDown
to everything; no S3 service is needed, since nothing is forwarded."""

from __future__ import annotations

import pytest

from backends import TransientError, open_backend
from tests.support.fault_proxy import S3FaultProxy


@pytest.mark.parametrize("attempts", [1, 3])
def test_max_attempts_is_the_number_of_requests_sent(monkeypatch, attempts):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-checked-by-the-proxy")
    with S3FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.control.set_rate("slowdown", 1.0)
        backend = open_backend(f"s3://bucket/root?endpoint_url={proxy.endpoint}&addressing_style=path&region=us-east-1"
                               f"&max_attempts={attempts}&put_client=boto3")
        with pytest.raises(TransientError) as raised:
            backend.stat("key")
        backend.close()
    assert "SlowDown" in str(raised.value) or "503" in str(raised.value)
    assert proxy.control.requests["head"] == attempts
