"""``create_app()``: the one place where everything is wired."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from datetime import timedelta

import anyio
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Litestar, Response, Router, get
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency, Provide
from litestar.logging import LoggingConfig
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from windi_chat import __version__
from windi_chat.accounts import AuthController, UserController, UserService, create_rate_limit
from windi_chat.chat_routes import ChatController, GroupController
from windi_chat.chats import ChatService
from windi_chat.config import Settings
from windi_chat.database import create_db_config, unavailable_cause
from windi_chat.delivery import GuardedBackend, create_backend, redact_url
from windi_chat.docs import asyncapi, docs_assets, openapi_config
from windi_chat.events import EventBus
from windi_chat.gateway_socket import gateway_socket
from windi_chat.http_errors import (
    DATABASE_ERRORS,
    RETRY_AFTER_SECONDS,
    JSONDepthRequest,
    exception_handlers,
    log_unhandled,
)
from windi_chat.lifecycle import install_graceful_shutdown, prepare_database
from windi_chat.limits import PersonLimits
from windi_chat.login_attempts import LoginAttempts
from windi_chat.logs import install_redaction, logging_dict
from windi_chat.message_change_routes import MessageChangeController
from windi_chat.message_routes import MessageController
from windi_chat.metrics import Metrics
from windi_chat.origins import OriginPolicy, cors_config
from windi_chat.poller import DeliveryPoller
from windi_chat.presence import Presence
from windi_chat.readiness import ready
from windi_chat.realtime import chat_socket
from windi_chat.request_ids import RequestIdMiddleware, add_request_id_header
from windi_chat.revocations import SessionGate
from windi_chat.schemas import HealthOut
from windi_chat.search import SearchSlots
from windi_chat.search_routes import SearchController
from windi_chat.security import PasswordHasher, TokenCodec, create_auth
from windi_chat.session_routes import RefreshController, SessionController
from windi_chat.sockets import SocketRegistry
from windi_chat.stores import ExpiringMemoryStore, create_shared_store
from windi_chat.web import web_client
from windi_chat.writer import MessageWriter

__all__ = ("create_app",)

logger = logging.getLogger("windi_chat.app")

HEALTH_TIMEOUT_SECONDS = 3.0


@get("/health", operation_id="health", tags=["service"], summary="Is the database answering?", security=[{}])
async def health(
    db_engine: NamedDependency[AsyncEngine], poller: NamedDependency[DeliveryPoller]
) -> Response[HealthOut]:
    """200 when the database answers a query within a few seconds, 503 otherwise.

    The status is ``degraded`` (still 200) while live delivery is down and sockets are served from the
    database: the service works, more slowly.
    """
    try:
        with anyio.fail_after(HEALTH_TIMEOUT_SECONDS):
            async with db_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except (TimeoutError, *DATABASE_ERRORS) as exc:
        logger.warning("Health check failed: %s", unavailable_cause(exc))
        return Response(
            HealthOut(status="unavailable"),
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return Response(HealthOut(status="degraded" if poller.degraded else "ok"))


def freeze_startup_heap() -> None:
    """Leave everything startup built (modules, routes, statements, caches) out of later collections.

    A full collection walks every tracked object. Startup leaves well over a hundred thousand, and
    under load walking them stopped the event loop for 90-170 ms at a time, a stall every socket's
    latency took in. Frozen, they are never walked again; what the server builds later, sockets and
    their state, is collected as usual.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application from ``settings`` (by default, from the environment and ``.env``)."""
    settings = settings or Settings.from_env()
    log_config = logging_dict(settings.log_level, settings.effective_log_format)
    install_redaction()
    settings.check()
    db_config = create_db_config(settings)
    hasher = PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    token_ttl = timedelta(seconds=settings.token_ttl_seconds)

    # The backend reports lost events to the session gate and the poller, which subscribe through the
    # plugin that wraps the backend: they come after it and the backend reaches them through this callback.
    def events_lost(channels: Iterable[str] | None) -> None:
        gate.events_lost(channels)
        poller.events_lost(channels)

    backend = GuardedBackend(create_backend(settings.channels_url, settings.namespace), on_lost=events_lost)
    channels = ChannelsPlugin(backend=backend, arbitrary_channels_allowed=True)
    sockets = SocketRegistry(channels, backend, settings.ws_send_timeout)
    # Login limits hold across processes when they share Redis; otherwise each process counts.
    login_store = create_shared_store(settings.channels_url, settings.namespace) or ExpiringMemoryStore()
    attempts = LoginAttempts(login_store, settings.login_max_failures, settings.login_failure_window_seconds)
    session_maker = db_config.create_session_maker()
    poller = DeliveryPoller(sockets, channels, session_maker, settings.delivery_poll_seconds)
    events = EventBus(channels.publish)
    limits = PersonLimits.of(settings)
    search_slots = SearchSlots(settings.search_concurrency, settings.search_timeout_seconds)
    pool_limit = settings.db_pool_size + settings.db_max_overflow
    writer = MessageWriter(session_maker, events, limiter=limits.sends, pool_limit=pool_limit)
    origins = OriginPolicy(settings.origins)
    gate = SessionGate(
        session_maker,
        channels,
        token_ttl,
        capacity=settings.session_cache_size,
        recheck_after=settings.session_recheck_seconds,
    )
    gate.on_revocation(sockets.session_revoked)
    presence = Presence(
        session_maker,
        channels,
        events,
        grace_seconds=settings.presence_grace_seconds,
        heartbeat_seconds=settings.presence_heartbeat_seconds,
    )

    def chats_seeing_presence(chat_service: NamedDependency[ChatService]) -> ChatService:
        """The chat service, its views showing who is online."""
        chat_service.online = presence.is_online
        return chat_service

    metrics = (
        Metrics(settings.metrics_port, lambda: len(sockets), db_config.get_engine(), lambda: poller.degraded)
        if settings.metrics
        else None
    )
    auth = create_auth(settings.resolve_jwt_secret(), token_ttl, gate.is_live)
    tokens = TokenCodec(auth)

    auth_routes = Router(
        "/",
        route_handlers=[AuthController],
        middleware=[create_rate_limit(settings.auth_rate_limit).middleware]
        if settings.auth_rate_limit
        else [],
    )

    async def on_startup() -> None:
        install_redaction()
        writer.open()
        await prepare_database(db_config.get_engine(), settings)
        install_graceful_shutdown(sockets.close_all)
        if metrics is not None:
            metrics.start()
        if settings.gc_freeze:
            freeze_startup_heap()
        logger.info(
            "WinDI Chat %s ready (env=%s, delivery=%s, channel namespace %s)",
            __version__,
            settings.env,
            redact_url(settings.channels_url),
            settings.namespace,
        )

    async def on_shutdown() -> None:
        await poller.stop()
        await writer.close()
        await login_store.__aexit__(None, None, None)  # a shared store's Redis connections
        await db_config.get_engine().dispose()

    return Litestar(
        route_handlers=[
            auth_routes,
            RefreshController,
            SessionController,
            UserController,
            ChatController,
            GroupController,
            MessageController,
            MessageChangeController,
            SearchController,
            chat_socket,
            gateway_socket,
            health,
            ready,
            docs_assets(),
            asyncapi,
            *(metrics.route_handlers if metrics else []),
            web_client(),
        ],
        dependencies={
            "users": Provide(create_service_provider(UserService)),
            "chat_service": Provide(create_service_provider(ChatService)),
            "chats": Provide(chats_seeing_presence, sync_to_thread=False),
            "events": Provide(lambda: events, sync_to_thread=False),
            "sessions": Provide(lambda: session_maker, sync_to_thread=False),
            "writer": Provide(lambda: writer, sync_to_thread=False),
            "registry": Provide(lambda: sockets, sync_to_thread=False),
            "poller": Provide(lambda: poller, sync_to_thread=False),
            "hasher": Provide(lambda: hasher, sync_to_thread=False),
            "tokens": Provide(lambda: tokens, sync_to_thread=False),
            "gate": Provide(lambda: gate, sync_to_thread=False),
            "presence": Provide(lambda: presence, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "origins": Provide(lambda: origins, sync_to_thread=False),
            "limits": Provide(lambda: limits, sync_to_thread=False),
            "search_slots": Provide(lambda: search_slots, sync_to_thread=False),
            "attempts": Provide(lambda: attempts, sync_to_thread=False),
        },
        # The gate and presence subscribe once the channels plugin has started: they come after it.
        plugins=[SQLAlchemyPlugin(config=db_config), channels, gate, presence],
        stores={"rate_limit": login_store},
        # Outermost: the request id is set before the other middleware (authentication) logs anything.
        middleware=[RequestIdMiddleware(), *(metrics.middleware if metrics else [])],
        before_send=[add_request_id_header],
        on_app_init=[auth.on_app_init],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        exception_handlers=exception_handlers,
        request_class=JSONDepthRequest,
        cors_config=cors_config(settings.origins),
        openapi_config=openapi_config(),
        logging_config=LoggingConfig(
            configure_root_logger=False,
            filters=log_config["filters"],
            formatters=log_config["formatters"],
            handlers=log_config["handlers"],
            loggers={name: log_config["loggers"][name] for name in ("windi_chat", "litestar")},
            log_exceptions="always",
            # A client's mistake is answered, not logged as a server error.
            disable_stack_trace=set(range(400, 500)),
            exception_logging_handler=log_unhandled,
        ),
    )
