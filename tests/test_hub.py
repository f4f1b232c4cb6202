"""Exports as Hugging Face Hub repos: loading a repo id from the Hub cache, offline, and pushing
exactly the export's files. The Hub itself cannot be reached here: the cache is a real one, laid
out as huggingface_hub lays it out, and the upload stops at the client's boundary."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import imageio.v3 as iio
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects

import gankit
from gankit.cli import main
from gankit.core.errors import ExportError, GankitError
from gankit.outputs import hub

COMMIT = hashlib.sha1(b"gankit test export").hexdigest()


def tiny_generator(**params) -> gankit.Generator:
    torch.manual_seed(0)
    spec = {"name": "mlp", "hidden": 8, "depth": 1, "z_dim": 4, **params}
    return gankit.GENERATORS.build(spec, image_shape=(1, 6, 6))


def cache_repo(cache: Path, repo_id: str, export: Path, commit: str = COMMIT) -> Path:
    """Lay `export` out in `cache` as huggingface_hub's snapshot of `repo_id` at `commit` on
    main: blobs, symlinked snapshot files and refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in export.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache in tmp_path, offline (as HF_HUB_OFFLINE=1 and HF_HUB_CACHE set it)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_repo_ids_are_told_apart_from_folders(tmp_path, monkeypatch):
    assert hub.looks_like_repo_id("user/repo") and hub.looks_like_repo_id("org-1/my_gan.v2")
    for not_repo in ("runs/x/export/generator", "repo", "/abs/path", "./a/b", "a/../b", "a/b-"):
        assert not hub.looks_like_repo_id(not_repo), not_repo
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user" / "repo").mkdir(parents=True)  # an existing folder wins
    assert not hub.looks_like_repo_id("user/repo")
    assert hub.resolve_export("user/repo") == Path("user/repo")


def test_a_cached_repo_loads_offline_to_identical_outputs(tmp_path, offline_cache):
    original = tiny_generator()
    export = gankit.save_model(original, tmp_path / "generator")
    snapshot = cache_repo(offline_cache, "someone/tiny-gan", export)

    loaded = gankit.load_generator("someone/tiny-gan")
    assert torch.equal(loaded.sample(5, seed=3), original.eval().sample(5, seed=3))
    assert hub.resolve_export("someone/tiny-gan") == snapshot
    by_commit = gankit.load_model("someone/tiny-gan", revision=COMMIT)
    assert torch.equal(by_commit.net[0].weight, original.net[0].weight)

    # the cached files are checked like a folder's: a flipped byte is refused
    weights = (snapshot / "model.safetensors").resolve()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="altered or corrupted"):
        gankit.load_generator("someone/tiny-gan")


