"""A small Python client for the Fragility HTTP API.

Example::

    from pathlib import Path

    from fragility.client import FragilityClient

    with FragilityClient("http://127.0.0.1:8000") as client:
        accepted = client.submit_audit(Path("digit.png"), model="builtin:digits_cnn", steps=20)
        job = client.wait(accepted["id"], timeout_s=600)
        if job["status"] == "succeeded":
            report = job["result"]  # the audit's report.json
            print(report["verdict"], report["metrics"]["topk_intersection"])
        else:
            print(job["status"], job["error"])

Uploads are sent under a neutral name (``image.png``), never the local file name, so no client
file name reaches the service.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

# Statuses of a poll that a restarting API or a proxy in front of it returns; wait() retries
# them like a connection error.
RETRIED_STATUSES = frozenset({502, 503, 504})

# Default seconds wait() and wait_batch() keep retrying failed polls before they give up, and
# the longest pause between two tries.
POLL_RETRY_S = 120.0
MAX_RETRY_DELAY_S = 10.0

# Audit parameters sent as their own form fields; any other parameter goes in the JSON "params".
FORM_FIELDS = ("method", "attack", "epsilon", "steps", "step_size", "k", "seed")


class ApiError(Exception):
    """An error response from the service.

    Attributes:
        status_code: the HTTP status.
        detail: the service's message.
        field: the request field at fault, or None.
    """

    def __init__(self, status_code: int, detail: str, field: str | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.field = field


class ServiceUnreachableError(Exception):
    """The service could not be reached (connection refused, timed out)."""


def _form(model: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Split audit parameters into form fields and a JSON ``params`` field for the rest."""
    form = {"model": model}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if name in FORM_FIELDS:
            form[name] = str(value)
        else:
            extra[name] = value
    if extra:
        form["params"] = json.dumps(extra)
    return form


# An image given as a file path (read from disk) or as the file's contents.
ImageSource = str | os.PathLike[str] | bytes


def _upload(source: ImageSource, argument: str, index: int = 0) -> tuple[str, bytes, str]:
    """Return the multipart file tuple for one image, read from disk when given a path."""
    if isinstance(source, bytes | bytearray):
        return (f"image{index}", bytes(source), "application/octet-stream")
    if isinstance(source, str | os.PathLike):
        path = Path(os.fspath(source))
        return (f"image{index}{path.suffix.lower()}", path.read_bytes(), "application/octet-stream")
    raise TypeError(
        f"{argument} must be a file path (str or os.PathLike) or the file's contents as bytes, "
        f"not {type(source).__name__}"
    )


