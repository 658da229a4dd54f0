"""A tiny fake Hugging Face Hub for tests: create a repo, commit files, download them back.

It implements only what huggingface_hub 2.4 calls for ``create_repo``, ``upload_folder`` (``validate-yaml``,
``preupload`` answered with "regular" so no LFS/xet transfer happens, the NDJSON ``commit`` with base64 file
contents), ``repo_info``, and ``hf_hub_download`` (HEAD/GET on ``/resolve/`` with the ETag, X-Repo-Commit and
Content-Length headers it checks). It listens on 127.0.0.1 on a free port and shuts itself down after
``max_seconds`` even if a test forgets to stop it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class FakeRepo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    branches: set[str] = field(default_factory=lambda: {"main"})
    committed_to: list[str] = field(default_factory=list)  # the branch of each commit (the files are shared)

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


def _git_blob_sha(data: bytes) -> str:
    # the ETag the Hub gives a regular (non-LFS) file: its git blob id
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # -- helpers ---------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, head: bool = False, repo: FakeRepo | None = None):
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        if repo is not None:
            headers["X-Repo-Commit"] = repo.head
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, urlsplit(self.path).path, self.headers.get("authorization")))

    def _authorized(self) -> bool:
        auth = self.headers.get("authorization") or ""
        if auth != f"Bearer {self.server.token}":
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return False
        return True

    # -- routes ----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        self._record()
        path = unquote(urlsplit(self.path).path)
        if not self._authorized():
            return
        body = self._body()
        if path == "/api/repos/create":
            payload = json.loads(body)
            # the real Hub puts a name without an organisation in the token owner's namespace
            repo_id = f"{payload.get('organization') or self.server.user}/{payload['name']}"
            with self.server.lock:
                if repo_id in self.server.repos:
                    # the real Hub's 409 body also carries the url, which create_repo(exist_ok=True) reads
                    return self._json(
                        409,
                        {"error": "You already created this model repo", "url": f"{self.server.url}/{repo_id}"},
                        {"X-Error-Message": "You already created this model repo"},
                    )
                self.server.repos[repo_id] = FakeRepo(private=payload.get("visibility") == "private")
            return self._json(200, {"url": f"{self.server.url}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
            try:
                yaml.safe_load(match.group(1) if match else "")
            except yaml.YAMLError as err:
                return self._json(400, {"errors": [{"message": str(err)}], "warnings": []})
            return self._json(200, {"errors": [], "warnings": []})
        match = re.match(r"^/api/models/(.+)/branch/([^/]+)$", path)
        if match:
            repo = self.server.repos.get(match.group(1))
            if repo is None:
                return self._error(404, "RepoNotFound", f"Repository {match.group(1)} not found")
            if match.group(2) in repo.branches:
                return self._error(409, "Conflict", f"Branch {match.group(2)} already exists")
            repo.branches.add(match.group(2))
            return self._json(200, {})
        match = re.match(r"^/api/models/(.+)/(preupload|commit)/([^/]+)$", path)
        if match is None:
            return self._error(404, "NotFound", f"no route for POST {path}")
        repo_id, action, revision = match.groups()
        repo = self.server.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if revision not in repo.branches:  # as the Hub: a commit goes to an existing branch
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", repo=repo)
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        new_files = {}
        for item in lines:
            if item["key"] == "file":
                new_files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return self._error(400, "BadRequest", f"fake hub does not support {item['key']} operations")
        with self.server.lock:
            repo.files.update(new_files)
            digest = hashlib.sha1(repr((repo.head, sorted(repo.files.items()))).encode()).hexdigest()
            repo.commits.append(digest)
            repo.committed_to.append(revision)
        return self._json(
            200,
            {"commitUrl": f"{self.server.url}/{repo_id}/commit/{digest}", "commitOid": digest, "pullRequestUrl": None},
        )

    def _resolve(self, head: bool) -> None:
        self._record()
        path = unquote(urlsplit(self.path).path)
        match = re.match(r"^/api/models/(.+?)(?:/revision/([^/]+))?$", path)
        if match and not head:
            repo = self.server.repos.get(match.group(1))
            if repo is None:
                return self._error(404, "RepoNotFound", f"Repository {match.group(1)} not found")
            return self._json(
                200,
                {
                    "id": match.group(1),
                    "modelId": match.group(1),
                    "sha": repo.head,
                    "private": repo.private,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                },
            )
        match = re.match(r"^/(.+)/resolve/([^/]+)/(.+)$", path)
        if match is None:
            return self._error(404, "NotFound", f"no route for {self.command} {path}", head=head)
        repo_id, revision, filename = match.groups()
        repo = self.server.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head=head)
        if revision not in ("main", repo.head):
            return self._error(404, "RevisionNotFound", f"Revision {revision} not found", head=head, repo=repo)
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", head=head, repo=repo)
        data = repo.files[filename]
        headers = {"ETag": f'"{_git_blob_sha(data)}"', "X-Repo-Commit": repo.head}
        self._send(200, data, {"Content-Type": "application/octet-stream", **headers}, head=head)

    def do_HEAD(self) -> None:
        self._resolve(head=True)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/api/whoami-v2":
            self._record()
            if not self._authorized():
                return
            return self._json(200, {"type": "user", "name": self.server.user, "orgs": [{"name": "ltkd-org"}],
                                    "auth": {"type": "access_token", "accessToken": {"role": self.server.role}}})
        self._resolve(head=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = token
        self.user = "alice"  # the token's owner, and one organisation it belongs to (whoami-v2)
        self.role = "write"  # the token's role: "read" tokens cannot push
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class FakeHub:
    """Context manager running the fake Hub in a thread; ``.url`` is its endpoint, ``.repos`` what was pushed."""

    def __init__(self, token: str = "hf_fake_test_token", max_seconds: float = 120.0):
        self._server = _Server(token)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(max_seconds, self.stop)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def token(self) -> str:
        return self._server.token

    @property
    def server(self) -> _Server:
        return self._server

    @property
    def repos(self) -> dict[str, FakeRepo]:
        return self._server.repos

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        return self._server.requests

    def start(self) -> "FakeHub":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
