"""``/dashboard/``: a page that watches Relay live, served from files in the package (no build step, no CDN:
it works offline in a container). The page and its files need no API key; every data call it makes does,
when keys are configured (the page asks for one once and keeps it in sessionStorage, never in a URL)."""

from __future__ import annotations

from functools import cache
from importlib import resources as package_files

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw, redirect

from api.auth import DASHBOARD_BLUEPRINT, DASHBOARD_PREFIX
from api.errors import ApiError

bp = Blueprint(DASHBOARD_BLUEPRINT, strict_slashes=True)  # auth.is_open knows its routes by this name

PREFIX = DASHBOARD_PREFIX
FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "workflows.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# Only this origin's own files and calls: an injected script or a framing page gets nowhere.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class DashboardFileNotFound(ApiError):
    status, code = 404, "not_found"


@cache
def _read(name: str) -> bytes:
    return (package_files.files("api") / "dashboard" / name).read_bytes()


@bp.get(PREFIX)
async def to_page(request: Request) -> HTTPResponse:
    """Relative links in the page resolve against ``/dashboard/`` (relative here, so a path prefix in front
    of the API keeps working)."""
    return redirect("dashboard/", status=308)


@bp.get(PREFIX + "/")
async def page(request: Request) -> HTTPResponse:
    return raw(_read("index.html"), content_type=FILES["index.html"], headers=HEADERS)


@bp.get(PREFIX + "/<name:str>")
async def asset(request: Request, name: str) -> HTTPResponse:
    if name not in FILES:
        raise DashboardFileNotFound(f"no dashboard file {name[:100]!r}")
    return raw(_read(name), content_type=FILES[name], headers=HEADERS)
