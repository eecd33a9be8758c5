"""The official openai client against ``lacy-mlx serve``: chat, streaming, calls and sources.

    lacy-mlx serve --db kb.db &                       # in another terminal (127.0.0.1:8080)
    python examples/openai_client.py
    python examples/openai_client.py --base-url http://127.0.0.1:8080/v1 --api-key KEY

Standard fields are OpenAI's; lacy's calls ride in ``message.annotations`` (citations) and in
the response's ``lacy`` object; lacy options go in ``extra_body={"lacy": {...}}``.
"""
from __future__ import annotations

import argparse
import sys

import openai


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", default="none", help="the server's --api-key, if it has one")
    p.add_argument("--question", default="Where was Marie Curie born?")
    args = p.parse_args(argv)

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": args.question}]

    r = client.chat.completions.create(model=model, messages=messages, max_tokens=64)
    print(f"{model}: {r.choices[0].message.content!r} ({r.choices[0].finish_reason}, {r.usage.total_tokens} tokens)")
    for a in r.choices[0].message.annotations or []:
        print(f"  source: {a.url_citation.title} <{a.url_citation.url}>")
    for call in (r.model_extra or {}).get("lacy", {}).get("calls", []):
        print(f"  call at step {call['step']} ({call['reason']}): {call['query']!r}, {len(call['hits'])} hits")

    print("streamed, gate by entropy: ", end="")
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=32, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"lacy": {"gate": "entropy", "entropy_threshold": 2.5}})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            cached = chunk.usage.prompt_tokens_details.cached_tokens if chunk.usage.prompt_tokens_details else 0
            print(f"\n  usage: {chunk.usage.completion_tokens} tokens, {cached} prompt tokens from the cache")
    emb = client.embeddings.create(model=model, input=[args.question])
    print(f"embedding: {len(emb.data[0].embedding)} dims ({emb.model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
