"""``/openapi.json`` of ``dextr serve`` is the contract: schemathesis generates requests from it
(one by one, and as stateful sequences following the links it infers: create an object, then
read, edit and delete it) and checks every answer: no 5xx, no status the route does not declare,
no body off its schema (errors included: one error body for all)."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from dextr_lib.serving import close_app, create_app  # noqa: E402

_SETTINGS = dict(deadline=None, database=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.helpers.models import new_tiny_model

    root = tmp_path_factory.mktemp("contract")
    (root / "photos").mkdir()
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    PIL.Image.fromarray(image).save(root / "photos" / "disk.png")
    app = create_app(new_tiny_model(), root / "photos", root / "ann.json", classes=["disk"],
                     max_upload_mb=1, allowed_hosts=["testserver"])  # the ASGI client's Host
    yield app
    close_app(app)


@pytest.fixture(scope="module")
def api_schema(served):
    # 400 is the server's answer for what JSON Schema cannot state (bytes that are no image,
    # points outside the photo, a refused Host); a schema-valid request must never get 422.
    accepted = ["2xx", "400", "401", "404", "409"]
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": accepted}}})
    return schemathesis.openapi.from_asgi("/openapi.json", served, config=config)


def test_every_answer_keeps_the_contract(api_schema):
    operations = [op.ok() for op in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=6, **_SETTINGS)
        def check(case):
            case.call_and_validate()

        check()


def test_stateful_sequences_keep_the_contract(api_schema):
    api_schema.as_state_machine().run(
        settings=settings(max_examples=6, stateful_step_count=4, **_SETTINGS))
