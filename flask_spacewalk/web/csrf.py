"""Cross-site request forgery: the unsafe requests a browser may not send.

An app that protects the tree with a cookie session or HTTP Basic (see
docs/security.rst) has a browser attach those credentials to any request a
page of another site makes it send. Two checks, run before the tree's view
decorators on every unsafe method under the tree's root, unknown paths
included, keep such requests from acting:

- a request the browser marks as coming from another site
  (``Sec-Fetch-Site``, or else ``Origin``) is 403, unless its origin is one
  ``SPACEWALK_CORS_ORIGINS`` allows;
- a form content type (the only bodies a page can send elsewhere without
  a CORS preflight) is 415, even with an empty body.

Clients that are not browsers send neither header and are not affected.
"""
from __future__ import annotations

from flask import request
from werkzeug.exceptions import Forbidden, RequestEntityTooLarge, UnsupportedMediaType

from .http import is_json_type

__all__ = ["FORM_TYPES", "SAFE_METHODS", "check_request", "cross_site_refusal"]

#: RFC 9110's safe methods: they change nothing, so they are never refused.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: What an HTML form (or a ``no-cors`` fetch) sends without a preflight.
FORM_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
#: ``Sec-Fetch-Site`` values of requests a page of this origin or the user
#: made (a typed URL, a bookmark).
_OWN_SITE = frozenset({"same-origin", "none"})


def check_request(cors_origins: tuple[str, ...], max_content_length: int) -> None:
    """Refuse an unsafe request that a page of another site could have made
    a browser send; safe methods pass.

    :param cors_origins: the origins ``SPACEWALK_CORS_ORIGINS`` allows.
    :param max_content_length: the tree's body limit, checked first as the
        POST checks run (size, then content type).
    :raises Forbidden: the browser says the request comes from another site.
    :raises UnsupportedMediaType: a form content type.
    """
    if request.method in SAFE_METHODS:
        return
    refusal = cross_site_refusal(cors_origins)
    if refusal is not None:
        raise Forbidden(refusal)
    if request.mimetype in FORM_TYPES:
        length = request.content_length
        if length is not None and length > max_content_length:
            raise RequestEntityTooLarge(f"the body is larger than {max_content_length} bytes")
        raise UnsupportedMediaType(
            f"{request.mimetype} is refused on {request.method} (a page of any site can send"
            " it); send JSON as application/json, or no body and no Content-Type"
        )


def cross_site_refusal(cors_origins: tuple[str, ...]) -> str | None:
    """Why the current request counts as cross-site, or None when it does not.

    ``Sec-Fetch-Site`` is the browser's own verdict and wins: ``same-origin``
    and ``none`` pass whatever ``Origin`` says (it is ``null`` on a same-origin
    POST from a page with ``Referrer-Policy: no-referrer``). Without it (an
    older browser, or no browser), an ``Origin`` other than the request's own
    is cross-site, and no ``Origin`` at all passes. A cross-site or same-site
    request passes only from an origin that CORS allows.
    """
    # the environ, not request.headers: each header a client leaves out (as
    # every client but a browser does) would cost a KeyError there
    environ = request.environ
    site = environ.get("HTTP_SEC_FETCH_SITE")
    origin = environ.get("HTTP_ORIGIN")
    if site in _OWN_SITE:
        return None
    if site is None:
        if origin is None or origin.lower() == own_origin():
            return None
    if origin is None or origin == "null":
        return f"the browser marks this {request.method} as sent from another site"
    if origin in cors_origins:
        return None
    if "*" in cors_origins and is_json_type(request.mimetype):
        # A JSON body cannot go to another origin without a preflight, and
        # under "*" a credentialed preflight fails (no Allow-Credentials):
        # so such a request carries no cookie or Basic credentials.
        return None
    return (
        f"a {request.method} sent from another site ({origin}) is refused;"
        " SPACEWALK_CORS_ORIGINS does not allow that origin"
    )


def own_origin() -> str:
    """The request's own origin, ``scheme://host[:port]`` in lower case, as
    werkzeug sees it (behind a proxy, ``ProxyFix`` makes it the public one)."""
    return request.host_url.rstrip("/").lower()

