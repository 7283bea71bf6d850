"""The S3 backend: AWS S3 or any S3-compatible server (MinIO, SeaweedFS, …) through boto3.

Create-once is a conditional write (``IfNoneMatch='*'``): the server refuses a PUT on a
key that exists, atomically, so two writers can never both win. ``check()`` verifies
that the server enforces it, since an older server that ignores the header would
silently overwrite results.

Endpoint: ``--s3-endpoint`` (``s3_endpoint=``), else botocore's own ``AWS_ENDPOINT_URL``
/ ``AWS_ENDPOINT_URL_S3``, else AWS. Credentials, region, retries and backoff all come
from botocore's standard chain and config (``AWS_PROFILE``, ``AWS_MAX_ATTEMPTS``,
``AWS_RETRY_MODE``, ``~/.aws/config``), never from code here.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from farm.errors import KeyExists, KeyNotFound, StoreError, StoreUnavailable
from farm.store.base import READ_WORKERS, Store, register_backend
from farm.store.layout import check_key, check_prefix

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING = ("NoSuchKey", "NotFound", "404")
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
         "TokenRefreshRequired", "AllAccessDisabled", "403")
_BUSY = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed")


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        if not _BUCKET.fullmatch(bucket):
            raise StoreError(f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-'); "
                             "the store URL is s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = _client(endpoint_url)
        self.endpoint = self._client.meta.endpoint_url

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if key.endswith(".json"):
            args["ContentType"] = "application/json"
        elif key.endswith(".html"):
            args["ContentType"] = "text/html; charset=utf-8"  # the page is served straight from the bucket
        if not overwrite:
            args["IfNoneMatch"] = "*"
        for _ in range(3):
            try:
                self._client.put_object(**args)
                return
            except Exception as exc:
                error = self._error(exc, "write", key)
                # 409 ConditionalRequestConflict: another conditional write to the key was in flight.
                # AWS asks the client to repeat the request, which then succeeds or finds the key taken.
                if _code(exc) != "ConditionalRequestConflict":
                    raise error from None
        raise StoreUnavailable(f"{self.location(key)}: conditional writes kept conflicting; try again")

    def get(self, key: str) -> bytes:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with body:
                return bytes(body.read())
        except Exception as exc:
            raise self._error(exc, "read", key) from None

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            error = self._error(exc, "look up", key)
            if isinstance(error, KeyNotFound):
                return False
            raise error from None
        return True

    def list(self, prefix: str) -> list[str]:
        full = f"{self.prefix}/{check_prefix(prefix)}" if self.prefix else check_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys += [item["Key"][strip:] for item in page.get("Contents", [])]
        except Exception as exc:
            raise self._error(exc, "list", prefix) from None
        return sorted(keys)

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise StoreError(self._no_bucket()) from None
            raise self._error(exc, "open", None) from None
        super().check()

    def _no_bucket(self) -> str:
        return (f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it first "
                f"(aws s3 mb s3://{self.bucket} --endpoint-url {self.endpoint}) or fix --store / --s3-endpoint")

    def _error(self, exc: Exception, action: str, key: str | None) -> StoreError:
        """One StoreError saying what happened to which key and what to do."""
        from botocore import exceptions as bx

        where = self.location(key) if key is not None else self.url
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StoreError(f"no AWS credentials to {action} {where}: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where an instance role applies")
        if isinstance(exc, bx.ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = exc.response.get("Error", {}).get("Message") or code
            if code == "PreconditionFailed" or status == 412:
                return KeyExists(f"{where} exists; results are written once")
            if code == "NoSuchBucket":
                return StoreError(self._no_bucket())
            if code in _MISSING:
                return KeyNotFound(f"{where} does not exist in the store")
            if code in _AUTH or status == 403:
                return StoreError(f"{self.endpoint} refused to let these credentials {action} {where} ({code}); "
                                  "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and that they "
                                  f"may read, write and list s3://{self.bucket}/{self.prefix}")
            if code in _BUSY or status >= 500:
                return StoreUnavailable(f"{self.endpoint} failed to {action} {where} after botocore's retries "
                                        f"({code}: {message}); it may be overloaded or down")
            return StoreError(f"S3 refused to {action} {where}: {code}: {message}")
        if isinstance(exc, bx.BotoCoreError):  # connection refused, timeouts, TLS, a response cut short
            return StoreUnavailable(f"cannot reach the S3 endpoint {self.endpoint} to {action} {where}: {exc}")
        raise exc


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _client(endpoint_url: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StoreError("s3:// stores need boto3: pip install 'farm[s3]'") from None
    config = Config(
        # botocore waits 60 s to connect by default; a store that is down must be noticed in
        # seconds, so the run spools its results instead of stalling.
        connect_timeout=10,
        read_timeout=60,
        # One connection per parallel reader, so aggregation's parallel gets never queue for one.
        max_pool_connections=READ_WORKERS + 4,
        user_agent_extra="farm",
    )
    # No retries= here on purpose: botocore's own chain decides (standard mode by default).
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


@register_backend("s3")
def _open_s3(url: str, *, s3_endpoint: str | None = None, **_options: Any) -> Store:
    parsed = urlparse(url)
    if parsed.query or parsed.fragment:
        raise StoreError(f"{url!r}: an S3 store URL is s3://BUCKET/PREFIX, without '?' or '#'")
    return S3Store(parsed.netloc, parsed.path, endpoint_url=s3_endpoint)
