"""One function-call JSON object, scanned character by character as it is generated.

`{"name": "f", "arguments": {...}}` (or `"parameters"`, Llama's key): `CallObject` says when
the name is complete, gives the argument value's text as it grows, and tells a text that is not
a call (its first key is none of those, or it is not JSON) from one that is. It is lenient past
that point: the argument value ends where its brackets balance, whatever it holds.
"""

from __future__ import annotations

import json

__all__ = ["WS", "CallObject"]

ARGUMENT_KEYS = ("arguments", "parameters")
WS = " \t\r\n"


class _Value:
    """Where one JSON value ends: string, object/array (depth), or a bare scalar."""

    def __init__(self, first: str) -> None:
        self.kind = "string" if first == '"' else "nested" if first in "{[" else "scalar"
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.text = ""

    def push(self, c: str) -> bool:
        """Add `c`; False when `c` is not part of the value (a scalar's end: `,` `}` ws)."""
        if self.kind == "scalar":
            if c in ",}]" + WS:
                return False
            self.text += c
            return True
        self.text += c
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = False
        elif c == '"':
            self.in_string = True
        elif c in "{[":
            self.depth += 1
        elif c in "}]":
            self.depth -= 1
        return True

    @property
    def complete(self) -> bool:
        """The value's last character is in."""
        if self.kind == "string":
            return len(self.text) > 1 and not self.in_string
        return self.kind == "nested" and self.depth == 0 and bool(self.text)


class CallObject:
    """Scans one call object `{"name": ..., "arguments": ...}`, character by character.

    After each `push`, `name` is the call's name once complete, `args` the argument text
    seen so far (streamable when the value is an object or array), `failed` says the text is
    not a call, `ended` that the object is closed.
    """

    def __init__(self) -> None:
        self.state = "open"
        self.key_text = ""
        self.key: str | None = None
        self.value: _Value | None = None
        self.name: str | None = None
        self.args: _Value | None = None
        self.seen_keys = 0
        self.failed = False
        self.ended = False

    def push(self, c: str) -> None:
        """Read one character."""
        getattr(self, "_" + self.state)(c)

    def _fail(self) -> None:
        self.failed = True

    def _open(self, c: str) -> None:
        if c == "{":
            self.state = "key_or_end"
        elif c not in WS:
            self._fail()

    def _key_or_end(self, c: str) -> None:
        if c == '"':
            self.state, self.key_text = "key", '"'
        elif c == "}" and self.seen_keys:
            self.ended = True
        elif c not in WS:
            self._fail()

    def _key(self, c: str) -> None:
        self.key_text += c
        if c == '"' and not self.key_text.endswith('\\"'):
            self.key = str(json.loads(self.key_text))
            first = self.seen_keys == 0
            if first and self.key not in ("name", *ARGUMENT_KEYS):
                self._fail()
            self.seen_keys += 1
            self.state = "colon"

    def _colon(self, c: str) -> None:
        if c == ":":
            self.state = "value_start"
        elif c not in WS:
            self._fail()

    def _value_start(self, c: str) -> None:
        if c in WS:
            return
        self.value = _Value(c)
        if self.key in ARGUMENT_KEYS and self.args is None:
            self.args = self.value
        self.state = "value"
        self._value(c)

    def _value(self, c: str) -> None:
        assert self.value is not None
        if not self.value.push(c):  # a scalar ended: `c` belongs to the object
            self._value_done()
            self._after_value(c)
        elif self.value.complete:
            self._value_done()

    def _value_done(self) -> None:
        assert self.value is not None
        if self.key == "name" and self.name is None:
            name = json.loads(self.value.text) if self.value.kind == "string" else None
            if not isinstance(name, str) or not name:
                self._fail()
                return
            self.name = name
        self.state = "after_value"

    def _after_value(self, c: str) -> None:
        if c == ",":
            self.state = "key_or_end"
        elif c == "}":
            self.ended = True
        elif c not in WS:
            self._fail()

    @property
    def in_string(self) -> bool:
        """Inside a key or string value (where `<` is just a character)."""
        in_value = self.state == "value" and self.value is not None and self.value.in_string
        return self.state == "key" or in_value

    def finished_args(self) -> str:
        """The final argument text (`{}` when none was given; a JSON string decoded)."""
        if self.args is None:
            return "{}"
        if self.args.kind == "string" and self.args.complete:
            decoded = json.loads(self.args.text)
            return decoded if isinstance(decoded, str) else self.args.text
        return self.args.text

    @property
    def args_stream(self) -> bool:
        """Whether the arguments stream as generated (an object or array value)."""
        return self.args is not None and self.args.kind == "nested"
