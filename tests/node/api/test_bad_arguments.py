"""Bad arguments on every route of a real ``mu node`` get 400 with a JSON error body (issue 18).

The cases are generated from the node's own route table (``GET /v1/routes``),
so a route a service adds later is covered without touching this test; a
route that does not declare its body fields fails here by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from node.api.control import PORT_FILE, TOKEN_FILE
from tests.helpers.chain import open_mu_chain
from tests.helpers.node import open_mu_node

# A JSON value of another kind than the declared one.
WRONG_VALUE = {"string": 7, "integer": "7", "boolean": "yes"}


def bad_requests(route: dict) -> list[tuple[str, bytes, str]]:
    """(query string, body, why) triples that the route must refuse with 400."""
    cases = [("?bogus=1", b"", "a query string")]
    if route["method"] == "GET":
        return [*cases, ("", b'{"bogus": 1}', "a body on GET")]
    cases += [("", b"{not json", "a body that is not JSON"), ("", b"[1]", "a JSON array"),
              ("", b'{"bogus": 1}', "an unknown field")]
    params = route["params"] or {}
    required = {name: p for name, p in params.items() if p["required"]}
    for name, param in params.items():
        cases.append(("", json.dumps({name: WRONG_VALUE[param["kind"]]}).encode(), f"{name} of the wrong kind"))
    for name in required:
        cases.append(("", json.dumps({n: 0 for n in required if n != name}).encode(), f"{name} missing"))
    return cases


@pytest.mark.slow
async def test_every_route_answers_400_with_a_json_error_to_bad_arguments(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain, open_mu_node(tmp_path / "node", chain) as node:
        port = int((node.data_dir / PORT_FILE).read_text())
        token = (node.data_dir / TOKEN_FILE).read_text()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            routes = (await client.get("/v1/routes")).json()["routes"]
            paths = {route["path"] for route in routes}
            assert {"/v1/status", "/v1/add", "/v1/get", "/v1/pin", "/v1/peers", "/v1/earnings"} <= paths
            assert [r["path"] for r in routes if r["params"] is None] == [], "every route declares its fields"
            checked = 0
            for route in routes:
                for query, body, why in bad_requests(route):
                    reply = await client.request(route["method"], route["path"] + query, content=body)
                    where = f"{route['method']} {route['path']} with {why}"
                    assert reply.status_code == 400, where
                    error = reply.json()["error"]
                    assert error["code"] in ("bad-argument", "bad-json") and error["message"], where
                    checked += 1
            assert checked >= 3 * len(routes)
