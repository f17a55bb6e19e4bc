"""hub.load_pretrained against a local HTTP server (nothing leaves 127.0.0.1)."""
import hashlib
import http.server
import os
import socket
import sys
import threading

import pytest

from alexnet_c import hub
from alexnet_c._errors import WeightsError
from _subproc import run_python

CONTENT = b"alexnet_c test weights\n" * 5000
PREFIX = hashlib.sha256(CONTENT).hexdigest()[:8]


class Server:
    def __init__(self):
        self.files = {"/w.pth": CONTENT}
        self.cut_short = set()     # paths whose body stops halfway through its Content-Length
        self.requests = []
        files, requests, cut_short = self.files, self.requests, self.cut_short

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path in cut_short else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def entry(monkeypatch, tmp_path):
    """Point IMAGENET1K_V1 at a file whose hash we control; keep the real cache safe."""
    monkeypatch.setitem(hub._WEIGHTS, "IMAGENET1K_V1",
                        hub._Weights(f"alexnet-test-{PREFIX}.pth", "http://127.0.0.1:9/never"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(hub.WEIGHTS_URL_ENV, raising=False)
    return hub._WEIGHTS["IMAGENET1K_V1"]


def test_download_then_cache(server, entry, tmp_path):
    d = tmp_path / "models"
    path = hub.load_pretrained("IMAGENET1K_V1", url=server.url + "/w.pth", model_dir=d,
                               progress=False)
    assert path == str(d / entry.file_name)
    with open(path, "rb") as f:
        assert f.read() == CONTENT
    assert os.listdir(d) == [entry.file_name]                 # no .partial left
    again = hub.load_pretrained("DEFAULT", url=server.url + "/w.pth", model_dir=d,
                                progress=False)
    assert again == path and server.requests == ["/w.pth"]


def test_env_url_and_torch_home(server, entry, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.WEIGHTS_URL_ENV, server.url + "/w.pth")
    path = hub.load_pretrained(progress=False)
    assert path == str(tmp_path / "torch_home" / "hub" / "checkpoints" / entry.file_name)
    assert os.path.getsize(path) == len(CONTENT) and server.requests == ["/w.pth"]
    # An explicit url wins over the environment variable.
    os.unlink(path)
    server.files["/other.pth"] = CONTENT
    hub.load_pretrained(progress=False, url=server.url + "/other.pth")
    assert server.requests == ["/w.pth", "/other.pth"]


def test_bad_hash_deletes_partial(server, monkeypatch, tmp_path):
    monkeypatch.setitem(hub._WEIGHTS, "IMAGENET1K_V1",
                        hub._Weights("alexnet-test-deadbeef.pth", server.url + "/w.pth"))
    d = tmp_path / "models"
    with pytest.raises(WeightsError) as info:
        hub.load_pretrained(model_dir=d, progress=False)
    msg = str(info.value)
    assert "deadbeef" in msg and PREFIX in msg and "/w.pth" in msg
    assert isinstance(info.value, ValueError)
    assert os.listdir(d) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_downloaded_file_mode_follows_the_umask(server, entry, tmp_path, umask, mode):
    """As torch.hub leaves it (a shared cache): not tempfile's 0600."""
    old = os.umask(umask)
    try:
        path = hub.load_pretrained(url=server.url + "/w.pth", model_dir=tmp_path, progress=False)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == mode


def test_download_cut_short_is_named_as_such(server, entry, tmp_path):
    server.cut_short.add("/w.pth")
    with pytest.raises(RuntimeError) as info:
        hub.load_pretrained(url=server.url + "/w.pth", model_dir=tmp_path, progress=False)
    assert f"the connection closed after {len(CONTENT) // 2} of {len(CONTENT)} bytes" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_http_error_names_url(server, entry, tmp_path):
    url = server.url + "/missing.pth"
    with pytest.raises(RuntimeError, match="missing.pth"):
        hub.load_pretrained(url=url, model_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_connection_refused_names_url(entry, tmp_path):
    with socket.socket() as s:          # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
        hub.load_pretrained(url=url, model_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_progress_on_stderr(server, entry, tmp_path, capsys, monkeypatch):
    hub.load_pretrained(url=server.url + "/w.pth", model_dir=tmp_path / "a")
    err = capsys.readouterr().err
    assert entry.file_name in err                            # tqdm's desc
    monkeypatch.setitem(sys.modules, "tqdm", None)
    hub.load_pretrained(url=server.url + "/w.pth", model_dir=tmp_path / "b")
    err = capsys.readouterr().err
    assert "100%" in err and "alexnet_c[progress]" in err


def test_real_name_used_from_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.WEIGHTS_URL_ENV, "http://127.0.0.1:9/unreachable")
    cached = tmp_path / "alexnet-owt-7be5be79.pth"
    cached.write_bytes(b"x")
    for name in ("IMAGENET1K_V1", "DEFAULT", "AlexNet_Weights.DEFAULT"):
        assert hub.load_pretrained(name, model_dir=tmp_path) == str(cached)
    tv = pytest.importorskip("torchvision")
    assert hub.load_pretrained(tv.models.AlexNet_Weights.DEFAULT, model_dir=tmp_path) == str(cached)
    assert hub._WEIGHTS["IMAGENET1K_V1"].url == tv.models.AlexNet_Weights.IMAGENET1K_V1.url


@pytest.mark.parametrize("bad", ["IMAGENET1K_V2", "alexnet", None])
def test_unknown_weights(bad, tmp_path):
    with pytest.raises(ValueError):
        hub.load_pretrained(bad, model_dir=tmp_path)


def test_cache_dir_follows_torch(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for env in ({}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
                {"TORCH_HOME": str(tmp_path / "th"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert hub.cache_dir() == os.path.join(torch.hub.get_dir(), "checkpoints")
    assert hub.cache_dir() == str(tmp_path / "th" / "hub" / "checkpoints")


def test_import_is_light_and_offline():
    """Importing these modules loads none of the optional libraries and opens no socket."""
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise AssertionError('network used at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import alexnet_c.summary, alexnet_c.images, alexnet_c.hub, alexnet_c.plots, "
        "alexnet_c.categories\n"
        "heavy = [m for m in ('torch', 'PIL', 'matplotlib', 'tqdm', 'torchvision') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = run_python(["-c", code])
    assert res.returncode == 0, res.stderr
