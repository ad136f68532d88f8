"""The control API's guard: Host and Origin checks, login, session cookie, CSRF, CSP (specs/network.md §6)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from node.api.control import TOKEN_FILE, ControlServer
from node.api.security import (
    CONTENT_SECURITY_POLICY,
    CSRF_COOKIE,
    CSRF_HEADER,
    MAX_LOGIN_FAILURES,
    SESSION_COOKIE,
)

NODE_ID = bytes(range(20))


async def start(nursery: trio.Nursery, data_dir: Path) -> ControlServer:
    server = ControlServer(data_dir, NODE_ID)

    async def change(body: dict) -> dict:
        return {"changed": True}

    server.route("POST", "change", change, params={})
    await nursery.start(server.serve)
    return server


def browser(server: ControlServer) -> httpx.AsyncClient:
    """A client that behaves like the page: no bearer token, cookies kept, Origin sent."""
    base = f"http://127.0.0.1:{server.port}"
    return httpx.AsyncClient(base_url=base, headers={"Origin": base}, trust_env=False)


async def login(server: ControlServer, client: httpx.AsyncClient) -> str:
    """Follow a one-time login URL; returns the CSRF token the page reads from its cookie."""
    url = urlsplit(server.login_url())
    reply = await client.get(f"{url.path}?{url.query}")
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    cookies = reply.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in session and "SameSite=strict" in session
    csrf = next(c for c in cookies if c.startswith(CSRF_COOKIE + "="))
    assert "HttpOnly" not in csrf and "SameSite=strict" in csrf
    return client.cookies[CSRF_COOKIE]


async def test_bearer_token_works_and_every_reply_has_the_csp(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        token = (tmp_path / TOKEN_FILE).read_text()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as client:
            ok = await client.post("/v1/change", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200 and ok.json() == {"changed": True}
            assert ok.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert ok.headers["x-frame-options"] == "DENY"
            refused = await client.get("/v1/status")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        nursery.cancel_scope.cancel()


async def test_login_sets_the_cookie_once_and_csrf_guards_changes(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        async with browser(server) as page:
            assert (await page.get("/v1/status")).status_code == 401  # not logged in
            csrf = await login(server, page)
            status = await page.get("/v1/status")
            assert status.status_code == 200 and status.json()["node_id"] == NODE_ID.hex()
            no_csrf = await page.post("/v1/change")
            assert no_csrf.status_code == 403 and no_csrf.json()["error"]["code"] == "csrf"
            wrong = await page.post("/v1/change", headers={CSRF_HEADER: "x" + csrf})
            assert wrong.status_code == 403
            ok = await page.post("/v1/change", headers={CSRF_HEADER: csrf})
            assert ok.status_code == 200 and ok.json() == {"changed": True}
        async with browser(server) as other:
            url = server.login_url()
            first = await other.get(url)
            assert first.status_code == 303
            again = await other.get(url)  # one-time: the second use is refused
            assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized"
        nursery.cancel_scope.cancel()


async def test_foreign_host_and_origin_are_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        token = (tmp_path / TOKEN_FILE).read_text()
        auth = {"Authorization": f"Bearer {token}"}
        async with browser(server) as page:
            csrf = await login(server, page)
            # DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends that name.
            for headers in (auth, {CSRF_HEADER: csrf}):
                rebound = await page.get("/v1/status", headers={**headers, "Host": f"evil.example:{server.port}"})
                assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "forbidden-host"
                foreign = await page.post("/v1/change", headers={**headers, "Origin": "http://evil.example"})
                assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden-origin"
            other_port = await page.get("/v1/status", headers={"Origin": "http://127.0.0.1:1"})
            assert other_port.status_code == 403
            assert (await page.get("/v1/status", headers={"Host": f"localhost:{server.port}",
                                                           "Origin": f"http://localhost:{server.port}"})
                    ).status_code == 200
        nursery.cancel_scope.cancel()


async def test_wrong_login_tokens_are_throttled(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        async with browser(server) as page:
            for _ in range(MAX_LOGIN_FAILURES):
                assert (await page.get("/login?token=guess")).status_code == 401
            throttled = await page.get(server.login_url())  # even a good token waits now
            assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "too-many-logins"
        nursery.cancel_scope.cancel()


async def test_bound_to_loopback_by_default(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        assert server.host == "127.0.0.1"
        assert server.login_url().startswith(f"http://127.0.0.1:{server.port}/login?token=")
        nursery.cancel_scope.cancel()


async def test_mu_ui_prints_a_login_url_that_works_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main

    assert await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "ui"]) == 1
    assert "no node is running" in capsys.readouterr().err
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        assert await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "ui"]) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith(f"http://127.0.0.1:{server.port}/login?token=")
        async with browser(server) as page:
            assert (await page.get(url)).status_code == 303
            assert (await page.get("/v1/status")).status_code == 200
            assert (await page.get(url)).status_code == 401
        nursery.cancel_scope.cancel()
