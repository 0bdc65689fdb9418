"""``router-mesh fetch-models``: fill the models volume (the model-download Job's entry point).

What it fetches: the model of every enabled layer of a rendered config (into
``<models>/<model.path>/``) and every ``examplesFrom`` set (``<models>/<path>``), or
models named on the command line. Sources:

- ``hf://<org>/<repo>[@<revision>][/<file or folder>]`` through ``huggingface_hub``
  (``HF_ENDPOINT`` honoured; a token from ``--hf-token-file``, a mounted Secret key, or
  ``HF_TOKEN``; never logged). A last segment with a dot (``x.gguf``) is a file,
  anything else a folder; no path is the whole repository.
- ``https://`` (and ``http://`` for in-cluster mirrors) with resume: the partial file
  keeps its bytes across retries and across runs of the Job, continuing with a
  ``Range`` request.
- ``file:///abs/path`` or ``file:relative/path`` (a file or a folder).

Guarantees: each model is written under ``<models>/.partial/`` on the same volume,
checked against its sha256 when one is given (a file's digest; for a folder, the
digest of its sorted ``path<NUL>sha256`` lines), then renamed into place in one step
together with a marker file recording source and digest, so a model server never
sees a half-written model under the final name. A model whose marker matches is
skipped. A bad checksum, a 404 or a full disk is a :class:`FetchError` naming the
model, and the partial data is removed; a network failure that outlasts the retries
keeps the partial download so the next run resumes it. Progress (bytes, rate, ETA) is
logged every few seconds, so ``kubectl logs`` shows it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import httpx

from routermesh.runtime.contract.config import model_dir_name
from routermesh.runtime.contract.models import FetchItem

log = logging.getLogger("routermesh.fetch")

MARKER = ".router-mesh-model.json"
PARTIAL_DIR = ".partial"
CHUNK = 1024 * 1024
_HF = re.compile(
    r"^hf://(?P<org>[^/\s@]+)/(?P<repo>[^/\s@]+)(@(?P<rev>[^/\s]+))?(/(?P<path>\S*))?$"
)


class FetchError(Exception):
    """A model could not be fetched; the message names it and says why.

    ``resumable``: the partial download is kept for the next run to resume.
    """

    def __init__(self, message: str, *, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


@dataclass(frozen=True)
class Source:
    scheme: Literal["hf", "http", "file"]
    uri: str
    repo: str = ""
    revision: str | None = None
    path: str = ""
    """hf: file or folder inside the repo ("" = all); file: the local path."""

    @property
    def is_file(self) -> bool:
        """Whether the source is one file (else a folder)."""
        if self.scheme == "http":
            return True
        if self.scheme == "file":
            return not Path(self.path).is_dir()
        last = self.path.rstrip("/").rsplit("/", 1)[-1]
        return bool(self.path) and not self.path.endswith("/") and "." in last

    @property
    def name(self) -> str:
        """File name of a single-file source."""
        if self.scheme == "http":
            return unquote(urlsplit(self.uri).path.rstrip("/").rsplit("/", 1)[-1]) or "model"
        return Path(self.path.rstrip("/")).name or "model"


def parse_uri(uri: str, base_dir: Path | None = None) -> Source:
    """Parse a model or examples URI; raises :class:`FetchError` for an unknown form."""
    if uri.startswith("hf://"):
        match = _HF.match(uri)
        if match is None:
            raise FetchError(f"{uri}: expected hf://<org>/<repo>[@revision][/path]")
        return Source(
            scheme="hf",
            uri=uri,
            repo=f"{match['org']}/{match['repo']}",
            revision=match["rev"],
            path=(match["path"] or ""),
        )
    if uri.startswith(("https://", "http://")):
        if not urlsplit(uri).hostname:
            raise FetchError(f"{uri}: no host")
        return Source(scheme="http", uri=uri)
    if uri.startswith("file:"):
        rest = uri.removeprefix("file:")
        local = Path(unquote(rest[2:])) if rest.startswith("//") else Path(unquote(rest))
        if not local.is_absolute():
            local = (base_dir or Path.cwd()) / local
        return Source(scheme="file", uri=uri, path=str(local))
    raise FetchError(f"{uri}: unsupported scheme (use hf://, https:// or file:)")


def items_from_uris(uris: list[str], digests: list[str]) -> list[FetchItem]:
    if digests and len(digests) != len(uris):
        raise FetchError(f"{len(uris)} --model given but {len(digests)} --sha256; give one each")
    return [
        FetchItem(uri=uri, sha256=(digests[i] if digests else None), path=model_dir_name(uri))
        for i, uri in enumerate(uris)
    ]


# --- digests and progress -----------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK * 4):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(folder: Path) -> str:
    """Digest of a folder: sha256 over sorted ``relative/path<NUL>sha256-of-file`` lines."""
    lines = [
        f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n"
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class Progress:
    """Logs bytes, rate and ETA at most every ``interval`` seconds, and once at the end."""

    def __init__(self, name: str, total: int | None, done: int = 0, interval: float = 2.0) -> None:
        self.name, self.total, self.done = name, total, done
        self._start_bytes = done
        self._started = self._last = time.monotonic()
        self._interval = interval

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self.report("downloading")

    def report(self, message: str) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = (self.done - self._start_bytes) / elapsed
        extra: dict[str, Any] = {
            "event": "fetch_progress",
            "model": self.name,
            "bytes": self.done,
            "total_bytes": self.total,
            "mb_per_s": round(rate / 1e6, 2),
        }
        if self.total and rate > 0:
            extra["percent"] = round(100 * self.done / self.total, 1)
            extra["eta_s"] = round(max(self.total - self.done, 0) / rate, 1)
        log.info(message, extra=extra)


@contextmanager
def _disk_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FetchError(f"{what}: no space left on the models volume") from error
        raise


# --- sources ------------------------------------------------------------------------------------


def redact(uri: str) -> str:
    """A URI fit for logs and markers: no user info, no query (presigned URLs carry
    credentials there), no fragment."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?..." if parts.query else "")


