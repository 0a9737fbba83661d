"""chatgpt_web: a self-hosted API over a ChatGPT web session.

`create_app(config)` builds the Flask application: settings, shared services, blueprints, the
one error handler that turns every ApiError into JSON, and request ids with private access logs.
It writes nothing to disk: the cache directory is opened on first use (Vercel's code is read-only).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from flask import Flask

from . import access, cors, observability, usage
from .api import intake
from .config import Config
from .errors import ApiError
from .pool import load_accounts
from .relay.plan import load_plan
from .services import Services

log = logging.getLogger(__name__)


def create_app(config: Config | Mapping[str, str] | None = None) -> Flask:
    """Build the app from a Config, a mapping of environment variables, or the environment."""
    # UPSTREAMS_FILE's env:NAME references are read from the same variables as the settings.
    environ = config if config is not None and not isinstance(config, Config) else os.environ
    if config is None:
        config = Config.from_env()
    elif not isinstance(config, Config):
        config = Config.from_env(config)
    else:
        config.checked()  # a Config built in code is held to the same rules as the environment
    logging.basicConfig(level=config.log_level.upper())

    app = Flask(__name__)
    usage.store_tables_in(usage.table_directory(config.cache_dir))  # written at the first count
    # First: the size check precedes the key check. Relay routes take larger bodies (audio).
    relay_plan = load_plan(config.upstreams_file, environ) if config.upstreams_file else None
    body_limit = config.request_body_limit
    if relay_plan is not None:
        body_limit = max(body_limit, config.max_relay_body)
    intake.init_app(app, body_limit)
    app.json.sort_keys = False
    services = Services(config, relay_plan)
    keys = services.keys  # read API_KEYS_FILE now: a bad file should stop the start, not a request
    services.moderator  # noqa: B018 - read MODERATION_WORDS_FILE now, as API_KEYS_FILE
    if config.accounts_file:
        load_accounts(config.accounts_file)  # likewise ACCOUNTS_FILE (read only: no store opened)
    app.extensions["chatgpt_web"] = services
    if relay_plan is not None and not keys.enabled:
        log.warning("UPSTREAMS_FILE is set but API_KEYS is not: anyone who reaches this service "
                    "can spend the upstream keys")
    if config.accounts_file and not keys.enabled:
        log.warning("ACCOUNTS_FILE is set but API_KEYS is not: anyone who reaches this service "
                    "can use the pooled accounts")

    from .api import (
        admin,
        conversations,
        images,
        openai_compat,
        openai_responses,
        ops,
        pages,
        primary,
        relay_api,
    )
    from .api.error_boundary import install_error_handlers
    from .api.key_info import blueprint as own_key  # GET /v1/key
    observability.init_app(app)  # first: its route bookkeeping must run before the key guard
    cors.init_app(app, config.cors_origins)  # before the key guard: preflights carry no key
    access.init_app(app)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(own_key)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(primary.blueprint)
    app.register_blueprint(conversations.primary_face)  # /conversations...
    app.register_blueprint(conversations.openai_face)  # /v1/conversations..., OpenAI envelope
    app.register_blueprint(openai_compat.blueprint)  # /v1/...: errors in the OpenAI envelope
    app.register_blueprint(openai_compat.aliases)  # /chat/completions, /models: the same views
    app.register_blueprint(openai_responses.blueprint)  # /v1/responses
    app.register_blueprint(images.blueprint)  # /v1/images/generations, /v1/files/<id>/content
    app.register_blueprint(relay_api.blueprint)  # /v1 endpoints served by relay upstreams
    app.register_blueprint(relay_api.admin_blueprint)
    install_error_handlers(app, ApiError.to_dict)
    return app

