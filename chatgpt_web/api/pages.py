"""The two pages for people: the chat playground (GET / for browsers) and the operator console
(GET /admin). Plain HTML (chatgpt_web/templates/: both pages extend page.html, their shared
head), CSS and JavaScript (chatgpt_web/static/), no build step, nothing fetched from elsewhere.

The pages hold no data and no secret: the playground keeps the caller's credential in the
browser and calls /v1 with it; the console asks for ADMIN_KEY and calls /admin/* with it. The
Content-Security-Policy allows scripts and styles from this origin only, so even a renderer bug
could not run a script that an answer smuggled in (the renderer builds DOM nodes, never HTML).
"""
from __future__ import annotations

from flask import Blueprint, Response, render_template, request

blueprint = Blueprint("pages", __name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def wants_html() -> bool:
    """True when the client prefers a page to JSON (a browser's Accept header; curl's */* and
    Accept: application/json keep the JSON answer)."""
    return request.accept_mimetypes.best_match(("application/json", "text/html")) == "text/html"


def page(name: str) -> Response:
    """A page of chatgpt_web/templates/ with the pages' security headers."""
    response = Response(render_template(name), mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response


@blueprint.get("/admin")
def console():
    """The operator console (the admin key is entered on the page)."""
    return page("console.html")
