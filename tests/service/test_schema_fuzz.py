"""Schema-based fuzzing (schemathesis) of every operation of the live server: no input may cause a 5xx, and every
answer must match the OpenAPI schema (status code, content type, body). Bounded: a few examples per operation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import ServerProcess

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 15


def _fuzz(operation: schemathesis.APIOperation, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    fuzz()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose streams may only name loopback, so fuzzed stream URLs never reach (or look up) other hosts."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("fuzz") / "data",
        env={"REFINEVAD_MAX_UPLOAD_MB": "1", "REFINEVAD_ALLOWED_HOSTS": "127.0.0.1"},
    )
    proc.start()
    yield proc
    proc.stop()


def test_no_operation_answers_5xx_or_off_schema(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {
        "POST /analyze",
        "GET /jobs",
        "GET /jobs/{job_id}",
        "DELETE /jobs/{job_id}",
        "GET /ready",
    } <= labels
    # With the key the operations themselves are exercised; without it, the auth layer.
    for headers in (server.headers, {}):
        for operation in operations:
            _fuzz(operation, server.url, headers)
