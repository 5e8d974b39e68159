"""Remote locations a spec may name for data, models and outputs: the URI schemes ftc reads and writes.

Local paths stay paths. A value with a scheme (`s3://bucket/key`) is a URI: it is read and written
through fsspec by the runtime, with the filesystem package of its scheme (installed by an ftc extra),
and credentials only from the environment (the variables named in env.secrets). `azureml://` URIs are
Azure ML data and registry assets, which only the azureml target can hand to a job (as inputs it mounts).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

AZUREML_SCHEME = "azureml"


@dataclass(frozen=True)
class Scheme:
    """One URI scheme: the fsspec package that serves it, the ftc extra that installs it, its credentials."""

    name: str
    package: str  # the importable module of its fsspec implementation
    extra: str  # pip install 'ftc[<extra>]'
    credentials: str  # the environment variables it reads, for messages and docs


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("s3", "s3fs", "s3", "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL"),
        Scheme("gs", "gcsfs", "gcs", "GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST"),
        Scheme("gcs", "gcsfs", "gcs", "GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST"),
        Scheme("abfs", "adlfs", "azure", "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY"),
        Scheme("abfss", "adlfs", "azure", "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY"),
        Scheme("az", "adlfs", "azure", "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY"),
        Scheme("hf", "huggingface_hub", "train", "HF_TOKEN"),
    )
}


def scheme_of(value: str) -> str | None:
    """The lower-case scheme of a URI (`s3` of `s3://b/k`); None for a local path."""
    match = _SCHEME.match(value)
    return match.group(1).lower() if match else None


def is_uri(value: str) -> bool:
    """`s3://...`, `azureml://...`, `https://...`: a location with a scheme, not a local path."""
    return scheme_of(value) is not None


def known_schemes() -> list[str]:
    """The schemes a spec may use for data, models and outputs, azureml included."""
    return sorted([*SCHEMES, AZUREML_SCHEME])


def unknown_scheme_message(value: str) -> str | None:
    """Why `value` is not a location ftc can use (None when it is a local path or a known scheme)."""
    scheme = scheme_of(value)
    if scheme is None or scheme in SCHEMES or scheme == AZUREML_SCHEME:
        return None
    return f"{value!r}: ftc reads no {scheme}:// locations; use a local path or one of {', '.join(s + '://' for s in known_schemes())}"


def missing_package(value: str) -> Scheme | None:
    """The scheme of `value` when its fsspec package is not installed here; None otherwise."""
    scheme = SCHEMES.get(scheme_of(value) or "")
    if scheme is None or importlib.util.find_spec(scheme.package) is not None:
        return None
    return scheme
