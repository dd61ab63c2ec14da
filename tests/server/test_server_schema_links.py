"""schemathesis's stateful phase over the server's OpenAPI links: chains of calls that carry a
listing's model name into the routes that take one (metadata, readiness, infer, explain), so
generated requests reach real models instead of ending at 404; no answer is a 5xx and every
answer matches the document."""

import schemathesis
from hypothesis import settings
from schemathesis.config import SchemathesisConfig

CONFIG = {
    "seed": 0,
    "phases": {"stateful": {"enabled": True, "max-steps": 4}},
    "checks": {
        "not_a_server_error": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        # 64-bit numbers only: the document's plain integers admit more than the server takes
        "positive_data_acceptance": {"enabled": False},
    },
}
STEPS = settings(
    max_examples=8, stateful_step_count=4, deadline=None, database=None, derandomize=True
)


def test_the_document_links_listings_to_the_routes_taking_a_name(server):
    doc = schemathesis.openapi.from_url(server.url + "/openapi.json").raw_schema
    links = doc["paths"]["/v1/models"]["get"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {"get_model", "model_metadata"}
    by_name = doc["paths"]["/v2/models/{name}"]["get"]["responses"]["200"]["links"]
    assert {"infer", "explain_route", "model_ready"} <= {v["operationId"] for v in by_name.values()}


def test_linked_calls_answer_as_the_document_says(server):
    linked = schemathesis.openapi.from_url(
        server.url + "/openapi.json", config=SchemathesisConfig.from_dict(CONFIG)
    )
    assert linked.statistic.transitions.selected >= 8
    linked.as_state_machine().run(settings=STEPS)