def _content_range(response: httpx.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range: bytes a-b/n`` (or ``bytes */n``)."""
    value = response.headers.get("content-range", "")
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", value.strip())
    if match is None:
        return None, None
    first = int(match[1]) if match[1] is not None else None
    total = int(match[2]) if match[2] != "*" else None
    return first, total


def _attempt(url: str, shown: str, part: Path, validator_file: Path, client: httpx.Client) -> None:
    """One GET, resuming from ``part``'s size; transport trouble raises TransportError."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator_file.exists():
            headers["If-Range"] = validator_file.read_text()
    with client.stream("GET", url, headers=headers) as response:
        offset = _check_response(response, shown, part, offset)
        validator = response.headers.get("etag") or response.headers.get("last-modified")
        if validator and not offset:
            validator_file.write_text(validator)
        length = response.headers.get("content-length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None and total == offset:
            return  # nothing left to read (the 416 case)
        progress = Progress(shown, total, done=offset)
        if offset:
            log.info(
                "resuming download",
                extra={"event": "fetch_resume", "model": shown, "offset": offset},
            )
        with _disk_errors(shown), part.open("ab" if offset else "wb") as handle:
            # Raw bytes as they arrive: a chunk size would hold back a partial chunk that a
            # cut connection loses.
            for chunk in response.iter_raw():
                handle.write(chunk)
                progress.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise httpx.TransportError("connection closed before the end")
        progress.report("downloaded")
        validator_file.unlink(missing_ok=True)


def _check_response(response: httpx.Response, shown: str, part: Path, offset: int) -> int:
    """The offset the response continues from; raises for errors and bad resumes."""
    status = response.status_code
    if status == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE and offset:
        _, total = _content_range(response)
        if total == offset:
            response.headers["content-length"] = "0"
            return offset  # the partial file already holds everything
        part.unlink()  # larger than the file, or unknown: start over
        raise httpx.TransportError("range not satisfiable; restarting")
    if status in (404, 410):
        raise FetchError(f"{shown}: not found (HTTP {status})")
    if status >= 500 or status in (408, 429):
        raise httpx.TransportError(f"HTTP {status}")
    if status >= 400:
        raise FetchError(f"{shown}: HTTP {status}")
    if status == httpx.codes.PARTIAL_CONTENT:
        first, _ = _content_range(response)
        if first != offset:
            part.unlink()
            raise httpx.TransportError(f"server resumed at {first}, not {offset}")
        return offset
    return 0  # a whole file: the Range was ignored or the file changed


def _download_http(
    url: str,
    part: Path,
    client: httpx.Client,
    *,
    attempts: int,
    backoff: float,
) -> None:
    """Download ``url`` into ``part``, resuming from its current size.

    A resume is only trusted for the same file: the validator (ETag, else Last-Modified)
    of the first response is kept beside the partial file and sent as ``If-Range``, so a
    changed file comes back whole (200) and the download starts over; a 206 must start
    at the offset asked for. Bytes are read raw (``Accept-Encoding: identity``), so
    offsets count the file's own bytes.
    """
    validator_file = part.with_name(part.name + ".validator")
    shown = redact(url)
    for attempt in range(1, attempts + 1):
        try:
            _attempt(url, shown, part, validator_file, client)
            return
        except httpx.TransportError as error:
            if attempt == attempts:
                kept = part.stat().st_size if part.exists() else 0
                raise FetchError(
                    f"{shown}: download failed after {attempts} attempts ({error}); "
                    f"{kept} bytes are kept in {part} and the next run resumes from there",
                    resumable=True,
                ) from error
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                "download interrupted, retrying",
                extra={
                    "event": "fetch_retry",
                    "model": shown,
                    "attempt": attempt,
                    "error": str(error),
                    "retry_in_s": delay,
                },
            )
            time.sleep(delay)


def _copy_file(source: Path, target: Path) -> None:
    total = source.stat().st_size
    progress = Progress(str(source), total)
    with _disk_errors(str(source)), source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(CHUNK * 4):
            dst.write(chunk)
            progress.update(len(chunk))
    progress.report("copied")


def _fetch_file_source(source: Source, staging: Path) -> None:
    local = Path(source.path)
    if not local.exists():
        raise FetchError(f"{source.uri}: {local} does not exist")
    if local.is_dir():
        for path in sorted(local.rglob("*")):
            relative = path.relative_to(local)
            if path.is_dir():
                (staging / relative).mkdir(parents=True, exist_ok=True)
            elif path.is_file():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                _copy_file(path, staging / relative)
    else:
        _copy_file(local, staging / local.name)


def _lift(staging: Path, folder: str) -> None:
    """A snapshot keeps the repo's layout: move ``folder``'s content to the top."""
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    top = folder.split("/", 1)[0]
    moved = staging / f".lift-{top}"
    (staging / top).replace(moved)
    inner = moved / folder.split("/", 1)[1] if "/" in folder else moved
    for entry in list(inner.iterdir()):
        entry.replace(staging / entry.name)
    shutil.rmtree(moved)


def _fetch_hf(source: Source, staging: Path, token: str | None) -> None:
    try:
        import huggingface_hub  # noqa: PLC0415 - only the hf:// path needs it
        from huggingface_hub import errors as hf_errors  # noqa: PLC0415
    except ImportError as error:
        raise FetchError(f"{source.uri}: huggingface_hub is not installed") from error
    endpoint = os.environ.get("HF_ENDPOINT") or None
    log.info(
        "fetching from the hub",
        extra={
            "event": "fetch_hf",
            "model": source.uri,
            "repo": source.repo,
            "revision": source.revision or "main",
            "endpoint": endpoint or "https://huggingface.co",
            "token": token is not None,
        },
    )
    try:
        if source.is_file:
            downloaded = huggingface_hub.hf_hub_download(
                repo_id=source.repo,
                filename=source.path,
                revision=source.revision,
                token=token,
                endpoint=endpoint,
                local_dir=staging,
            )
            flat = staging / Path(source.path).name
            if Path(downloaded) != flat:
                Path(downloaded).replace(flat)
                for leftover in staging.iterdir():  # the file's now empty parent folders
                    if leftover.is_dir():
                        shutil.rmtree(leftover)
        else:
            folder = source.path.strip("/")
            huggingface_hub.snapshot_download(
                repo_id=source.repo,
                revision=source.revision,
                token=token,
                endpoint=endpoint,
                local_dir=staging,
                allow_patterns=[f"{folder}/*"] if folder else None,
            )
            if folder:
                _lift(staging, folder)
    except hf_errors.LocalEntryNotFoundError as error:  # before EntryNotFoundError: a subclass
        raise FetchError(
            f"{source.uri}: the hub could not be reached ({type(error).__name__})"
        ) from error
    except (
        hf_errors.RepositoryNotFoundError,
        hf_errors.RevisionNotFoundError,
        hf_errors.EntryNotFoundError,
    ) as error:
        raise FetchError(f"{source.uri}: not found on the hub ({type(error).__name__})") from error
    except (OSError, httpx.HTTPError) as error:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FetchError(f"{source.uri}: no space left on the models volume") from error
        raise FetchError(
            f"{source.uri}: the hub could not be reached ({type(error).__name__})"
        ) from error
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's own metadata


# --- one item -----------------------------------------------------------------------------------


def read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker_path(item: FetchItem, final: Path) -> Path:
    return final / MARKER if item.kind == "model" else final.with_name(final.name + ".marker.json")


def is_present(item: FetchItem, models_dir: Path) -> bool:
    final = models_dir / item.path
    marker = read_marker(_marker_path(item, final))
    uri_digest = hashlib.sha256(item.uri.encode()).hexdigest()
    if marker is None or not final.exists() or marker.get("uri_sha256") != uri_digest:
        return False
    return item.sha256 is None or marker.get("sha256") == item.sha256


def _staged_digest(item: FetchItem, staging: Path, source: Source) -> str:
    if item.kind == "examples" or source.is_file:
        files = [p for p in staging.iterdir() if p.is_file()]
        if len(files) != 1:
            raise FetchError(f"{item.uri}: expected one file, got {len(files)}")
        return sha256_file(files[0])
    return tree_digest(staging)


def _stage(
    source: Source,
    staging: Path,
    client: httpx.Client | None,
    hf_token: str | None,
    *,
    attempts: int,
    backoff: float,
) -> None:
    """Bring the source's content into ``staging``."""
    if source.scheme == "file":
        _fetch_file_source(source, staging)
        return
    if source.scheme == "hf":
        _fetch_hf(source, staging, hf_token)
        return
    http = client or httpx.Client(
        timeout=httpx.Timeout(30.0, read=120.0), follow_redirects=True, trust_env=True
    )
    try:
        part = staging / (source.name + ".part")
        _download_http(source.uri, part, http, attempts=attempts, backoff=backoff)
        part.replace(staging / source.name)
    finally:
        if client is None:
            http.close()


def _install(item: FetchItem, staging: Path, final: Path, digest: str) -> None:
    """Move the verified content to its final name with its marker."""
    marker = json.dumps(
        {
            "uri_sha256": hashlib.sha256(item.uri.encode()).hexdigest(),
            "source": redact(item.uri),
            "sha256": digest,
            "fetched_at": time.time(),
        }
    )
    with _disk_errors(item.uri):
        if item.kind == "model":
            (staging / MARKER).write_text(marker)
            final.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if final.exists():  # a stale or unmarked copy: move it aside, never leave a gap
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                final.replace(old)
            staging.replace(final)  # model and marker appear together
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            next(p for p in staging.iterdir() if p.is_file()).replace(final)
            _marker_path(item, final).write_text(marker)
            shutil.rmtree(staging)


def _prepare_staging(staging: Path, keep: str | None) -> None:
    """An empty staging folder, but for a partial download to resume (``keep``)."""
    staging.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        if keep and path.name in (keep, keep + ".validator"):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def fetch_one(
    item: FetchItem,
    models_dir: Path,
    *,
    client: httpx.Client | None = None,
    hf_token: str | None = None,
    base_dir: Path | None = None,
    attempts: int = 5,
    backoff: float = 1.0,
) -> Path:
    """Fetch one model or examples set; returns its final path. Raises :class:`FetchError`."""
    final = models_dir / item.path
    if is_present(item, models_dir):
        log.info("already present", extra={"event": "fetch_skip", "model": redact(item.uri)})
        return final
    source = parse_uri(item.uri, base_dir)
    # One staging folder per item path (a digest: "a/b" and "a_b" never share one), and
    # a lock: two download Jobs of overlapping model sets may run at once.
    key = hashlib.sha256(item.path.encode()).hexdigest()[:16]
    staging = models_dir / PARTIAL_DIR / key
    with _disk_errors(item.uri):
        (models_dir / PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
        lock = (models_dir / PARTIAL_DIR / f"{key}.lock").open("w")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_present(item, models_dir):  # the other Job finished it meanwhile
            return final
        return _fetch_locked(
            item,
            source=source,
            staging=staging,
            final=final,
            client=client,
            hf_token=hf_token,
            attempts=attempts,
            backoff=backoff,
        )


def _fetch_locked(
    item: FetchItem,
    *,
    source: Source,
    staging: Path,
    final: Path,
    client: httpx.Client | None,
    hf_token: str | None,
    attempts: int,
    backoff: float,
) -> Path:
    with _disk_errors(item.uri):
        _prepare_staging(staging, keep=source.name + ".part" if source.scheme == "http" else None)
    started = time.monotonic()
    try:
        _stage(source, staging, client, hf_token, attempts=attempts, backoff=backoff)
        digest = _staged_digest(item, staging, source)
        if item.sha256 is not None and digest != item.sha256:
            raise FetchError(
                f"{item.uri}: sha256 mismatch: got {digest}, expected {item.sha256}; "
                "nothing was installed"
            )
        _install(item, staging, final, digest)
    except FetchError as error:
        if not error.resumable:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "model ready",
        extra={
            "event": "fetch_done",
            "model": redact(item.uri),
            "path": str(final),
            "sha256": digest,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    return final


def fetch_all(
    items: list[FetchItem],
    models_dir: Path,
    *,
    hf_token: str | None = None,
    base_dir: Path | None = None,
    attempts: int = 5,
) -> list[Path]:
    """Fetch every item in order; the first failure raises (after cleaning up after itself)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    return [
        fetch_one(item, models_dir, hf_token=hf_token, base_dir=base_dir, attempts=attempts)
        for item in items
    ]


def read_token(token_file: str | None) -> str | None:
    """The hub token: from a mounted Secret file, else ``HF_TOKEN``, else none."""
    if token_file:
        try:
            return Path(token_file).read_text(encoding="utf-8").strip() or None
        except OSError as error:
            raise FetchError(f"token file {token_file} cannot be read: {error.strerror}") from error
    return os.environ.get("HF_TOKEN") or None