class FragilityClient:
    """Submits jobs to the Fragility API and polls them.

    Args:
        base_url: the API's root URL, for example "http://127.0.0.1:8000".
        timeout_s: seconds to wait for each HTTP response (uploads included). Default 60.
        transport: optional httpx transport, for tests.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> FragilityClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServiceUnreachableError(
                f"could not reach the service at {self.base_url} ({type(error).__name__}: "
                f"{error}); check that `fragility serve` runs there"
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail, field = str(body.get("detail")), body.get("field")
            except (ValueError, AttributeError):
                detail, field = response.text[:500], None
            raise ApiError(response.status_code, detail, field)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # Submitting -------------------------------------------------------------------------------

    def submit_audit(self, image: ImageSource, model: str, **params: Any) -> dict[str, Any]:
        """Queue an audit of one image; returns {"id", "type", "status", "links"}.

        Args:
            image: the image file's path (str or os.PathLike), or its contents as bytes.
            model: "builtin:NAME" or a registered model id.
            params: further audit parameters: method, attack, epsilon (0.03 or "8/255"),
                steps, step_size, k, seed, and any other AuditParams field.

        Raises:
            TypeError: ``image`` is neither a path nor bytes.
            OSError: the image file cannot be read (FileNotFoundError when it is missing).
        """
        files = {"image": _upload(image, "image")}
        return self._json("POST", "/v1/audits", data=_form(model, params), files=files)

    def submit_batch(
        self,
        images: Iterable[ImageSource] | str | os.PathLike[str],
        model: str,
        **params: Any,
    ) -> dict[str, Any]:
        """Queue one audit per image; returns {"id", "count", "job_ids", "location"}.

        Args:
            images: image paths (str or os.PathLike) or contents (bytes), in a list or another
                iterable, or the path (str or os.PathLike) of one zip archive of images.
            model, params: as for submit_audit, shared by every image.

        Raises:
            TypeError: ``images`` or one of its items is of another type.
            OSError: a file cannot be read (FileNotFoundError when it is missing).
        """
        if isinstance(images, str | os.PathLike):
            data = Path(os.fspath(images)).read_bytes()
            files = [("files", ("images.zip", data, "application/zip"))]
        elif isinstance(images, Iterable) and not isinstance(images, bytes | bytearray):
            files = [("files", _upload(image, f"images[{i}]", i)) for i, image in enumerate(images)]
        else:
            raise TypeError(
                "images must be a list of image paths or bytes, or the path of a zip archive "
                f"(str or os.PathLike), not {type(images).__name__}"
            )
        return self._json("POST", "/v1/batches", data=_form(model, params), files=files)

    def submit_job(self, job_type: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Queue a job of a type that takes no upload (see job_types())."""
        body = {"type": job_type, "params": dict(params or {})}
        return self._json("POST", "/v1/jobs", json=body)

    # Reading ----------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        """Return the job: status, progress, timestamps, result or error."""
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel the job; returns {"id", "outcome", "job"}."""
        return self._json("DELETE", f"/v1/jobs/{job_id}")

    def batch(self, batch_id: str) -> dict[str, Any]:
        """Return the batch: each image's job and status, and aggregates."""
        return self._json("GET", f"/v1/batches/{batch_id}")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """Return [{"name", "size_bytes", "url"}] of a succeeded job's files."""
        return self._json("GET", f"/v1/jobs/{job_id}/artifacts")["artifacts"]

    def download_artifact(self, job_id: str, name: str, destination: Path) -> Path:
        """Save artifact ``name`` of the job to ``destination`` and return that path."""
        response = self._request("GET", f"/v1/jobs/{job_id}/artifacts/{name}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(response.content)
        return destination

    def models(self) -> list[dict[str, Any]]:
        """Return the builtin and registered models."""
        return self._json("GET", "/v1/models")["models"]

    def register_model(self, spec: Mapping[str, Any], weights: Path) -> dict[str, Any]:
        """Register a model from its spec and weights file; use the returned "id" as model."""
        suffix = weights.suffix.lower()
        files = {"weights": (f"weights{suffix}", weights.read_bytes(), "application/octet-stream")}
        return self._json("POST", "/v1/models", data={"spec": json.dumps(dict(spec))}, files=files)

    def job_types(self) -> list[dict[str, Any]]:
        """Return the registered job types with their parameter schemas."""
        return self._json("GET", "/v1/job-types")["job_types"]

    def ready(self) -> bool:
        """Return True when the service has Redis and at least one live worker."""
        try:
            return bool(self._http.get("/readyz").json().get("ready"))
        except (httpx.TransportError, ValueError):
            return False

    # Waiting ----------------------------------------------------------------------------------

    def _poll(
        self, fetch: Callable[[], dict[str, Any]], what: str, retry_s: float, poll_s: float
    ) -> dict[str, Any]:
        """Call ``fetch`` and retry it while the service is unreachable or returns 502 to 504.

        Retries start ``poll_s`` (at least 0.1 s) apart and double up to MAX_RETRY_DELAY_S, for
        at most ``retry_s`` seconds. After that the last error is raised.
        """
        deadline = time.monotonic() + retry_s
        delay = max(poll_s, 0.1)
        failures = 0
        while True:
            try:
                return fetch()
            except (ServiceUnreachableError, ApiError) as error:
                if isinstance(error, ApiError) and error.status_code not in RETRIED_STATUSES:
                    raise
                failures += 1
                if time.monotonic() + delay > deadline:
                    raise
                if failures == 1:
                    logger.warning(
                        "polling %s failed (%s); retrying for up to %.0f s", what, error, retry_s
                    )
            time.sleep(delay)
            delay = min(2 * delay, MAX_RETRY_DELAY_S)

    def wait(
        self,
        job_id: str,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        retry_s: float = POLL_RETRY_S,
    ) -> dict[str, Any]:
        """Poll the job until it has a final status and return it.

        A poll that fails because the service is unreachable or returns 502, 503 or 504 (an API
        restart) is retried with backoff for up to ``retry_s`` seconds.

        Args:
            poll_s: seconds between polls.
            timeout_s: give up after this many seconds; None waits forever.
            on_update: called with the job after every poll (for a progress bar).
            retry_s: seconds to keep retrying a failed poll. Default 120.

        Raises:
            TimeoutError: the job was not final after ``timeout_s``.
            ServiceUnreachableError, ApiError: a poll still failed after ``retry_s``, or the
                service answered another error.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self._poll(lambda: self.job(job_id), f"job {job_id}", retry_s, poll_s)
            if on_update is not None:
                on_update(job)
            if job["status"] in FINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def wait_batch(
        self,
        batch_id: str,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        retry_s: float = POLL_RETRY_S,
    ) -> dict[str, Any]:
        """Poll the batch until every job has a final status and return it (see wait)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            batch = self._poll(lambda: self.batch(batch_id), f"batch {batch_id}", retry_s, poll_s)
            if on_update is not None:
                on_update(batch)
            if batch["done"]:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} is not done after {timeout_s} s")
            time.sleep(poll_s)
