"""chatgpt_web: a self-hosted API over a ChatGPT web session.

`create_app(config)` builds the Flask application: settings, shared services, blueprints, the
one error handler that turns every ApiError into JSON, and request ids with private access logs.
It writes nothing to disk: the cache directory is opened on first use (Vercel's code is read-only).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from . import access, observability
from .config import Config
from .errors import ApiError
from .services import Services

log = logging.getLogger(__name__)


def create_app(config: Config | Mapping[str, str] | None = None) -> Flask:
    """Build the app from a Config, a mapping of environment variables, or the environment."""
    if config is None:
        config = Config.from_env()
    elif not isinstance(config, Config):
        config = Config.from_env(config)
    logging.basicConfig(level=config.log_level.upper())

    app = Flask(__name__)
    app.json.sort_keys = False
    services = Services(config)
    services.keys  # read API_KEYS_FILE now: a bad file should stop the start, not a request
    app.extensions["chatgpt_web"] = services
    if config.relay is not None and not services.keys.enabled:
        log.warning("UPSTREAMS_FILE is set but API_KEYS is not: anyone who reaches this service "
                    "can spend the upstream keys")
    if config.accounts_file and not services.keys.enabled:
        log.warning("ACCOUNTS_FILE is set but API_KEYS is not: anyone who reaches this service "
                    "can use the pooled accounts")

    from .api import admin, openai_compat, ops, primary, relay_api
    observability.init_app(app)  # first: its route bookkeeping must run before the key guard
    access.init_app(app)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(primary.blueprint)
    app.register_blueprint(openai_compat.blueprint)  # /v1/...: renders its errors in the OpenAI envelope
    app.register_blueprint(relay_api.blueprint)  # /v1 endpoints served by relay upstreams
    app.register_blueprint(relay_api.admin_blueprint)
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return jsonify(error.to_dict()), error.status, error.headers

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return jsonify({"message": error.description, "code": code}), error.code

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        # The exception text may quote a request value, so only its type is logged.
        log.error("unhandled %s", type(error).__name__, exc_info=app.debug)
        return jsonify({"message": "internal server error", "code": "internal_error"}), 500
