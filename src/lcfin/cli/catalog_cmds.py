"""`lcfin models`, `profiles`, `plan`, `download`: the catalog and the memory planner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from lcfin.cli.options import JsonOpt, ProfileOpt, err, out, print_json
from lcfin.errors import EXIT_DOES_NOT_FIT, LcfinError

if TYPE_CHECKING:
    from lcfin import HardwareProfile, ModelSpec, Settings

# The core is imported inside each command, so `lcfin --help` stays fast (S2).

__all__ = ["register"]


def _params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def models(json_out: JsonOpt = False) -> None:
    """List the model catalog: repo, size, cached on disk, and which profiles it fits."""
    from lcfin import Settings, list_models, list_profiles
    from lcfin.engine.types import DEMO_NOTICE

    settings = Settings()
    profiles = list_profiles(settings.catalog)
    specs = list_models(settings.catalog)
    rows = [_model_row(alias, spec, profiles, settings) for alias, spec in specs.items()]
    if json_out:
        print_json(rows)
        return
    out.print(_models_table(rows))
    err.print(f"[dim]{DEMO_NOTICE}[/]")


def _model_row(
    alias: str, spec: ModelSpec, profiles: dict[str, HardwareProfile], settings: Settings
) -> dict[str, Any]:
    """One catalog entry: repo, size, cached or not, and whether it fits each profile."""
    from lcfin import is_cached, plan_memory

    fits: dict[str, bool | None] = {}
    for pname, profile in profiles.items():
        try:
            fits[pname] = plan_memory(spec, profile).fits
        except LcfinError:
            fits[pname] = None
    return {
        "alias": alias,
        "repo_id": spec.repo_id,
        "params": spec.param_count(),
        "demo": spec.demo,
        "description": spec.description,
        "cached": is_cached(spec, settings),
        "fits": fits,
    }


def _models_table(rows: list[dict[str, Any]]) -> Table:
    """Names and repo ids are never cut mid-word: a narrow terminal wraps a repo id after its
    organisation, and the profiles between names (see #17)."""
    table = Table(title="lcfin model catalog")
    aliases = [_alias(r) for r in rows]
    repos = [str(r["repo_id"]) for r in rows]
    table.add_column("alias", no_wrap=True)
    room = out.width - max(len(a) for a in aliases) - 44  # params, cached, fits, borders
    repos = [r.replace("/", "/\n", 1) if len(r) > room else r for r in repos]
    table.add_column("repo", no_wrap=True)
    table.add_column("params", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    table.add_column("fits profiles")
    for row, alias, repo in zip(rows, aliases, repos, strict=True):
        fitting = ", ".join(p for p, ok in row["fits"].items() if ok) or "[red]none[/]"
        cached = "yes" if row["cached"] else "no"
        table.add_row(alias, repo, _params(row["params"]), cached, fitting)
    return table


def _alias(row: dict[str, Any]) -> str:
    alias = str(row["alias"])
    return f"{alias} [yellow](demo)[/]" if row["demo"] and "demo" not in alias else alias


def profiles(json_out: JsonOpt = False) -> None:
    """List the hardware profiles and the engine settings each one uses."""
    from lcfin import Settings, list_profiles

    settings = Settings()
    items = list_profiles(settings.catalog)
    if json_out:
        print_json([p.model_dump() for p in items.values()])
        return
    err.print(
        "[dim]TPxPP = tensor x pipeline parallel; flags: eager = no CUDA graphs, "
        "no-car = custom all-reduce off[/]"
    )
    out.print(_profiles_table(list(items.values())))


_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def _profiles_table(items: list[Any]) -> Table:
    """Fits 80 columns without cutting a value: short values, wrapping only between words."""
    table = Table(
        title="lcfin hardware profiles", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for col in ("name", "backend", "GPUs", "util", "max-len", "dtype", "TPxPP", "flags", "$/h"):
        table.add_column(col, no_wrap=col not in ("GPUs", "flags"))
    for p in items:
        flags = (
            " ".join(
                f
                for f, on in (("eager", p.enforce_eager), ("no-car", p.disable_custom_all_reduce))
                if on
            )
            or "-"
        )
        table.add_row(
            p.name,
            p.backend,
            _gpus(p),
            f"{p.gpu_memory_utilization:.2f}" if p.is_gpu else "-",
            str(p.max_model_len),
            _DTYPES.get(p.dtype, p.dtype),
            f"{p.tensor_parallel_size}x{p.pipeline_parallel_size}",
            flags,
            f"{p.hourly_cost_usd:.2f}",
        )
    return table


def _gpus(p: Any) -> str:
    """'1x L40', '2x L40S', or '2 nodes x 4 GPUs' for a multi-node (Ray) profile."""
    if not p.gpu_count:
        return "none"
    if p.num_nodes > 1:
        return f"{p.num_nodes} nodes x {p.gpu_count} GPUs"
    gpu = (p.gpu_name or "GPU").removeprefix("NVIDIA ").split()[0]
    return f"{p.gpu_count}x {gpu}"


def plan(
    model: Annotated[str, typer.Argument(help="Catalog alias, repo id or model directory.")],
    profile: ProfileOpt = "auto",
    max_model_len: Annotated[
        int | None, typer.Option("--max-model-len", min=1, help="Context length to plan for.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="A running lcfin server: its engine's own KV-cache figures too."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="LCFIN_API_KEY", help="API key.", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show whether MODEL fits PROFILE: memory breakdown, verdict, concurrency (exit 3 if not)."""
    from lcfin import Settings, load_profile, plan_memory

    settings = Settings()
    name = settings.profile_name if profile == "auto" else profile
    result = plan_memory(model, load_profile(name, settings.catalog), max_model_len=max_model_len)
    engine = _engine_kv(url, api_key, result.model) if url else None
    if json_out:
        print_json({**result.to_dict(), "engine": engine})
    else:
        _print_plan(result, engine)
    if not result.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _engine_kv(url: str, api_key: str | None, model: str) -> dict[str, Any] | None:
    """What the server's engine reports for `model` (None if it serves another one)."""
    from lcfin.cli.remote import served_kv_cache

    served, kv = served_kv_cache(url, api_key)
    if served != model:
        err.print(f"[yellow]{url} serves {served}, not {model}: no engine figures[/]")
        return None
    if kv is None:
        err.print(f"[yellow]{url}'s engine reports no KV-cache figures (Transformers)[/]")
    return kv


def _print_plan(result: Any, engine: dict[str, Any] | None) -> None:
    table = Table(title=f"Memory plan: {result.model} on {result.profile}", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    per = " per GPU" if result.tensor_parallel_size * result.pipeline_parallel_size > 1 else ""
    for label, value in (
        (f"budget{per}", result.budget_gib),
        (f"weights{per}", result.weights_gib),
        ("activations", result.activations_gib),
        ("overhead (non-torch, CUDA graphs)", result.overhead_gib),
        ("KV cache", result.kv_cache_gib),
    ):
        table.add_row(label, f"{value:.2f} GiB")
    table.add_row("KV cache tokens", f"{result.kv_cache_tokens:,}")
    mml = f"{result.max_model_len:,}"
    table.add_row(f"max concurrency at {mml} tokens", f"{result.max_concurrency:.2f}x")
    if engine is not None and engine.get("engine_tokens") is not None:
        table.add_row("KV cache tokens (the engine's own)", f"{engine['engine_tokens']:,}")
        at = f"{engine['max_model_len']:,}"
        conc = engine["engine_max_concurrency"]
        table.add_row(f"max concurrency at {at} tokens (the engine's own)", f"{conc:.2f}x")
    out.print(table)
    colour = "green" if result.fits else "red"
    out.print(f"[bold {colour}]{'fits' if result.fits else 'does not fit'}[/]: {result.reason}")


def download(
    model: Annotated[str, typer.Argument(help="Catalog alias or hub repo id.")],
) -> None:
    """Pre-fetch MODEL into the cache (HF_TOKEN_LC for LinguaCustodia repos, else HF_TOKEN)."""
    from lcfin import Settings, download_model, get_model

    settings = Settings()
    spec = get_model(model, settings.catalog)
    if spec.source_dir is not None:
        err.print(f"{spec.name} is already on disk at {spec.source_dir}; nothing to download")
        return
    err.print(f"Downloading {spec.repo_id} into {settings.hub_cache} ...")
    path = download_model(spec, settings)
    err.print(f"[green]done[/]: {spec.name}")
    out.print(str(path))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(models)
    app.command()(profiles)
    app.command()(plan)
    app.command()(download)
