"""How a repository URL is reached, in words: where its credentials come from and what a
failed access means, for one-line messages that never show a secret.

- covers: :func:`credentials_source` (the credential variables that are set, by name only,
  the declared source such as ``Secret s3-creds`` from MODELOPS_BUNDLE_CREDENTIALS, and a
  custom endpoint); :func:`cause` (an fsspec/s3fs/botocore exception read as wrong key,
  access denied, no such bucket, endpoint unreachable) and :func:`diagnose` (the same, asking
  the bucket once more when the first answer carried no reason: S3 answers a HEAD request
  with a bare 403); :func:`storage_options` (bounded
  retries and timeouts so an unreachable endpoint fails in seconds, not minutes).
- does not: open anything itself, or decide what is an error (store.py, pack.py and the
  results store raise; this module words the cause).
- see also: docs/bundles-s3.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# the variables each backend's client reads for credentials (names shown, values never)
CREDENTIAL_VARS = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
           "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
           "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "az": ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME",
           "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID"),
}
ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}
# botocore reads these for the endpoint (the service-specific one first)
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# an unreachable endpoint: two attempts with short timeouts (botocore's default is 60 s
# per connection attempt, with retries)
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60,
             "retries": {"max_attempts": 2, "mode": "standard"}}


def protocol(url: str) -> str:
    """The URL's backend (``s3``, ``gs``, ``az``...; ``file`` for a path)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    return ALIASES.get(scheme, scheme)


def is_object_store(url: str) -> bool:
    """Buckets and keys (s3://, gs://, az://): no directories, a bucket must exist."""
    return protocol(str(url)) in CREDENTIAL_VARS


def bucket_problem(fs, root: str) -> str | None:
    """Why the bucket of an object store's ``root`` cannot be used, or None: listing it
    tells a missing bucket (some servers would create one on the first put) from a refused
    key pair or an unreachable endpoint."""
    bucket = root.split("/", 1)[0]
    try:
        fs.ls(bucket, detail=False, refresh=True)
    except FileNotFoundError:
        return f"the bucket {bucket!r} does not exist"
    except Exception as exc:  # noqa: BLE001 - a client's own errors (botocore's)
        return cause(exc)
    return None


def storage_options(url: str, environ: Mapping[str, str] | None = None) -> dict:
    """fsspec options for ``url``: for s3://, timeouts and retries that make an
    unreachable endpoint fail within seconds, and, with ``environ`` (another process's
    environment, e.g. the local mode's workers'), the key pair, endpoint and region its
    AWS_* variables name instead of this process's. Nothing for other backends."""
    if protocol(url) != "s3":
        return {}
    # a new client each time: its credentials are read from the environment now, never a
    # cached instance's (fsspec caches filesystems by arguments, not by environment)
    options: dict = {"config_kwargs": dict(S3_CONFIG), "skip_instance_cache": True}
    if environ is not None:
        for option, var in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                            ("token", "AWS_SESSION_TOKEN")):
            if environ.get(var):
                options[option] = environ[var]
        endpoint = next((environ[v] for v in ENDPOINT_VARS if environ.get(v)), None)
        if endpoint:
            options["endpoint_url"] = endpoint
        region = environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION")
        if region:
            options["client_kwargs"] = {"region_name": region}
    return options


def client_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that tell a storage client where and as whom to connect
    (AWS_*, GOOGLE_*, AZURE_*): what a client-side copy needs of a worker's environment."""
    return {k: v for k, v in environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_"))}


def credentials_source(url: str, declared: str | None = None,
                       environ: Mapping[str, str] | None = None) -> str:
    """Where ``url``'s credentials come from, e.g. ``credentials AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY from Secret s3-creds; endpoint http://10.0.0.5:8333
    (AWS_ENDPOINT_URL)``. Names only: never a value of a credential variable."""
    env = os.environ if environ is None else environ
    proto = protocol(url)
    if proto not in CREDENTIAL_VARS:
        return "no credentials (a local path)" if proto == "file" else \
            f"credentials as the {proto}:// filesystem finds them"
    names = [n for n in CREDENTIAL_VARS[proto] if env.get(n)]
    if names:
        where = f"from {declared}" if declared else "from the environment"
        text = f"credentials {', '.join(names)} {where}"
    else:
        first = CREDENTIAL_VARS[proto][0]
        text = (f"no credential variables set ({first}... unset"
                + (f", although {declared} was expected to set them" if declared else "")
                + "): the client's default chain (workload identity, instance profile)")
    for var in ENDPOINT_VARS if proto == "s3" else ():
        if env.get(var):
            text += f"; endpoint {env[var]} ({var})"
            break
    return text


GENERIC = "access denied: the credentials are not allowed to do this"


def diagnose(fs, root: str, exc: BaseException) -> str:
    """:func:`cause` of ``exc``; when that is only "access denied" (a HEAD request's 403
    has no body, so no reason), the cause a listing of the repository's bucket gives, if
    more precise (a wrong key id, a wrong secret)."""
    why = cause(exc)
    if why != GENERIC:
        return why
    try:
        fs.ls(root.split("/", 1)[0], detail=False, refresh=True)
    except Exception as probe:  # noqa: BLE001 - any client error: read its reason
        better = cause(probe)
        if better.startswith("the "):
            return better
    return why


def cause(exc: BaseException) -> str:
    """A short reading of an access failure: what went wrong, in the user's terms."""
    chain = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(f"{type(x).__name__} {x}" for x in chain)
    low = text.lower()
    if "invalidaccesskeyid" in low or "access key id you provided does not exist" in low:
        return "the access key is not known to the server (wrong AWS_ACCESS_KEY_ID)"
    if "signaturedoesnotmatch" in low or "signature we calculated does not match" in low:
        return "the secret key does not match the access key (wrong AWS_SECRET_ACCESS_KEY)"
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return "the bucket does not exist"
    if ("could not connect" in low or "connection refused" in low or "connecttimeout" in low
            or "name or service not known" in low or "endpointconnectionerror" in low
            or "cannot connect to host" in low or "connect timeout" in low):
        return "the endpoint cannot be reached"
    if "nocredentialserror" in low or "unable to locate credentials" in low:
        return "no credentials were found"
    if ("accessdenied" in low or "access denied" in low or "forbidden" in low
            or isinstance(exc, PermissionError)):
        return GENERIC
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
