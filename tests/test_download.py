"""The https download path of `vitprobe.weights.fetch`, against a real local HTTPS server.

No mock of urllib: a `ThreadingHTTPServer` wrapped in TLS serves files from a temporary
folder on 127.0.0.1, with a self-signed certificate made here by the ``openssl`` command.
The client trusts it through ``SSL_CERT_FILE``, which the default context of urllib
(``ssl.create_default_context`` -> ``set_default_verify_paths``) reads from the environment.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import vitprobe
from helpers import load_reference
from vitprobe.digest import sha256_of
from vitprobe.weights import WeightsError

ref = load_reference("timm_augreg_ref.py")  # numpy only at import time

ARCH = "vit_tiny_patch16_224"
DEPTH = 2
# vit_tiny_patch16_224 cut to two blocks, in AugReg (Flax) names and shapes.
TINY = dict(depth=DEPTH, dim=192, heads=3, mlp=768, patch=16, in_chans=3, tokens=197, classes=1000)


def npz_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    path = tmp_path / f"made_{seed}.npz"
    np.savez(path, **ref.flax_arrays(**TINY, seed=seed))
    return path.read_bytes()


# --- the server -------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        how = self.server.cut_short.get(self.path)
        if how:
            # Send half of the file and hang up, as a dropped connection does.
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            half = data[: len(data) // 2]
            self.send_response(200)
            if how == "length":  # the whole file's length announced
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(half)
            else:  # one chunk of a chunked body, without the closing 0-length chunk
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@dataclass
class Server:
    root: Path  # the files served
    cert: Path
    port: int
    httpd: ThreadingHTTPServer = field(repr=False)

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def requests_for(self, name: str) -> int:
        return self.httpd.requests.count(f"/{name}")

    def serve(self, name: str, data: bytes, *, cut_short: str | None = None) -> str:
        """Serve ``data`` as ``name``; ``cut_short`` ("length" or "chunked") drops the connection half-way."""
        (self.root / name).write_bytes(data)
        self.httpd.cut_short[f"/{name}"] = cut_short
        return self.url(name)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make the test server's certificate (apt-get install openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    # ECDSA P-256 rather than RSA 2048: the same checks, in milliseconds instead of seconds.
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("https")
    cert, key = make_certificate(folder)
    root = folder / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    httpd.requests, httpd.cut_short = [], {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(root, cert, httpd.server_address[1], httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclass
class Env:
    cache: Path
    lock: Path

    def files_in_cache(self) -> list[Path]:
        return sorted(p for p in self.cache.rglob("*") if p.is_file()) if self.cache.exists() else []

    def pinned(self) -> dict:
        return json.loads(self.lock.read_text()) if self.lock.exists() else {}


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    """A fresh cache and lock; the client trusts the test certificate and uses no proxy."""
    monkeypatch.setenv("VITPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITPROBE_WEIGHTS_LOCK", str(tmp_path / "weights.lock.json"))
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return Env(tmp_path / "cache", tmp_path / "weights.lock.json")


def load(url: str):
    return vitprobe.load_model(ARCH, weights=url, depth=DEPTH)


# --- the tests --------------------------------------------------------------------------


def test_download_lands_in_cache_and_is_pinned(server, env, tmp_path):
    data = npz_bytes(tmp_path)
    url = server.serve("first.npz", data)
    model = load(url)
    assert server.requests_for("first.npz") == 1
    assert env.files_in_cache() == [model.weights_file]  # nothing else: no .part file left
    assert model.weights_file.name == "first.npz" and model.weights_file.is_relative_to(env.cache)
    assert model.weights_file.read_bytes() == data
    assert env.pinned() == {url: {"sha256": hashlib.sha256(data).hexdigest()}}
    # The weights are the file's (Keras Dense kernels are (in, out), as in Flax).
    kernel = ref.flax_arrays(**TINY)["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    np.testing.assert_array_equal(model.state("blocks.0.mlp.fc1.weight"), kernel)


def test_second_load_uses_cache(server, env, tmp_path):
    url = server.serve("cached.npz", npz_bytes(tmp_path))
    first = load(url)
    second = load(url)
    assert server.requests_for("cached.npz") == 1
    assert second.weights_file == first.weights_file
    assert len(env.files_in_cache()) == 1


def test_changed_upstream_file_is_refused(server, env, tmp_path):
    url = server.serve("changes.npz", npz_bytes(tmp_path, seed=0))
    load(url)
    pinned = env.pinned()
    server.serve("changes.npz", npz_bytes(tmp_path, seed=1))
    shutil.rmtree(env.cache)
    with pytest.raises(WeightsError) as info:
        load(url)
    message = str(info.value)
    assert server.requests_for("changes.npz") == 2
    for word in (url, str(env.lock), "differs"):
        assert word in message
    assert env.files_in_cache() == []  # the download was not moved in
    assert env.pinned() == pinned


def test_html_page_under_npz_url_is_refused(server, env):
    env.lock.write_text(json.dumps({"other": {"sha256": "0" * 64}}) + "\n")
    before = env.lock.read_bytes()
    url = server.serve("page.npz", b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>")
    with pytest.raises(WeightsError, match="bad header") as info:
        load(url)
    assert url in str(info.value)
    assert server.requests_for("page.npz") == 1
    assert env.files_in_cache() == []
    assert env.lock.read_bytes() == before


def test_truncated_npz_is_refused_before_anything_is_pinned(server, env, tmp_path):
    # The server sends a cut file as if it were whole (matching Content-Length): the zip
    # header looks right, but the archive is incomplete. Nothing may be cached or pinned.
    data = npz_bytes(tmp_path)
    url = server.serve("truncated.npz", data[: len(data) // 2])
    with pytest.raises(WeightsError, match="incomplete or corrupt") as info:
        load(url)
    assert url in str(info.value)
    assert env.files_in_cache() == []
    assert env.pinned() == {}


def test_redownload_after_corrupt_first_download_succeeds(server, env, tmp_path):
    data = npz_bytes(tmp_path)
    url = server.serve("retry.npz", data[: len(data) // 2])
    with pytest.raises(WeightsError):
        load(url)
    server.serve("retry.npz", data)  # the upstream file was fine; the transfer was not
    assert load(url).weights_file.read_bytes() == data
    assert env.pinned() == {url: {"sha256": sha256_of(load(url).weights_file)}}


@pytest.mark.parametrize("how,words", [("length", "stopped after"), ("chunked", "download failed (IncompleteRead")])
def test_dropped_connection_is_refused(server, env, tmp_path, how, words):
    # http.client returns a short body without error: fetch.py must compare the length.
    name = f"dropped_{how}.npz"
    url = server.serve(name, npz_bytes(tmp_path), cut_short=how)
    with pytest.raises(WeightsError) as info:
        load(url)
    assert url in str(info.value) and words in str(info.value)
    assert server.requests_for(name) == 1
    assert env.files_in_cache() == []
    assert env.pinned() == {}


def test_http_is_refused_without_request(server, env):
    url = server.url("plain.npz").replace("https://", "http://")
    before = len(server.httpd.requests)
    with pytest.raises(WeightsError, match="only downloaded over https") as info:
        load(url)
    assert url in str(info.value)
    assert len(server.httpd.requests) == before
    assert env.files_in_cache() == [] and env.pinned() == {}


def test_404_names_url(server, env):
    url = server.url("absent.npz")
    with pytest.raises(WeightsError, match="404") as info:
        load(url)
    assert url in str(info.value)
    assert server.requests_for("absent.npz") == 1
    assert env.files_in_cache() == [] and env.pinned() == {}


def test_untrusted_certificate_is_refused(server, env, tmp_path, monkeypatch):
    # The other tests pass only because SSL_CERT_FILE makes the test certificate trusted:
    # without it the certificate is checked and refused.
    other_cert, _ = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(other_cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    url = server.serve("untrusted.npz", npz_bytes(tmp_path))
    with pytest.raises(WeightsError, match="CERTIFICATE_VERIFY_FAILED") as info:
        load(url)
    assert url in str(info.value)
    assert server.requests_for("untrusted.npz") == 0  # refused in the handshake, before any request
    assert env.files_in_cache() == [] and env.pinned() == {}
