"""`lcfin serve` (the OpenAI-compatible server) and `lcfin switch` (ask a server to switch)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lcfin.cli.options import ModelOpt, ProfileOpt, err, out
from lcfin.errors import BackendUnavailable, ModelLoadFailed, PortUnavailable

if TYPE_CHECKING:
    import httpx

    from lcfin import FinancialLLM, Settings

__all__ = ["bind", "register"]

log = logging.getLogger("lcfin.serve")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def _setup_logging(level: str) -> None:
    from lcfin.server.request_id import RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("lcfin", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level.upper())


def _log_plan(llm: FinancialLLM) -> None:
    from lcfin import LcfinError, plan_memory

    try:
        plan = plan_memory(llm.initial_model, llm.profile)
    except LcfinError as exc:
        log.info("No memory plan for %s: %s", llm.initial_model, exc)
        return
    log.info(
        "Plan for %s on %s: weights %.1f GiB, KV cache %.1f GiB (%d tokens), "
        "max concurrency %.1fx at %d tokens; %s",
        plan.model,
        plan.profile,
        plan.weights_gib,
        plan.kv_cache_gib,
        plan.kv_cache_tokens,
        plan.max_concurrency,
        plan.max_model_len,
        "fits" if plan.fits else "DOES NOT FIT",
    )
    if not plan.fits:
        log.warning("%s", plan.reason)


def serve(
    model: ModelOpt = None,
    profile: ProfileOpt = "auto",
    backend: Annotated[str, typer.Option(help="auto, vllm or transformers.")] = "auto",
    host: Annotated[
        str | None,
        typer.Option(help="Bind address [default: LCFIN_HOST or 127.0.0.1]; see docs/security.md."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on [default: PORT or 8000]."),
    ] = None,
    allow_unauthenticated: Annotated[
        bool | None,
        typer.Option(
            "--allow-unauthenticated",
            help="Listen beyond loopback with no API keys (LCFIN_ALLOW_UNAUTHENTICATED).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible server; the model loads in the background (see /health)."""
    from lcfin import FinancialLLM
    from lcfin.server import create_app
    from lcfin.server.exposure import Exposure

    settings = _settings(host=host, port=port, allow_unauthenticated=allow_unauthenticated)
    Exposure.of(settings)  # a bad key file or an open bind stops here (exit 2), before any work
    _setup_logging(settings.log_level)
    llm = FinancialLLM(model, profile=profile, backend=backend, settings=settings, load=False)
    died = _exit_on_engine_death(llm, settings.on_engine_death == "exit")
    try:
        llm.preflight()  # an unknown model (exit 4) or one too big (exit 3) stops here
        with bind(settings.host, settings.port) as sock:  # a port in use (exit 7), before loading
            _log_plan(llm)
            what = f"(profile {llm.profile.name}, backend {llm.backend_kind})"
            loading = f"{what}; loading {llm.initial_model} ..."
            _run_draining(create_app(llm, settings), settings, sock, loading)
    finally:
        llm.close()
    if died:
        raise BackendUnavailable(
            f"{died[0]}; exiting so that a supervisor restarts lcfin (LCFIN_ON_ENGINE_DEATH=exit)"
        )


def _settings(**given: Any) -> Settings:
    """Settings from the environment, with the options given on the command line over them."""
    from lcfin import Settings

    return Settings(**{k: v for k, v in given.items() if v is not None})


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, as uvicorn would bind it; uvicorn then serves on this one.

    Bound before the model loads, so that a port in use fails at once, not after the load.

    Raises:
        PortUnavailable: the port is taken (or not allowed); the message says what to do.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _unavailable(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def _unavailable(host: str, port: int, exc: OSError) -> PortUnavailable:
    other = port + 1 if port < 65535 else 8000
    if exc.errno == errno.EADDRNOTAVAIL:
        return PortUnavailable(
            f"Cannot listen on {host}:{port}: {host} is not an address of this machine",
            hint="pass --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)",
        )
    why = {
        errno.EADDRINUSE: "is already in use (another lcfin serve, or another server)",
        errno.EACCES: "needs privileges (ports below 1024)",
    }.get(exc.errno or 0, f"cannot be used ({exc.strerror})")
    return PortUnavailable(
        f"Cannot listen on {host}:{port}: port {port} {why}",
        hint=f"stop what uses it, or choose another port: --port {other} (or PORT={other})",
    )


def _exit_on_engine_death(llm: FinancialLLM, enabled: bool) -> list[str]:
    """With LCFIN_ON_ENGINE_DEATH=exit: a dead engine stops the server (SIGTERM drains it)."""
    died: list[str] = []
    if enabled:

        def stop(reason: str) -> None:
            died.append(reason)
            os.kill(os.getpid(), signal.SIGTERM)

        llm.failure_hooks.append(stop)
    return died


def _serving_urls(sockets: list[Any]) -> list[str]:
    """`http://host:port` for each listening socket, from the address the OS actually bound."""
    urls = []
    for sock in sockets:
        address = sock.getsockname()
        if isinstance(address, tuple):
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            urls.append(f"http://{host}:{address[1]}")
    return urls


def _run_draining(app: Any, settings: Settings, sock: socket.socket, what: str) -> None:
    """Run uvicorn on `sock` (bound by `bind`), logging the address it serves on; a SIGTERM
    that drained cleanly exits 0.

    uvicorn re-raises the captured SIGTERM after its graceful shutdown, which would end the
    process with -15 (143 in a container) and skip cleanup; SIGINT still ends as an interrupt.
    """
    import uvicorn

    from lcfin.server.app import uvicorn_options

    class DrainingServer(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            bound = [s for server in self.servers for s in server.sockets]
            for url in _serving_urls(bound):
                log.info("Serving on %s/v1 %s", url, what)

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        **uvicorn_options(settings),
    )
    DrainingServer(config).run(sockets=[sock])


def switch(
    model: Annotated[str, typer.Argument(help="Catalog alias to switch to.")],
    url: Annotated[str, typer.Option(help="The lcfin server.")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option(envvar="LCFIN_ADMIN_KEY", help="Admin key.", show_default=False)
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the load.")] = 1800,
) -> None:
    """Ask a running server to switch to MODEL and follow the load until it is ready."""
    import httpx

    from lcfin.cli.remote import raise_for_status, server_root

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = server_root(url)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            raise_for_status(client.post("/load-model", params={"model_name": model}))
            if _follow_load(client, model, base, timeout):
                return
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"Could not reach {base}: {type(exc).__name__}") from None
    raise BackendUnavailable(
        f"{model} was not ready after {timeout:.0f}s", hint="see /loading-status"
    )


def _follow_load(client: httpx.Client, model: str, base: str, timeout: float) -> bool:
    """Poll /loading-status until `model` is ready (True) or `timeout` passes (False).

    Raises:
        ModelLoadFailed: the server reports the load failed.
    """
    started = time.monotonic()
    with err.status(f"Loading {model} on {base} ...") as status:
        while time.monotonic() - started < timeout:
            state = client.get("/loading-status").json()
            status.update(f"Loading {model}: {state['status']} ({time.monotonic() - started:.0f}s)")
            if state["status"] == "ready" and state["current_model"] == model:
                out.print(f"{model} is ready ({state['load_time_seconds']}s to load)")
                return True
            if state["status"] == "failed":
                raise ModelLoadFailed(f"The server failed to load {model}: {state['error']}")
            time.sleep(0.5)
    return False


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(serve)
    app.command()(switch)
