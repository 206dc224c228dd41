"""The types that flow through the generation path, shared by every backend and face."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lcfin.errors import InvalidParameter

__all__ = [
    "DEMO_NOTICE",
    "Admission",
    "BackendStats",
    "Completion",
    "Delta",
    "FinishReason",
    "GenerationRequest",
    "Message",
    "ResponseFormat",
    "SamplingParams",
    "SamplingSource",
    "Timings",
    "TokenLogprob",
    "Tokenizer",
    "ToolCallDelta",
    "Usage",
    "collect",
    "final",
    "new_request_id",
]

FinishReason = Literal["stop", "length", "abort", "error"]
#: A chat message as OpenAI sends it: {"role": ..., "content": ...}.
Message = dict[str, object]

MAX_STOP_SEQUENCES = 16
#: Temperatures below this decode greedily (vLLM's `_SAMPLING_EPS`).
GREEDY_BELOW = 1e-5
MAX_TOP_LOGPROBS = 20
#: Seeds accepted: OpenAI's int64 range and the unsigned 64-bit one. Engines get the int64 with
#: the same 64 bits (torch reads a negative seed as 2**64 + seed), so seed + i wraps (#16).
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1

#: How the built-in demo model is labelled wherever it is listed.
DEMO_NOTICE = (
    "demo: a tiny model trained on a small financial glossary, for trying lcfin offline; "
    "not for real use"
)


def new_request_id(prefix: str = "cmpl") -> str:
    """A fresh request id like OpenAI's (`chatcmpl-…`)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _check(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidParameter(message, param=param)


