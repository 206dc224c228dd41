"""benchmarks/vllm_servers.py: upstream vLLM gets exactly the engine arguments lcfin gives vLLM.

The benchmark itself needs vLLM's CPU build and minutes (docs/benchmarks.md); these tests pin
the part that makes its comparison fair: one set of engine arguments, two command lines.
"""

from __future__ import annotations

import json
import os

import pytest
from benchmarks import vllm_servers as vs

from lcfin import Settings, get_model, load_profile
from lcfin.engine.vllm.args import engine_args


def test_bool_dict_and_none_arguments_become_vllm_flags() -> None:
    flags = vs.cli_flags(
        {
            "model": "/m",  # given as --model by the command itself
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "disable_log_stats": False,  # store_true only upstream: omitted, not --no-...
            "revision": None,  # vLLM's default
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
            "max_num_seqs": 16,
        }
    )
    assert flags == [
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--structured-outputs-config",
        '{"backend":"xgrammar","disable_any_whitespace":true}',
        "--max-num-seqs",
        "16",
    ]


@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_both_servers_get_lcfins_engine_arguments(mode, tmp_path, tiny_models) -> None:
    catalog = vs.bench_catalog(tmp_path / "catalog.toml", mode, 16)
    prof = load_profile(vs.PROFILE, catalog)
    assert (prof.enforce_eager, prof.max_num_seqs, prof.backend) == (mode == "eager", 16, "vllm")
    model = tiny_models["llama"]
    kwargs = vs.engine_kwargs(model, catalog)
    settings = Settings(catalog=catalog)
    assert kwargs == engine_args(get_model(str(model), catalog), prof, settings)
    cmd = vs.upstream_cmd(kwargs, 8123)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for key, value in kwargs.items():
        if value is None or key in ("model", "disable_log_stats") or value is False:
            continue
        assert "--" + key.replace("_", "-") in cmd, key
    # lcfin's own stat logger keeps vLLM's stats on: upstream runs with them on as well
    assert kwargs["disable_log_stats"] is True
    assert "--disable-log-stats" not in cmd
    assert ("--enforce-eager" in cmd) is (mode == "eager")
    assert ("--no-enforce-eager" in cmd) is (mode == "compiled")
    assert cmd[cmd.index("--max-num-seqs") + 1] == "16"
    assert (
        json.loads(cmd[cmd.index("--structured-outputs-config") + 1])
        == (kwargs["structured_outputs_config"])
    )
    lcfin = vs.lcfin_cmd(model, 8124)
    assert lcfin[lcfin.index("--profile") + 1] == vs.PROFILE
    env = vs.server_env(catalog)
    assert env["LCFIN_CATALOG"] == str(catalog)
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # the KV cache is an engine argument for both
    assert env["VLLM_DISABLE_COMPILE_CACHE"] == "1"  # each load time is a cold start's
    assert env["LCFIN_USAGE_DB"].startswith(str(tmp_path))  # not the user's ledger


def test_cpu_time_is_read_for_a_process_and_its_children() -> None:
    me = os.getpid()
    sum(i * i for i in range(200_000))  # some CPU of our own
    own = vs.proc_cpu_s(me)
    assert own > 0
    # read after: CPU time only grows, so the tree then holds at least what we had then
    assert vs.tree_cpu_s(me) >= own


def test_ratios_are_medians_of_per_repeat_pairs() -> None:
    runs = {
        "a": [{"tok_s": 90.0}, {"tok_s": 200.0}, {"tok_s": 50.0}],
        "b": [{"tok_s": 100.0}, {"tok_s": 100.0}, {"tok_s": 50.0}],
    }
    assert vs.paired(runs, "a", "b", "tok_s") == 1.0  # 0.9, 2.0, 1.0
    assert vs.paired({"a": [{"x": None}], "b": [{"x": 1.0}]}, "a", "b", "x") is None
