"""Open a station URL from Python (hls-launcher with credentials, hls-nowplaying), credentials kept home.

Its own module: urllib.request, http.client and ssl take a launcher start about 20 ms to import, and most stations
have no credentials, so the launcher imports this only for those that do.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from radio_hls.stations.station import ALLOWED_SCHEMES, Origin, basic_authorization, origin, split_credentials

# Redirects a client follows at most: FFmpeg's own default.
MAX_REDIRECTS = 8


class CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """Follows http and https redirects, at most MAX_REDIRECTS, and sends the station's Authorization on a hop only
    when that hop goes to the origin the credentials were given for (urllib's own handler sent it to any host a
    redirect named). A user:password in a Location is ignored: credentials come from the station record only."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, home: Origin, authorization: str | None) -> None:
        super().__init__()
        self.home, self.authorization = home, authorization

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        target, _ = split_credentials(newurl)
        if urlsplit(target).scheme.lower() not in ALLOWED_SCHEMES:
            raise urllib.error.HTTPError(req.full_url, code, "a redirect to a scheme other than http or https",
                                         headers, fp)
        request = super().redirect_request(req, fp, code, msg, headers, target)
        if request is not None and self.authorization is not None and origin(target) == self.home:
            request.add_unredirected_header("Authorization", self.authorization)
        return request


def open_upstream(url: str, headers: Mapping[str, str], timeout: float, verify_tls: bool = True) -> Any:
    """GET a station URL with its credentials in an Authorization header that reaches only their origin, across
    redirects (CredentialsStayHome); the response's geturl() is where it led. urllib's errors as it raises them
    (HTTPError for an answer of 400 or more, URLError for the rest)."""
    bare, authorization = basic_authorization(url)
    request = urllib.request.Request(bare, headers={key: value for key, value in headers.items()
                                                   if key.lower() != "authorization"})
    if authorization is not None:
        request.add_unredirected_header("Authorization", authorization)  # never copied to a redirect by urllib
    handlers: list[urllib.request.BaseHandler] = [CredentialsStayHome(origin(bare), authorization)]
    if not verify_tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)


class Unreachable(Exception):
    """The upstream could not be opened; the message says why (no URL in it)."""


def where_it_leads(url: str, headers: Mapping[str, str], timeout: float, verify_tls: bool = True) -> str:
    """The URL open_upstream ends up at, after the redirects it followed."""
    try:
        with open_upstream(url, headers, timeout, verify_tls) as response:
            return str(response.geturl())
    except urllib.error.HTTPError as error:
        raise Unreachable(f"the upstream answered {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise Unreachable(str(error.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise Unreachable(str(error) or error.__class__.__name__) from None
