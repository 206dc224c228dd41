"""LangChain's `ChatOpenAI` against `lcfin serve`: invoke, stream and a prompt | model chain.

    pip install langchain-openai
    lcfin serve --model demo --port 8000
    python examples/langchain_client.py

Environment: LCFIN_URL (default http://127.0.0.1:8000/v1), LCFIN_API_KEY (one of the server's
LCFIN_API_KEYS; any string when the server has none) and LCFIN_MODEL (default: demo).
"""

from __future__ import annotations

import os

from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI


def main() -> None:
    """Invoke, stream and chain once each, printing the results."""
    llm = ChatOpenAI(
        base_url=os.environ.get("LCFIN_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("LCFIN_API_KEY", "unused-without-keys"),
        model=os.environ.get("LCFIN_MODEL", "demo"),
        temperature=0,
        max_completion_tokens=64,
        stream_usage=True,
    )

    message = llm.invoke("What is Basel III?")
    print("invoke:", message.content)
    print("usage:", message.usage_metadata)

    print("stream: ", end="")
    for chunk in llm.stream("What is the liquidity coverage ratio?"):
        print(chunk.content, end="", flush=True)
    print()

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise financial glossary."), ("user", "What is {term}?")]
    )
    chain = prompt | llm
    print("chain:", chain.invoke({"term": "CET1"}).content)


if __name__ == "__main__":
    main()