@dataclass(frozen=True)
class ResponseFormat:
    """Constrain the output to JSON: any object (`schema_json=None`) or one JSON Schema.

    `schema_json` is the schema serialised compactly; it keys the compiled-grammar cache.
    """

    schema_json: str | None = None
    name: str | None = None
    strict: bool = True
    #: Literal text around the JSON (a forced tool call's `<tool_call>` ... `</tool_call>`).
    prefix: str = ""
    suffix: str = ""

    @classmethod
    def parse(cls, value: object) -> ResponseFormat | None:
        """From OpenAI's `response_format` dict (or a ResponseFormat); None for type "text".

        Raises:
            InvalidParameter: an unknown type, or a json_schema without a schema object.
        """
        if value is None or isinstance(value, ResponseFormat):
            return value
        _check(isinstance(value, dict), "response_format", "response_format must be an object")
        assert isinstance(value, dict)
        kind = value.get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            return cls()
        _check(
            kind == "json_schema",
            "response_format",
            f"response_format type must be text, json_object or json_schema, got {kind!r}",
        )
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        _check(
            isinstance(schema, dict),
            "response_format",
            "response_format.json_schema.schema must be a JSON Schema object",
        )
        assert isinstance(spec, dict)
        text = json.dumps(schema, separators=(",", ":"))  # key order matters: keep it
        name = spec.get("name")
        return cls(text, str(name) if name else None, spec.get("strict") is not False)

    @property
    def schema(self) -> dict[str, object] | None:
        """The JSON Schema (None for any JSON object)."""
        return None if self.schema_json is None else json.loads(self.schema_json)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion. Validated on construction (raises InvalidParameter).

    `temperature=0` (or below 1e-5) is greedy decoding. `top_k=0` and `top_p=1` disable those
    filters.
    `max_tokens=None` means "as many as the context allows".
    """

    max_tokens: int | None = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    #: Constrained decoding to JSON (an OpenAI `response_format` dict is accepted too).
    response_format: ResponseFormat | None = None
    #: Return the chosen tokens' logprobs and this many alternatives (0-20); None: no logprobs.
    logprobs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "response_format", ResponseFormat.parse(self.response_format))
        if isinstance(self.stop, str):  # accept a single string like OpenAI's API
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        seed = self.seed
        if seed is not None:
            _check(
                isinstance(seed, int) and SEED_MIN <= seed <= SEED_MAX,
                "seed",
                f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}]",
            )
            object.__setattr__(self, "seed", (seed + 2**63) % 2**64 - 2**63)
        self._validate()

    def _validate(self) -> None:
        mt = self.max_tokens
        _check(mt is None or mt >= 1, "max_tokens", f"max_tokens must be >= 1, got {mt}")
        t = self.temperature
        _check(
            math.isfinite(t) and 0 <= t <= 2,
            "temperature",
            f"temperature must be in [0, 2], got {t}",
        )
        _check(0 < self.top_p <= 1, "top_p", f"top_p must be in (0, 1], got {self.top_p}")
        _check(
            self.top_k >= 0 or self.top_k == -1, "top_k", f"top_k must be >= 0, got {self.top_k}"
        )
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            _check(math.isfinite(v) and -2 <= v <= 2, name, f"{name} must be in [-2, 2], got {v}")
        rp = self.repetition_penalty
        _check(
            math.isfinite(rp) and rp > 0,
            "repetition_penalty",
            f"repetition_penalty must be > 0, got {rp}",
        )
        _check(
            len(self.stop) <= MAX_STOP_SEQUENCES,
            "stop",
            f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(self.stop)}",
        )
        _check(
            all(isinstance(s, str) and s for s in self.stop),
            "stop",
            "stop sequences must be non-empty strings",
        )
        lp = self.logprobs
        _check(
            lp is None or 0 <= lp <= MAX_TOP_LOGPROBS,
            "top_logprobs",
            f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {lp}",
        )

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic argmax (a temperature below 1e-5 too, as vLLM's
        `_SAMPLING_EPS`: dividing logits by less would overflow them)."""
        return self.temperature < GREEDY_BELOW or self.top_k == 1

    @classmethod
    def over(cls, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> SamplingParams:
        """The `given` parameters over `defaults` (the model's generation_config).

        A None value is "not given" and falls back to the default, except `max_tokens`,
        whose None means "as many as the context allows".

        Raises:
            InvalidParameter: an unknown parameter name, or a bad value.
        """
        unknown = sorted(set(given) - _SAMPLING_NAMES)
        if unknown:
            raise InvalidParameter(f"Unknown parameter(s): {', '.join(unknown)}", param=unknown[0])
        values = {k: v for k, v in given.items() if v is not None or k == "max_tokens"}
        return cls(**{**defaults, **values})


_SAMPLING_NAMES = frozenset(f.name for f in dataclasses.fields(SamplingParams))


class SamplingSource(Protocol):
    """What the core turns into `SamplingParams` once it knows the model's defaults.

    The server's request models are sampling sources (as vLLM's are: `to_sampling_params`
    on the request); the library's keyword parameters are wrapped in one.
    """

    def to_sampling_params(self, defaults: Mapping[str, Any]) -> SamplingParams:
        """`SamplingParams` over `defaults` (the model's generation_config values)."""
        ...


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, already tokenised, with its sampling parameters."""

    prompt_token_ids: list[int]
    params: SamplingParams
    request_id: str = field(default_factory=new_request_id)
    prompt_text: str | None = None
    #: Stops the prompt format needs (e.g. the plain template's "\nUser:"); they do not count
    #: against the user's limit of stop sequences.
    extra_stops: tuple[str, ...] = ()

    @property
    def all_stops(self) -> tuple[str, ...]:
        """The user's stop strings plus the format's, without duplicates."""
        return tuple(dict.fromkeys((*self.params.stop, *self.extra_stops)))


@dataclass(frozen=True)
class Admission:
    """What a request of one or several generations may use at most, known before any starts.

    `token_budgets` maps each generation's request id to its prompt tokens plus the most
    completion tokens it may produce (max_tokens, or what the context leaves).
    """

    prompts: int
    token_budgets: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """The whole request's token budget."""
        return sum(self.token_budgets.values())


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability, and the most likely alternatives at its step."""

    token: str
    logprob: float
    token_id: int | None = None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a function call being generated: its start (`id` and `name`), or more of
    its `arguments` text. `index` numbers the reply's calls from 0."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Delta:
    """One step of a streamed generation: new text, how many tokens it took, maybe the end."""

    text: str
    num_tokens: int = 0
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    stop_reason: str | int | None = None
    #: One entry per token of this step, when the request asked for logprobs.
    logprobs: tuple[TokenLogprob, ...] | None = None
    #: The function calls this step generated, when the request had tools (then `text` is
    #: only the reply's content: see `function_call_stream`).
    tool_calls: tuple[ToolCallDelta, ...] = ()

    def then(self, later: Delta) -> Delta:
        """This delta followed by `later`, as one (a consumer that fell behind catches up)."""
        logprobs = self.logprobs
        if later.logprobs is not None:
            logprobs = (logprobs or ()) + later.logprobs
        return Delta(
            self.text + later.text,
            self.num_tokens + later.num_tokens,
            later.finish_reason,
            self.prompt_tokens if self.prompt_tokens is not None else later.prompt_tokens,
            later.stop_reason,
            logprobs,
            self.tool_calls + later.tool_calls,
        )


@dataclass(frozen=True)
class Usage:
    """Token usage of a request, as OpenAI reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """prompt + completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Wall-clock timings of a request in seconds (`queue_s` is an estimate, see telemetry)."""

    queue_s: float = 0.0
    time_to_first_token_s: float | None = None
    total_s: float = 0.0


@dataclass(frozen=True)
class Completion:
    """A finished generation: the text and everything known about it."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    request_id: str
    timings: Timings = field(default_factory=Timings)
    dropped_messages: int = 0
    #: What the request cost in USD (token prices + its share of the hardware; see telemetry).
    cost_usd: float | None = None
    #: Every generated token's logprob, when the request asked for them.
    logprobs: tuple[TokenLogprob, ...] | None = None
    #: The parsed JSON (or pydantic model) when the library was given `json_schema=`.
    parsed: Any = None
    #: Function calls the model made (`ToolCall`s), when the request had tools.
    tool_calls: tuple[Any, ...] | None = None
    #: Every choice of a request for n > 1 (see `choices`); empty for a single one.
    all_choices: tuple[Completion, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        return self.text

    @property
    def choices(self) -> tuple[Completion, ...]:
        """Every choice of the request, in order: just this completion unless n > 1."""
        return self.all_choices or (self,)

    @classmethod
    def of_choices(
        cls, choices: Sequence[Completion], n: int = 1, request_id: str | None = None
    ) -> Completion:
        """One completion for a request's choices, `n` per prompt (as OpenAI reports them).

        Choice 0's text, finish reason, logprobs and tool calls; usage counts each prompt
        once and every choice's completion tokens; the cost is the sum; the timings span
        them all. A single choice is returned as it is.
        """
        if len(choices) == 1:
            return choices[0]
        first = choices[0]
        ttfts = [c.timings.time_to_first_token_s for c in choices]
        return dataclasses.replace(
            first,
            usage=Usage(
                sum(c.usage.prompt_tokens for c in choices[::n]),
                sum(c.usage.completion_tokens for c in choices),
            ),
            request_id=request_id or first.request_id,
            timings=Timings(
                min(c.timings.queue_s for c in choices),
                min((t for t in ttfts if t is not None), default=None),
                max(c.timings.total_s for c in choices),
            ),
            cost_usd=None
            if all(c.cost_usd is None for c in choices)
            else sum(c.cost_usd or 0.0 for c in choices),
            all_choices=tuple(choices),
        )

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Generation speed after the first token (of all choices); None under two tokens."""
        ttft = self.timings.time_to_first_token_s
        decode_s = self.timings.total_s - (ttft or 0.0)
        if ttft is None or self.usage.completion_tokens < 2 or decode_s <= 0:
            return None
        return (self.usage.completion_tokens - 1) / decode_s


async def collect(events: AsyncIterator[tuple[int, Delta | Completion]]) -> list[Completion]:
    """The final `Completion` of every generation of a batch's events, in index order."""
    finals: dict[int, Completion] = {}
    async for index, event in events:
        if isinstance(event, Completion):
            finals[index] = event
    return [finals[i] for i in sorted(finals)]


async def final(events: AsyncIterator[Delta | Completion]) -> Completion:
    """The `Completion` that ends one generation's events."""
    result: Completion | None = None
    async for event in events:
        if isinstance(event, Completion):
            result = event
    assert result is not None  # a generation always ends with a Completion
    return result


# -- what backends share with the core -----------------------------------------------------


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer lcfin uses (vLLM returns the same kind)."""

    chat_template: Any
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class BackendStats:
    """What a backend knows about its own load right now."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float | None = None
