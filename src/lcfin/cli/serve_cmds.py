"""`lcfin serve` (the OpenAI-compatible server) and `lcfin switch` (ask a server to switch)."""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lcfin.cli.options import ModelOpt, ProfileOpt, err, out
from lcfin.errors import BackendUnavailable, ModelLoadFailed, PortUnavailable

if TYPE_CHECKING:
    from lcfin import FinancialLLM

__all__ = ["bind", "register"]

log = logging.getLogger("lcfin.serve")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def _setup_logging(level: str) -> None:
    from lcfin.server.context import RequestIdFilter

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
        plan.model, plan.profile, plan.weights_gib, plan.kv_cache_gib, plan.kv_cache_tokens,
        plan.max_concurrency, plan.max_model_len, "fits" if plan.fits else "DOES NOT FIT",
    )  # fmt: skip
    if not plan.fits:
        log.warning("%s", plan.reason)


def serve(
    model: ModelOpt = None,
    profile: ProfileOpt = "auto",
    backend: Annotated[str, typer.Option(help="auto, vllm or transformers.")] = "auto",
    host: Annotated[
        str | None, typer.Option(help="Bind address [default: LCFIN_HOST or 0.0.0.0].")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on [default: PORT or 8000]."),
    ] = None,
) -> None:
    """Run the OpenAI-compatible server; the model loads in the background (see /health)."""
    import uvicorn

    from lcfin import FinancialLLM, Settings
    from lcfin.server import create_app

    overrides: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = Settings(**overrides)
    _setup_logging(settings.log_level)
    llm = FinancialLLM(model, profile=profile, backend=backend, settings=settings, load=False)
    try:
        llm.preflight()  # an unknown model (exit 4) or one too big (exit 3) stops here
        sock = bind(settings.host, settings.port)  # a port in use (exit 7), before loading
        _log_plan(llm)
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        log.info(
            "Serving on http://%s:%d/v1 (profile %s, backend %s); loading %s ...",
            shown, settings.port, llm.profile.name, llm.backend_kind, llm.initial_model,
        )  # fmt: skip
        config = uvicorn.Config(
            create_app(llm, settings), host=settings.host, port=settings.port, log_config=None,
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
        )  # fmt: skip
        _run_draining(config, sock)
    finally:
        llm.close()


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, as uvicorn would bind it; it then serves on this one.

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


def _run_draining(config: Any, sock: socket.socket) -> None:
    """Run uvicorn on `sock`; a SIGTERM that drained cleanly ends with exit code 0.

    uvicorn re-raises the captured SIGTERM after its graceful shutdown, which would end the
    process with -15 (143 in a container) and skip cleanup; SIGINT still ends as an interrupt.
    """
    import signal

    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

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
            started = time.monotonic()
            with err.status(f"Loading {model} on {base} ...") as status:
                while time.monotonic() - started < timeout:
                    state = client.get("/loading-status").json()
                    status.update(
                        f"Loading {model}: {state['status']} ({time.monotonic() - started:.0f}s)"
                    )
                    if state["status"] == "ready" and state["current_model"] == model:
                        out.print(f"{model} is ready ({state['load_time_seconds']}s to load)")
                        return
                    if state["status"] == "failed":
                        raise ModelLoadFailed(
                            f"The server failed to load {model}: {state['error']}"
                        )
                    time.sleep(0.5)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"Could not reach {base}: {type(exc).__name__}") from None
    raise BackendUnavailable(
        f"{model} was not ready after {timeout:.0f}s", hint="see /loading-status"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(serve)
    app.command()(switch)