def test_offline_and_not_cached_is_one_clear_error(tmp_path, offline_cache, capsys):
    with pytest.raises(ExportError, match=r"'nobody/missing' is not in the Hugging Face cache"):
        gankit.load_generator("nobody/missing")
    out = tmp_path / "x.png"
    assert main(["sample", "nobody/missing", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "HF_HUB_OFFLINE" in error and "Traceback" not in error
    assert not out.exists()
    assert main(["eval", "nobody/missing", "--data-root", str(tmp_path), "--n", "2"]) == 2
    assert "'nobody/missing' is not in the Hugging Face cache" in capsys.readouterr().err
    with pytest.raises(ExportError, match=r"revision .* applies to Hub repos"):
        gankit.load_generator(tmp_path, revision="main")


def test_sample_from_a_repo_id_honours_the_environment(tmp_path):
    """`gankit sample user/repo` in a process started with HF_HUB_OFFLINE=1 and HF_HOME: the
    grid equals the one sampled from the local export folder."""
    export = gankit.save_model(tiny_generator(), tmp_path / "generator")
    cache_repo(tmp_path / "hf-home" / "hub", "someone/tiny-gan", export)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    command = [sys.executable, "-m", "gankit", "sample", "--n", "4", "--seed", "1", "--out"]
    subprocess.run([*command, str(tmp_path / "hub.png"), "someone/tiny-gan"], check=True, env=env)
    assert (
        main(
            ["sample", str(export), "--n", "4", "--seed", "1", "--out", str(tmp_path / "local.png")]
        )
        == 0
    )
    assert (iio.imread(tmp_path / "hub.png") == iio.imread(tmp_path / "local.png")).all()


class RecordingApi:
    """HfApi's calls as `push` makes them, stopped where they would reach the network."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, **kwargs) -> None:
        self.calls.clear()

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": "https://huggingface.co/u/r/commit/1"})()


def test_push_uploads_exactly_the_export(tmp_path, monkeypatch, capsys):
    export = gankit.save_model(tiny_generator(), tmp_path / "generator")
    (export / "notes.txt").write_text("mine")  # a user's file beside the export stays home
    (export / ".DS_Store").write_bytes(b"\0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    argv = ["push", str(export), "me/tiny", "--private", "--revision", "v1", "--message", "hi"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "https://huggingface.co/u/r/commit/1"
    calls = dict(RecordingApi.calls)
    assert calls["create_repo"] == {
        "repo_id": "me/tiny",
        "private": True,
        "exist_ok": True,
        "repo_type": "model",
    }
    assert calls["create_branch"]["branch"] == "v1"
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "me/tiny" and upload["revision"] == "v1"
    assert upload["commit_message"] == "hi" and Path(upload["folder_path"]) == export
    present = [p.name for p in export.iterdir()]
    uploaded = set(filter_repo_objects(present, allow_patterns=upload["allow_patterns"]))
    assert uploaded == set(present) - {"notes.txt", ".DS_Store"}
    assert {"config.json", "model.safetensors", "README.md"} <= uploaded


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["push", "{export}", "not a repo"], "is not a Hub repo id"),
        (["push", "{missing}", "me/tiny"], "no export at"),
        (["push", "{export}", "me/tiny"], "HF_HUB_OFFLINE is set"),
    ],
)
def test_push_refusals_are_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys, argv, message):
    export = gankit.save_model(tiny_generator(), tmp_path / "generator")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    RecordingApi.calls.clear()
    filled = [a.format(export=export, missing=tmp_path / "nothing") for a in argv]
    assert main(filled) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert RecordingApi.calls == []


def test_push_without_a_token_is_one_clear_error(tmp_path, monkeypatch, capsys):
    export = gankit.save_model(tiny_generator(), tmp_path / "generator")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    assert huggingface_hub.get_token() is None
    assert main(["push", str(export), "me/tiny"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err


def test_without_huggingface_hub_a_repo_id_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(GankitError, match=r"pip install 'gankit\[hub\]'"):
        gankit.load_generator("someone/tiny-gan")


@pytest.mark.parametrize("failure", ["network", "http"])
def test_a_failed_upload_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys, failure):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    errors = {
        "network": httpx2.ConnectError("[Errno -3] name resolution failed", request=request),
        "http": HfHubHTTPError(
            "403 Forbidden: you cannot write to me/tiny",
            response=httpx2.Response(403, request=request),
        ),
    }

    class FailingApi(RecordingApi):
        def upload_folder(self, **kwargs):
            raise errors[failure]

    export = gankit.save_model(tiny_generator(), tmp_path / "generator")
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    assert main(["push", str(export), "me/tiny"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gankit: error: could not push") and error.count("\n") == 1
    assert ("could not be reached" if failure == "network" else "403 Forbidden") in error
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before


class HubStandIn(BaseHTTPRequestHandler):
    """The Hub's HTTP API as a push uses it (create repo, create branch, validate the card's
    YAML, preupload, commit), answering as the Hub does, with every file sent inline
    ("regular" upload mode) so that the commit carries the files' bytes; records each request."""

    requests: list[tuple[str, str, bytes]]

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, b""))
        self._reply(404, {"error": "not part of the stand-in"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("POST", self.path, body))
        base = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            request = json.loads(body)
            return self._reply(200, {"url": f"{base}/{request['organization']}/{request['name']}"})
        if self.path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if self.path.startswith("/api/models/") and "/branch/" in self.path:
            return self._reply(200, {})
        if self.path.startswith("/api/models/") and "/preupload/" in self.path:
            files = [
                {"path": file["path"], "uploadMode": "regular", "shouldIgnore": False}
                for file in json.loads(body)["files"]
            ]
            return self._reply(200, {"files": files})
        if self.path.startswith("/api/models/") and "/commit/" in self.path:
            repo = self.path.removeprefix("/api/models/").split("/commit/")[0]
            oid = hashlib.sha1(body).hexdigest()
            return self._reply(200, {"commitUrl": f"{base}/{repo}/commit/{oid}", "commitOid": oid})
        self._reply(404, {"error": "not part of the stand-in"})


@pytest.fixture
def hub_stand_in():
    """A local HTTP server standing in for the Hub; yields its URL and the requests it got."""
    requests: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (HubStandIn,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def fresh_process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `gankit` process that talks to the Hub: its own HF_HOME, no token
    or endpoint but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), **extra}


def test_push_from_a_fresh_process_commits_exactly_the_export(tmp_path, hub_stand_in):
    """`python -m gankit push` in a process of its own (nothing imported for it beforehand),
    against a local stand-in of the Hub's HTTP API: the commit holds the export's files, byte
    for byte, and nothing else."""
    url, requests = hub_stand_in
    export = gankit.save_model(tiny_generator(), tmp_path / "generator")
    (export / "notes.txt").write_text("mine")  # a user's file beside the export stays home
    env = fresh_process_env(tmp_path, HF_ENDPOINT=url, HF_TOKEN="hf_test")
    argv = ["push", str(export), "me/tiny", "--private", "--revision", "v1", "--message", "hi"]
    done = subprocess.run(
        [sys.executable, "-m", "gankit", *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    posted = {path: body for method, path, body in requests if method == "POST"}
    assert done.stdout.strip().startswith(f"{url}/me/tiny/commit/")
    assert json.loads(posted["/api/repos/create"]) == {
        "name": "tiny",
        "organization": "me",
        "visibility": "private",
        "type": "model",
    }
    assert "/api/models/me/tiny/branch/v1" in posted
    lines = [json.loads(line) for line in posted["/api/models/me/tiny/commit/v1"].splitlines()]
    assert lines[0] == {"key": "header", "value": {"summary": "hi", "description": ""}}
    committed = {
        line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines[1:]
    }
    expected = {name for name in hub.UPLOADED_FILES if (export / name).is_file()}
    assert set(committed) == expected and {"config.json", "model.safetensors"} <= expected
    for name, content in committed.items():
        assert content == (export / name).read_bytes(), name


def test_offline_repo_id_from_a_fresh_process_is_one_line(tmp_path):
    """The not-in-the-cache message (which names the cache folder) from a process of its own."""
    env = fresh_process_env(tmp_path, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gankit",
            "sample",
            "nobody/missing",
            "--out",
            str(tmp_path / "x.png"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "'nobody/missing' is not in the Hugging Face cache" in done.stderr
    assert str(tmp_path / "hf-home" / "hub") in done.stderr
