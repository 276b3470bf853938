"""Talking to the Hub: the checks made before any work (a valid repository id, a token), the
endpoint, huggingface_hub's failures turned into messages a user can act on (:func:`hub_call`),
and the one retry loop kept around commit calls (:func:`with_retries`).

Kept beside ``huggingface_hub`` because its exceptions name HTTP statuses, not what to do next
(a new token, another repository id, a re-run that skips what arrived), and because
``create_commit`` does not retry its commit POST.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from imgtools.errors import RemoteError, UserError

COMMIT_RETRIES = 3
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}")
T = TypeVar("T")


def validate_repo_id(repo_id: str) -> str:
    """``owner/name`` as the Hub accepts it; checked before any work."""
    if (not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id
            or repo_id.endswith((".", "-", ".git"))):
        raise UserError(f"invalid repository id {repo_id!r}",
                        fix="write it as owner/name (your user or organization, a slash, a name "
                            "of letters, digits, '-', '_' or '.'), e.g. alice/imagenette")
    return repo_id


def resolve_token() -> str:
    """``HF_TOKEN`` or the token saved by ``hf auth login``; a clear error when neither."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token found",
                        fix="create a token with write access at "
                            "https://huggingface.co/settings/tokens, then export HF_TOKEN=... "
                            "or run `hf auth login`; or use --local-dir to write the repository "
                            "to a folder without publishing")
    return token


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


# ----------------------------------------------------------------------------------------------
# Hub errors -> messages a user can act on
# ----------------------------------------------------------------------------------------------


def _in_chain(exc: BaseException | None, kinds) -> BaseException | None:
    """The first exception of type ``kinds`` in ``exc``'s cause/context chain, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kinds):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _http_status(exc: BaseException) -> int | None:
    from huggingface_hub.errors import HfHubHTTPError

    http = _in_chain(exc, HfHubHTTPError)
    response = getattr(http, "response", None)
    return response.status_code if response is not None else None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """"Could not reach the server": the transport errors of the HTTP client huggingface_hub
    uses (``httpx2``, a dependency of the huggingface_hub this project requires) and the
    standard library's."""
    import httpx2

    return (ConnectionError, TimeoutError, httpx2.TransportError)


RERUN = "run the same command again: files already on the Hub are skipped, nothing is sent twice"


@contextlib.contextmanager
def hub_call(action: str, repo_id: str, endpoint: str) -> Iterator[None]:
    """Turn huggingface_hub failures into a :class:`RemoteError` that says what to do.

    Kept because the library's exceptions name HTTP statuses, not what a user should do next
    (a new token, another repository id, a re-run that skips what arrived)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except UserError:
        raise
    except RevisionNotFoundError as e:
        raise RemoteError(f"{action}: branch not found in {repo_id}",
                          fix="check --revision (imgtools creates a missing branch from main "
                              "only when it can create branches in this repository)") from e
    except RepositoryNotFoundError as e:
        raise RemoteError(f"{action}: repository {repo_id} not found or not accessible (404)",
                          fix="check the repository id and that your token can write to "
                              "its owner") from e
    except Exception as e:  # noqa: BLE001 - every other failure is mapped or re-raised below
        status = _http_status(e)
        if status is not None:
            raise _status_error(action, repo_id, status, str(e)) from e
        if _in_chain(e, _transport_errors()) is not None:
            raise RemoteError(f"{action}: could not reach {endpoint} ({e})",
                              fix=f"check your connection (and HF_ENDPOINT), then {RERUN}") from e
        if isinstance(e, ValueError) and "metadata" in str(e):
            raise RemoteError(f"{action}: the Hub rejected the README.md metadata: {e}",
                              fix="report this as a bug in imgtools") from e
        raise


def _status_error(action: str, repo_id: str, status: int, detail: str) -> RemoteError:
    first = detail.strip().splitlines()[0] if detail.strip() else ""
    error: RemoteError
    if status == 401:
        error = RemoteError(f"{action}: the Hub refused the token (401 Unauthorized)",
                            fix="your token is invalid or expired: create a new one with write "
                                "access and set HF_TOKEN (or `hf auth login`)")
    elif status == 403:
        error = RemoteError(f"{action}: no write access to {repo_id} (403 Forbidden)",
                            fix="use a token with write access to this user or organization")
    elif status == 404:
        error = RemoteError(f"{action}: {repo_id} not found (404)",
                            fix="check the repository id and --revision")
    elif status in (409, 412):
        error = RemoteError(f"{action}: conflict on {repo_id} ({status}): {first}",
                            fix=f"someone else changed the repository meanwhile; {RERUN}")
    elif status == 429 or status >= 500:
        error = RemoteError(f"{action}: the Hub failed ({status}) even after retries: {first}",
                            fix=f"wait a moment, then {RERUN}")
    else:
        error = RemoteError(f"{action}: the Hub answered {status}: {first}",
                            fix="check the repository id, your token and --revision")
    error.status = status  # type: ignore[attr-defined]
    return error


def with_retries(call: Callable[[], T], action: str, repo_id: str, endpoint: str) -> T:
    """``call()`` (an upload or a commit), again after a 429 or 5xx.

    Kept because ``create_commit`` (the path ``upload_folder`` takes without ``hf_xet``) does
    not retry its commit POST: the library fears a duplicate commit when a response is lost.
    Here a repeated call is harmless - the library drops files the Hub already holds, so the
    second attempt commits nothing twice - while the uploads inside (preupload, LFS batch and
    PUT) are already retried by ``http_backoff``."""
    for attempt in range(COMMIT_RETRIES):
        try:
            with hub_call(action, repo_id, endpoint):
                return call()
        except RemoteError as e:
            status = getattr(e, "status", 0)
            if attempt + 1 == COMMIT_RETRIES or not (status == 429 or status >= 500):
                raise
            time.sleep(2 ** attempt)
    raise AssertionError("unreachable")  # pragma: no cover
