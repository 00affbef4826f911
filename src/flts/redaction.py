"""Masking secrets in text: the one function every output path uses (docs/security.md).

Backend URLs carry credentials in two places, the user info (``kafka://user:pw@host``,
``postgresql://mlflow:pw@db/mlflow``) and the query (``kafka://host:9092?sasl.password=pw``),
and those URLs end up in ``flts config show``, in settings and configuration errors and in log
lines. :func:`redact` masks both wherever a URL appears in a string, so a caller never has to
know whether the text holds a URL, a whole error message or a log record::

    >>> redact("kafka bus URL 'kafka://u:pw@h:9092?sasl.password=s3&x=1' is malformed")
    "kafka bus URL 'kafka://u:****@h:9092?sasl.password=****&x=1' is malformed"

It parses nothing strictly (a malformed URL is exactly the one whose error must not leak), and
it errs towards masking: any user-info password and any query value whose name looks like a
credential is replaced, also outside a well-formed URL (``kafka//u:pw@h`` loses ``pw`` too).
"""

from __future__ import annotations

import re

MASK = "****"

#: A URL inside free text: scheme, ``://``, then everything up to whitespace or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
#: Query or fragment parameters whose value is a credential (``sasl.password``,
#: ``sasl.oauthbearer.client.secret``, ``api_key``, ``X-Amz-Signature``, ``token`` ...).
_SENSITIVE_NAME = re.compile(
    r"pass|pwd|secret|token|credential|api[_.\-]?key|access[_.\-]?key|private|signature|jaas",
    re.IGNORECASE,
)
_PARAMETER = re.compile(r"(?P<lead>^|[?&;#\s])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s'\"]*)")
#: ``user:password@`` outside a recognisable URL (a malformed one).
_USER_INFO = re.compile(r"(?P<user>[\w.~%!$&()*+,;=-]*):(?P<password>[^\s@/'\"]+)@")


def redact(text: str) -> str:
    """``text`` with the password of every URL's user info and every credential-like query
    parameter replaced by ``****`` (see the module docstring); other text is unchanged."""
    if "@" not in text and "=" not in text:
        return text
    if "://" in text:
        text = _URL.sub(lambda match: _mask_url(match.group(0)), text)
    text = _USER_INFO.sub(_mask_user_info, text)
    return _PARAMETER.sub(_mask_parameter, text)


def _mask_user_info(match: re.Match[str]) -> str:
    return f"{match.group('user')}:{MASK}@"


def _mask_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    # The user info ends at the last "@" before the query: a password may itself hold "@"
    # or "/" when it was not percent-encoded, and then masking too much is the safe side.
    query_at = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, query_at)
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}{':' + MASK if colon else ''}{rest[at:]}"
    return f"{scheme}://{_PARAMETER.sub(_mask_parameter, rest)}"


def _mask_parameter(match: re.Match[str]) -> str:
    if not _SENSITIVE_NAME.search(match.group("name")) or not match.group("value"):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"
