"""A local HTTP server that speaks the part of the Hugging Face Hub API the upload path uses.

It exists so that ``imgtools push-hub`` can be tested with the *real* ``huggingface_hub`` client
(pointed at it through ``HF_ENDPOINT``) without the internet. The endpoints and payloads follow
``huggingface_hub`` 2.x (``hf_api.py``, ``_commit_api.py``, ``lfs.py``):

    GET  /api/whoami-v2                                   whoami
    POST /api/repos/create                                create_repo (409 when it exists)
    POST /api/validate-yaml                               create_commit, before committing a README
    POST /api/{type}s/{repo}/branch/{branch}              create_branch (409 when it exists)
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]          list_repo_tree (Link-header pagination)
    GET  /api/{type}s/{repo}/revision/{rev}               repo_info
    POST /api/{type}s/{repo}/preupload/{rev}              upload mode (lfs/regular) + remote oid
    POST /{prefix}{repo}.git/info/lfs/objects/batch       LFS batch: upload + verify actions
    PUT  /_lfs/{oid}             POST /_lfs/{oid}/verify  LFS "basic" transfer (an S3 stand-in)
    POST /api/{type}s/{repo}/commit/{rev}                 ndjson commit (file, lfsFile, deleted*)
    GET  /{prefix}{repo}/resolve/{rev}/{path}             raw file download
    GET  /api/{type}s/{repo}/commits/{rev}                list_repo_commits (newest first)
    PUT  /api/{type}s/{repo}/settings                     update_repo_settings (gated, private)

Every request is logged (``hub.log``) so tests can count uploads, faults can be injected
(``hub.fail(...)``) to exercise 401/404/409/5xx handling, and ``hub.on(...)`` runs a test's
callback when a request arrives (to kill the client mid-upload, for instance). The server
binds to 127.0.0.1 on an
ephemeral port, serves from daemon threads, and shuts itself down after ``max_seconds``.
Upload through Xet is not implemented: tests set ``HF_HUB_DISABLE_XET`` so the client falls
back to the LFS protocol, which every Hub endpoint still supports.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
# Files the real Hub stores through LFS because the default .gitattributes tracks them.
LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".tar", ".zip", ".gz", ".bin",
                ".tfrecord", ".npz", ".pkl")
REGULAR_MAX_BYTES = 10 * 1024 * 1024
_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return LFS_POINTER.format(oid=self.sha256, size=len(self.content)).encode()

    @property
    def oid(self) -> str:
        """What the tree API reports as ``oid``: git sha1 of the blob (of the pointer for LFS)."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "path": path, "size": len(self.content), "oid": self.oid}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content),
                            "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, dict[str, StoredFile]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    commits: list[dict] = field(default_factory=list)
    history: dict[str, list[str]] = field(default_factory=lambda: {"main": []})  # oldest first
    snapshots: dict[str, dict[str, StoredFile]] = field(default_factory=dict)  # commit -> tree
    gated: str | bool = False


@dataclass
class Hook:
    method: str
    pattern: re.Pattern
    callback: object
    skip: int
    seen: int = 0


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    skip: int
    message: str
    seen: int = 0


