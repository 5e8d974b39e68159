"""Remote data, models and outputs through fsspec: s3://, gs://, abfs:// / az://, hf:// (see ftc.spec.uris).

Credentials come only from the environment of the process (the variables the spec names in env.secrets:
AWS_ACCESS_KEY_ID, AZURE_STORAGE_CONNECTION_STRING, ...), which each filesystem package reads itself;
nothing here writes them anywhere.
"""

from __future__ import annotations

from typing import Any

from ftc.runtime.errors import RuntimeUserError
from ftc.spec.uris import AZUREML_SCHEME, SCHEMES, missing_package, scheme_of, unknown_scheme_message


def check_usable(uri: str, what: str) -> None:
    """RuntimeUserError when `uri` cannot be reached from here: an unknown scheme, an azureml:// asset outside
    Azure ML, or a scheme whose fsspec package is not installed (naming the ftc extra that installs it)."""
    if problem := unknown_scheme_message(uri):
        raise RuntimeUserError(f"{what} {problem}")
    if scheme_of(uri) == AZUREML_SCHEME:
        raise RuntimeUserError(
            f"{what} {uri!r} is an Azure ML asset: only an Azure ML job can read it (compile with --target azureml, "
            "which passes it as an input Azure ML mounts); elsewhere give an s3://, gs://, abfs:// URI or a path"
        )
    if scheme := missing_package(uri):
        raise RuntimeUserError(
            f"{what} {uri!r} needs the {scheme.package} package to read {scheme.name}:// locations: "
            f"pip install 'ftc[{scheme.extra}]'"
        )


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec keyword arguments for the filesystem of `uri` (for datasets' `storage_options`); each package
    reads its credentials and endpoint from the environment itself, so none are needed today."""
    assert scheme_of(uri) in SCHEMES, uri
    return {}


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of `uri` and the path inside it, after `check_usable`."""
    import fsspec

    check_usable(uri, "location")
    return fsspec.core.url_to_fs(uri, **storage_options(uri))  # type: ignore[no-any-return]
