"""The server over raw HTTP: malformed bodies, limits, auth, CORS, Host checks, keepalives,
and clients that go away (their generation stops and their queue slot frees)."""
import http.client
import json
import socket
import threading
import time

import pytest
from server_fixtures import blocking_delegate, calling_lacy, occupy, running

import lacy_mlx
from lacy_mlx.errors import InputError
from lacy_mlx.server import ServerConfig


def request(server, method, path, body=None, headers=None, raw=None):
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), payload


def error_of(payload):
    err = json.loads(payload)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def wait_until(cond, seconds=20.0):
    """Poll ``cond`` (bounded); True once it holds."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def chat_body(server, **kw):
    return {"model": server.model_id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **kw}


def test_health_and_unknown_routes(plain_server):
    status, _, body = request(plain_server, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = request(plain_server, "GET", "/v2/nothing")
    assert status == 404 and error_of(body)["code"] == "unknown_url"
    status, _, body = request(plain_server, "GET", "/v1/chat/completions")
    assert status == 405


@pytest.mark.parametrize("raw, code", [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"),
                                       (b"\xff\xfe", "invalid_json")])
def test_malformed_bodies_are_400(plain_server, raw, code):
    status, headers, body = request(plain_server, "POST", "/v1/chat/completions", raw=raw,
                                    headers={"Content-Type": "application/json"})
    assert status == 400 and error_of(body)["code"] == code
    assert headers["Content-Type"] == "application/json"


def test_missing_fields_are_400(plain_server):
    status, _, body = request(plain_server, "POST", "/v1/chat/completions", {"model": plain_server.model_id})
    assert status == 400 and error_of(body)["param"] == "messages"
    status, _, body = request(plain_server, "POST", "/v1/chat/completions", {"messages": []})
    assert status == 400 and error_of(body)["param"] == "model"
    status, _, body = request(plain_server, "POST", "/v1/completions",
                              {"model": plain_server.model_id, "prompt": [1, 2, 3]})
    assert status == 400 and error_of(body)["param"] == "prompt"


def test_body_limit_is_413_and_length_is_required(tiny_dir):
    with running(lacy_mlx.load(str(tiny_dir)), max_body_bytes=100) as server:
        big = chat_body(server, messages=[{"role": "user", "content": "x" * 500}])
        status, headers, body = request(server, "POST", "/v1/chat/completions", big)
        assert status == 413 and error_of(body)["code"] == "request_too_large"
        assert headers.get("Connection") == "close"
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert b" 411 " in s.recv(4096).split(b"\r\n")[0] + b" "


def test_auth_header_and_open_health(tiny_dir):
    with running(lacy_mlx.load(str(tiny_dir)), api_key="k3y") as server:
        assert request(server, "GET", "/v1/models")[0] == 401
        assert request(server, "GET", "/v1/models", headers={"Authorization": "Bearer nope"})[0] == 401
        assert request(server, "GET", "/v1/models", headers={"Authorization": "Bearer k3y"})[0] == 200
        assert request(server, "GET", "/health")[0] == 200


def test_non_loopback_needs_a_key():
    with pytest.raises(InputError, match="API key"):
        ServerConfig(host="0.0.0.0")
    assert ServerConfig(host="0.0.0.0", api_key="k").api_key == "k"
    with pytest.raises(InputError):
        ServerConfig(api_key="  ")


def test_cors_localhost_only(plain_server):
    pre = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    status, headers, _ = request(plain_server, "OPTIONS", "/v1/chat/completions", headers=pre)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    status, headers, _ = request(plain_server, "GET", "/v1/models", headers={"Origin": "http://127.0.0.1:5173"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    status, headers, body = request(plain_server, "OPTIONS", "/v1/chat/completions",
                                    headers={**pre, "Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, _, body = request(plain_server, "POST", "/v1/chat/completions", chat_body(plain_server),
                              headers={"Origin": "https://evil.example"})
    assert status == 403 and error_of(body)["code"] == "origin_not_allowed"


def test_configured_origin_and_foreign_host(tiny_dir):
    with running(lacy_mlx.load(str(tiny_dir)), cors_origins=("https://app.example",)) as server:
        status, headers, _ = request(server, "GET", "/v1/models", headers={"Origin": "https://app.example"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
        status, _, body = request(server, "GET", "/v1/models", headers={"Host": "rebound.example"})
        assert status == 403 and error_of(body)["code"] == "host_not_allowed"


def _open_stream(server, body):
    """Send a streaming request on a raw socket; return the socket once the headers arrived."""
    host, port = server.httpd.server_address[:2]
    s = socket.create_connection((host, port), timeout=20)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def _read_until(s, marker, limit=1 << 20):
    got = b""
    while marker not in got and len(got) < limit:
        part = s.recv(4096)
        if not part:
            break
        got += part
    return got


def test_keepalive_comments_while_a_delegate_works(tiny_dir, tmp_path):
    lacy = calling_lacy(tiny_dir, tmp_path)
    release, calls = threading.Event(), []
    blocking_delegate(lacy, release, calls)
    with running(lacy, keepalive_s=0.1) as server:
        s = _open_stream(server, chat_body(server, max_tokens=6, stream=True))
        try:
            got = _read_until(s, b": keepalive\n\n")
            assert b" 200 " in got.split(b"\r\n")[0] + b" " and b": keepalive\n\n" in got
            release.set()
            rest = _read_until(s, b"data: [DONE]")
            assert b"data: [DONE]" in rest
        finally:
            release.set()
            s.close()


def test_disconnect_stops_the_generation(tiny_dir, tmp_path):
    lacy = calling_lacy(tiny_dir, tmp_path)
    release, calls = threading.Event(), []
    blocking_delegate(lacy, release, calls)
    with running(lacy) as server:
        s = _open_stream(server, chat_body(server, max_tokens=200, stream=True))
        assert wait_until(lambda: len(calls) == 1)  # the first call is waiting on its delegate
        s.close()
        assert wait_until(lambda: server.worker.running is not None and server.worker.running.cancelled)
        release.set()
        assert wait_until(lambda: server.worker.counts()["running"] == 0)
        assert len(calls) == 1  # it stopped right after the delegate returned
        # the worker serves the next request
        status, _, body = request(server, "POST", "/v1/chat/completions", chat_body(server, lacy={"gate": "off"}))
        assert status == 200


def test_disconnect_while_queued_frees_the_slot(plain_server):
    release = threading.Event()
    try:
        occupy(plain_server, release)
        s = _open_stream(plain_server, chat_body(plain_server))
        assert wait_until(lambda: plain_server.worker.counts()["waiting"] == 1)
        s.close()
        assert wait_until(lambda: plain_server.worker.counts()["waiting"] == 0)
    finally:
        release.set()


def test_serve_cli_checks_before_loading_and_passes_the_model_through(monkeypatch, capsys, tiny_dir):
    from lacy_mlx.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--model", str(tiny_dir)]) == 1
    assert "API key" in capsys.readouterr().err
    seen = {}
    lacy = lacy_mlx.load(str(tiny_dir))

    def fake_load(model, **kw):
        seen["model"], seen["kw"] = model, kw
        return lacy

    def fake_serve(lacy_, config, verbose):
        seen["config"] = config

    monkeypatch.setattr(lacy_mlx, "load", fake_load)
    monkeypatch.setattr("lacy_mlx.server.serve", fake_serve)
    assert main(["serve", "--port", "0", "--gate", "entropy", "--queue-size", "3"]) == 0
    assert seen["model"] is None  # no --model: load() picks the embedded default itself
    assert seen["config"].queue_size == 3 and lacy.gate.mode == "entropy"


def test_close_without_serving_returns(tiny_dir):
    from lacy_mlx.server import LacyServer

    server = LacyServer(lacy_mlx.load(str(tiny_dir)), ServerConfig(port=0))
    server.close()  # never started: must not wait for a serve loop
