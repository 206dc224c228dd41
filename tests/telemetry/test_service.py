"""The ledger heartbeat of a server: what it reports before and after a model loads."""

from __future__ import annotations

from typing import Any

from lcfin.telemetry.ledger import Serving
from lcfin.telemetry.service import serving_of


def test_heartbeat_names_the_served_model_and_matches_status(make_llm: Any) -> None:
    llm = make_llm("llama")
    beat = serving_of(llm)()
    st = llm.status()
    assert beat == Serving(
        model=st.model, profile=st.profile, backend=st.backend,
        hourly_cost_usd=llm.profile.hourly_cost_usd,
    )  # fmt: skip
    assert st.model is not None
    assert beat.model == llm.model == st.model


def test_heartbeat_before_any_model_reports_the_backend_kind(make_llm: Any) -> None:
    llm = make_llm("llama", load=False)
    beat = serving_of(llm)()
    assert beat.model == "" and llm.model is None
    assert beat.backend == llm.backend_kind