class FakeHub:
    """``with FakeHub() as hub:`` then point ``HF_ENDPOINT`` at ``hub.url``."""

    def __init__(self, token: str = "hf_fake_write_token", user: str = "tester",
                 max_seconds: float = 300.0, page_size: int = 1000):
        self.token = token
        self.user = user
        self.max_seconds = max_seconds
        self.page_size = page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.faults: list[Fault] = []
        self.hooks: list[Hook] = []
        self.hook_errors: list[Exception] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # ----- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ----- test helpers ----------------------------------------------------------------------
    def fail(self, method: str, path_regex: str, status: int, *, times: int = 1, skip: int = 0,
             message: str = "injected failure") -> None:
        """Answer ``status`` to the matching requests number ``skip+1 .. skip+times``."""
        with self._lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), status, times, skip,
                                     message))

    def on(self, method: str, path_regex: str, callback, *, skip: int = 0) -> None:
        """Call ``callback()`` when matching request number ``skip+1`` arrives, before it is
        handled (once)."""
        with self._lock:
            self.hooks.append(Hook(method.upper(), re.compile(path_regex), callback, skip))

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset"
              ) -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return {p: f.content for p, f in repo.branches[revision].items()}

    def count(self, method: str, path_regex: str, status: int | None = None) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p, s in self.log
                   if m == method.upper() and rx.search(p) and (status is None or s == status))

    # ----- state changes (called from handler threads) ---------------------------------------
    def _run_hooks(self, method: str, path: str) -> None:
        due = []
        with self._lock:
            for hook in self.hooks:
                if hook.method == method and hook.pattern.search(path):
                    hook.seen += 1
                    if hook.seen == hook.skip + 1:
                        due.append(hook)
        for hook in due:
            try:
                hook.callback()
            except Exception as e:  # a broken test callback must show, not kill the request
                self.hook_errors.append(e)

    def _injected(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and fault.pattern.search(path):
                    fault.seen += 1
                    if fault.skip < fault.seen <= fault.skip + fault.times:
                        return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    # ----- plumbing --------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, *, headers: dict | None = None,
              raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload if payload is not None else {}
                                                      ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None
                         else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.log.append((self.command, self._path, status))

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers=headers)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self._path, self._query = split.path, parse_qs(split.query)
        body = self._body()
        self.hub._run_hooks(self.command, self._path)
        fault = self.hub._injected(self.command, self._path)
        if fault is not None:
            return self._error(fault.status, fault.message)
        for method, rx, handler in _ROUTES:
            if method == self.command and (m := rx.fullmatch(self._path)):
                try:
                    return handler(self, body, **m.groupdict())
                except Exception as e:  # a bug in the fake must show up as a 500, not a hang
                    return self._error(500, f"fake hub error: {e!r}")
        return self._error(404, f"no route for {self.command} {self._path}")

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch

    def _repo(self, type_plural: str, repo_id: str, *, write: bool = False) -> Repo | None:
        repo = self.hub.repos.get((_TYPES.get(type_plural, "model"), repo_id))
        if repo is None or (repo.private and not self._authorized()):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if write and not self._authorized():
            self._error(401, "Invalid credentials in Authorization header")
            return None
        return repo

    def _branch(self, repo: Repo, rev: str) -> dict[str, StoredFile] | None:
        """The files at a branch, or at a commit id (read-only), as the Hub resolves both."""
        rev = unquote(rev)
        if rev in repo.snapshots and rev not in repo.branches:
            return repo.snapshots[rev]
        if rev not in repo.branches:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return None
        return repo.branches[rev]

    # ----- endpoints -------------------------------------------------------------------------
    def whoami(self, body: bytes) -> None:
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        self._send(200, {"type": "user", "name": self.hub.user, "orgs": [],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "fake", "role": "write"}}})

    def create_repo(self, body: bytes) -> None:
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        req = json.loads(body)
        repo_type = req.get("type") or "model"
        repo_id = f"{req.get('organization') or self.hub.user}/{req['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        key = (repo_type, repo_id)
        with self.hub._lock:
            if key in self.hub.repos:
                return self._send(409, {"error": "You already created this repo", "url": url},
                                  headers={"X-Error-Message": "You already created this repo"})
            self.hub.repos[key] = Repo(repo_type, repo_id,
                                       private=req.get("visibility") == "private"
                                       or bool(req.get("private")))
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as e:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
        if meta is not None and not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}]})
        self._send(200, {"errors": [], "warnings": []})

    def create_branch(self, body: bytes, t: str, repo_id: str, branch: str) -> None:
        repo = self._repo(t, repo_id, write=True)
        if repo is None:
            return
        branch = unquote(branch)
        with self.hub._lock:
            if branch in repo.branches:
                return self._error(409, f"Reference {branch} already exists")
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            repo.branches[branch] = dict(repo.branches[start])
            repo.heads[branch] = repo.heads[start]
            repo.history[branch] = list(repo.history[start])
        self._send(200, {})

    def tree(self, body: bytes, t: str, repo_id: str, rev: str, path: str | None = None) -> None:
        repo = self._repo(t, repo_id)
        if repo is None or (files := self._branch(repo, rev)) is None:
            return
        prefix = unquote(path).strip("/") + "/" if path else ""
        recursive = self._query.get("recursive", ["false"])[0].lower() == "true"
        entries: dict[str, dict] = {}
        for p, f in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):].split("/")
            for depth in range(1, len(rest)):  # folders on the way
                folder = prefix + "/".join(rest[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "path": folder,
                                                "oid": git_blob_sha1(folder.encode())})
                if not recursive:
                    break
            if len(rest) == 1 or recursive:
                entries[p] = f.tree_entry(p)
        if prefix and not entries:
            return self._error(404, f"{prefix} does not exist", "EntryNotFound")
        items = [entries[k] for k in sorted(entries)]
        cursor = int(self._query.get("cursor", ["0"])[0])
        page = items[cursor:cursor + self.hub.page_size]
        headers = {}
        if cursor + self.hub.page_size < len(items):
            nxt = (f"{self.hub.url}{self._path}?recursive={str(recursive)}"
                   f"&cursor={cursor + self.hub.page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send(200, page, headers=headers)

    def repo_info(self, body: bytes, t: str, repo_id: str, rev: str = "main") -> None:
        repo = self._repo(t, repo_id)
        if repo is None or (files := self._branch(repo, rev)) is None:
            return
        self._send(200, {"id": repo.repo_id, "private": repo.private,
                         "sha": repo.heads.get(unquote(rev), unquote(rev)),
                         "siblings": [{"rfilename": p} for p in sorted(files)]})

    def preupload(self, body: bytes, t: str, repo_id: str, rev: str) -> None:
        repo = self._repo(t, repo_id, write=True)
        if repo is None or (files := self._branch(repo, rev)) is None:
            return
        answer = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = (item["path"].lower().endswith(LFS_SUFFIXES) or b"\0" in sample
                   or item["size"] > REGULAR_MAX_BYTES)
            remote = files.get(item["path"])
            oid = None
            if remote is not None:
                oid = remote.sha256 if remote.lfs else git_blob_sha1(remote.content)
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                           "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": answer, "commitOid": repo.heads.get(unquote(rev), unquote(rev))})

    def lfs_batch(self, body: bytes, prefix: str, repo_id: str) -> None:
        repo = self._repo((prefix or "").rstrip("/") or "models", repo_id, write=True)
        if repo is None:
            return
        req = json.loads(body)
        objects = []
        for obj in req["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_store:
                href = f"{self.hub.url}/_lfs/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href},
                                    "verify": {"href": href + "/verify"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, body: bytes, oid: str) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "uploaded content does not match its sha256")
        with self.hub._lock:
            self.hub.lfs_store[oid] = body
        self._send(200, {})

    def lfs_verify(self, body: bytes, oid: str) -> None:
        req = json.loads(body)
        stored = self.hub.lfs_store.get(oid)
        if stored is None or len(stored) != req.get("size"):
            return self._error(404, "object not found")
        self._send(200, {})

    def commit(self, body: bytes, t: str, repo_id: str, rev: str) -> None:
        repo = self._repo(t, repo_id, write=True)
        if repo is None or (files := self._branch(repo, rev)) is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        branch = unquote(rev)
        new = dict(files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                new[path] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs_store:
                    return self._error(422, f"LFS object {value['oid']} for {path} not uploaded")
                new[path] = StoredFile(self.hub.lfs_store[value["oid"]], lfs=True)
            elif key == "deletedFile":
                if path not in new:
                    return self._error(404, f"A file with this name doesn't exist: {path}",
                                       "EntryNotFound")
                del new[path]
            elif key == "deletedFolder":
                for p in [p for p in new if p.startswith(path.rstrip("/") + "/")]:
                    del new[p]
            else:
                return self._error(400, f"unsupported commit operation {key}")
        with self.hub._lock:
            parent = header.get("parentCommit")
            if parent and parent != repo.heads[branch]:
                return self._error(412, "parent commit is not the head of the branch")
            oid = hashlib.sha1(json.dumps([repo.heads[branch], header,
                                           lines[1:]]).encode()).hexdigest()
            repo.branches[branch] = new
            repo.heads[branch] = oid
            repo.history[branch].append(oid)
            repo.snapshots[oid] = new
            repo.commits.append({"branch": branch, "oid": oid, "summary": header.get("summary"),
                                 "paths": [ln["value"]["path"] for ln in lines[1:]]})
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._send(200, {"success": True, "commitOid": oid, "pullRequestUrl": None,
                         "commitUrl": f"{self.hub.url}/{prefix}{repo_id}/commit/{oid}"})

    def list_commits(self, body: bytes, t: str, repo_id: str, rev: str) -> None:
        repo = self._repo(t, repo_id)
        if repo is None or self._branch(repo, rev) is None:
            return
        by_oid = {c["oid"]: c for c in repo.commits}
        items = [{"id": oid, "title": by_oid[oid]["summary"] or "", "message": "",
                  "authors": [{"user": self.hub.user}], "date": "2026-01-01T00:00:00.000Z"}
                 for oid in reversed(repo.history[unquote(rev)])]
        cursor = int(self._query.get("p", ["0"])[0])
        page = items[cursor * self.hub.page_size:(cursor + 1) * self.hub.page_size]
        headers = {}
        if (cursor + 1) * self.hub.page_size < len(items):
            headers["Link"] = f'<{self.hub.url}{self._path}?p={cursor + 1}>; rel="next"'
        self._send(200, page, headers=headers)

    def settings(self, body: bytes, t: str, repo_id: str) -> None:
        repo = self._repo(t, repo_id, write=True)
        if repo is None:
            return
        req = json.loads(body or b"{}")
        if "gated" in req:
            if req["gated"] not in ("auto", "manual", False):
                return self._error(400, f"invalid gated value {req['gated']!r}")
            repo.gated = req["gated"]
        if "private" in req:
            repo.private = bool(req["private"])
        self._send(200, {})

    def resolve(self, body: bytes, prefix: str | None, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo((prefix or "").rstrip("/") or "models", repo_id)
        if repo is None or (files := self._branch(repo, rev)) is None:
            return
        stored = files.get(unquote(path))
        if stored is None:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound")
        self._send(200, raw=stored.content,
                   headers={"ETag": f'"{stored.oid}"',
                            "X-Repo-Commit": repo.heads.get(unquote(rev), unquote(rev))})


_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_T = r"(?P<t>datasets|models|spaces)"
_RESOLVE = re.compile(
    rf"/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
_ROUTES = [
    ("GET", re.compile(r"/api/whoami-v2"), _Handler.whoami),
    ("POST", re.compile(r"/api/repos/create"), _Handler.create_repo),
    ("POST", re.compile(r"/api/validate-yaml"), _Handler.validate_yaml),
    ("POST", re.compile(rf"/api/{_T}/{_REPO}/branch/(?P<branch>.+)"), _Handler.create_branch),
    ("GET", re.compile(rf"/api/{_T}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"),
     _Handler.tree),
    ("GET", re.compile(rf"/api/{_T}/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), _Handler.repo_info),
    ("POST", re.compile(rf"/api/{_T}/{_REPO}/preupload/(?P<rev>[^/]+)"), _Handler.preupload),
    ("POST", re.compile(rf"/api/{_T}/{_REPO}/commit/(?P<rev>[^/]+)"), _Handler.commit),
    ("GET", re.compile(rf"/api/{_T}/{_REPO}/commits/(?P<rev>[^/]+)"), _Handler.list_commits),
    ("PUT", re.compile(rf"/api/{_T}/{_REPO}/settings"), _Handler.settings),
    ("POST", re.compile(rf"/(?P<prefix>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch"),
     _Handler.lfs_batch),
    ("PUT", re.compile(r"/_lfs/(?P<oid>[0-9a-f]{64})"), _Handler.lfs_put),
    ("POST", re.compile(r"/_lfs/(?P<oid>[0-9a-f]{64})/verify"), _Handler.lfs_verify),
    ("GET", _RESOLVE, _Handler.resolve),
    ("HEAD", _RESOLVE, _Handler.resolve),
]

__all__ = ["FakeHub", "git_blob_sha1"]
