"""The official OpenAI Python client against `lcfin serve`: list, chat, stream, complete, errors.

Start a server, then run this script:

    lcfin serve --model demo --port 8000
    python examples/openai_client.py

Environment: LCFIN_URL (default http://127.0.0.1:8000/v1), LCFIN_API_KEY (one of the server's
LCFIN_API_KEYS; any string when the server has none) and LCFIN_MODEL (default: the model the
server is serving, the first entry of /v1/models).
"""

from __future__ import annotations

import os

import openai
from openai import OpenAI

QUESTION = "What is Basel III?"


def main() -> None:
    """Run each call once and print what comes back."""
    client = OpenAI(
        base_url=os.environ.get("LCFIN_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("LCFIN_API_KEY", "unused-without-keys"),
    )

    # The served model comes first; the others are catalog models the server can switch to.
    models = client.models.list().data
    model = os.environ.get("LCFIN_MODEL") or models[0].id
    print("models:", ", ".join(m.id for m in models))
    print("using:", model)

    # A chat completion, not streamed.
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=64,
        temperature=0,
    )
    print("chat:", reply.choices[0].message.content)
    print("finish_reason:", reply.choices[0].finish_reason, "usage:", reply.usage)

    # The same, streamed; the last chunk carries the usage when include_usage is set.
    print("stream: ", end="")
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=64,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage is not None:
            print("\nstream usage:", chunk.usage)

    # The legacy text completion API (raw prompt, no chat template).
    text = client.completions.create(model=model, prompt="Liquidity risk is", max_tokens=16)
    print("completion:", text.choices[0].text)

    # Errors arrive as the SDK's exception classes, with OpenAI's error envelope.
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], temperature=5
        )
    except openai.BadRequestError as exc:
        print("error:", exc.status_code, exc.body)


if __name__ == "__main__":
    main()
