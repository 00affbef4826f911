"""Security: API keys with scopes, the authentication middleware of both HTTP services, and
safe CSV downloads (docs/security.md). Masking secrets in text is :mod:`flts.redaction`."""

from flts.security.guard import (
    ANONYMOUS,
    ANY_KEY,
    OPEN,
    PRINCIPAL_SCOPE_KEY,
    AccessPolicy,
    AuthMiddleware,
    key_ring,
    principal_of,
    protect,
)
from flts.security.keys import (
    SCOPES,
    KeyRing,
    KeysFile,
    Principal,
    StoredKey,
    create_key,
    mint_key,
    read_keys,
    revoke_key,
    write_keys,
)
from flts.security.spreadsheet import escape_formulas

__all__ = [
    "ANONYMOUS",
    "ANY_KEY",
    "OPEN",
    "PRINCIPAL_SCOPE_KEY",
    "SCOPES",
    "AccessPolicy",
    "AuthMiddleware",
    "KeyRing",
    "KeysFile",
    "Principal",
    "StoredKey",
    "create_key",
    "escape_formulas",
    "key_ring",
    "mint_key",
    "principal_of",
    "protect",
    "read_keys",
    "revoke_key",
    "write_keys",
]
