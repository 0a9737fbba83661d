"""The one error boundary: every exception a request raises becomes an answer here.

Code raises ApiError subclasses (with their code and `param`) and never builds error responses.
`install_error_handlers(target, render)` registers the same three handlers (our errors, the web
framework's HTTP errors, anything unexpected) on the app and on the /v1 blueprint; only `render`,
the face's error body, differs. A stream that fails after its status line was sent renders its
last event with the same `render`, through `streamed_error()`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask, current_app, has_app_context, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import ApiError

log = logging.getLogger(__name__)

Render = Callable[[ApiError], dict]


def as_api_error(error: Exception) -> ApiError:
    """`error` as the ApiError the caller hears; anything unexpected is internal_error, and only
    its type is logged (its text may quote a prompt or a token)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, HTTPException):
        return ApiError.from_http_exception(error)
    # A stream runs after its request's context is gone: then no traceback either.
    log.error("unhandled %s", type(error).__name__,
              exc_info=has_app_context() and current_app.debug)
    return ApiError("internal server error")


def streamed_error(error: Exception, render: Render) -> dict:
    """The body of the error event that ends a stream which failed after it began."""
    return render(as_api_error(error))


def install_error_handlers(target: Flask | Blueprint, render: Render) -> None:
    """Answer every error raised under `target` as `render(error)` with the error's status."""
    def handle(error: Exception):
        api_error = as_api_error(error)
        return jsonify(render(api_error)), api_error.status, api_error.headers

    for kind in (ApiError, HTTPException, Exception):
        target.register_error_handler(kind, handle)
