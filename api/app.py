"""The Sanic app factory: ``sanic api.app:create_app --factory``."""

from __future__ import annotations

from sanic import Sanic

from api import auth, cors, errors, lifecycle, observe
from api.resources import RelayApp
from api.routes import dashboard, events, health, stats, tasks, workflows
from shared import catalogue, tracing
from shared.apikeys import parse_api_keys
from shared.logs import configure as configure_logging
from shared.settings import get_settings

APP_NAME = "relay"


def create_app() -> RelayApp:
    """A configured app; resources are opened by its listeners, in the serving process."""
    configure_logging()
    catalogue.load_validation()
    settings = get_settings()
    app: RelayApp = Sanic(APP_NAME)
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    # Streams write at least one heartbeat per interval, which resets Sanic's response timer.
    app.config.RESPONSE_TIMEOUT = max(60, int(settings.heartbeat_seconds * 4))
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.api_drain_seconds + lifecycle.CLOSE_MARGIN_SECONDS + 3.0
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.NOISY_EXCEPTIONS = False
    # Sanic's CLI flag --access-logs/--no-access-logs still wins when given; otherwise this setting decides.
    app.config.ACCESS_LOG = settings.access_log
    app.ctx.api_keys = auth.digests(parse_api_keys(settings.api_keys.get_secret_value()))
    auth.log_auth_mode(app.ctx.api_keys)
    errors.install(app)
    app.ctx.tracing = tracing.configure(settings, "relay-api")
    app.on_request(observe.request_started)  # first, so refused requests are measured too
    app.on_request(auth.require_api_key)
    app.middleware(observe.request_finished, "response")
    app.before_server_start(lifecycle.open_resources)
    app.after_server_start(lifecycle.freeze_startup_objects)
    app.before_server_stop(lifecycle.drain)
    app.after_server_stop(lifecycle.close_resources)
    app.after_server_stop(observe.flush_traces)
    app.blueprint([health.bp, tasks.bp, events.bp, workflows.bp, stats.bp, dashboard.bp])
    cors.install(app, settings.cors_origin_list())
    return app
