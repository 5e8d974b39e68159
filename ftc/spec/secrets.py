"""Recognising literal credentials, so they are flagged by lint and masked in messages."""

from __future__ import annotations

import re

_TOKEN_PATTERNS = (
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"sk-[A-Za-z0-9_-]{20,}",  # OpenAI-style
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
    r"github_pat_[A-Za-z0-9_]{40,}",
    r"glpat-[A-Za-z0-9_.-]{20,}",  # GitLab personal access token
    r"npm_[A-Za-z0-9]{36,}",  # npm access token
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",  # AWS access key id
    r"xox[abpr]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}",  # Google API key
    r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",  # JWT
    r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])",  # W&B API key (40 hex)
    r"(?:[Aa]ccount[Kk]ey|SharedAccessSignature|sig)=[A-Za-z0-9%+/=]{20,}",  # Azure storage
    # user:password in a URL (scheme://user:password@host, up to the last @ before the path, as URL parsers
    # read it); a ${VAR} password is a reference, not a secret
    r"(?<=://)[^/\s:@]+:(?!\$)[^/\s]+(?=@)",
    # a PEM private key, its whole block when it is complete
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
)
_TOKEN = re.compile("|".join(f"(?:{p})" for p in _TOKEN_PATTERNS))


def looks_like_secret(text: str) -> bool:
    """True when `text` contains something shaped like an access token, key or password."""
    return bool(_TOKEN.search(text))


def mask_secrets(text: str) -> str:
    """`text` with every token-shaped substring replaced by `***`."""
    return _TOKEN.sub("***", text)
