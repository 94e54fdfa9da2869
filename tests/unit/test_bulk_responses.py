"""What `idcard-ocr batch --server` writes for each way a job can end."""

from __future__ import annotations

from idcard.bulk.server import response_of


def test_a_succeeded_job_gives_its_result() -> None:
    body = {"result": {"name": "张示例"}}
    assert response_of({"status": "succeeded", "result": body}) == body


def test_a_failed_job_gives_its_error() -> None:
    view = {"status": "failed", "error_code": "AIS.0104", "error_msg": "no card"}
    assert response_of(view) == {"error_code": "AIS.0104", "error_msg": "no card"}


def test_a_cancelled_job_has_its_own_code() -> None:
    assert response_of({"status": "cancelled"})["error_code"] == "IDC.0411"


def test_a_result_past_its_retention_is_said_so() -> None:
    assert response_of({"status": "succeeded", "result": None})["error_code"] == "IDC.0404"
