"""Drives palisade-gateway with the official OpenAI Python SDK.

Run by tests/openai_sdk.rs as `python openai_check.py MODE BASE_URL`; prints
one JSON object with what it saw, or exits non-zero with the exception.
"""

import asyncio
import json
import sys

import openai

MODE, BASE = sys.argv[1], sys.argv[2]
MESSAGES = [{"role": "user", "content": "hello"}]


def client(**kw):
    return openai.OpenAI(base_url=BASE, api_key="unused", **kw)


def happy():
    c = client()
    out = {"models": sorted(m.id for m in c.models.list()), "retrieved": c.models.retrieve("m").id}
    raw = c.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    done = raw.parse()
    out["whole"] = {
        "content": done.choices[0].message.content,
        "finish_reason": done.choices[0].finish_reason,
        "created": done.created,
        "object": done.object,
        "total_tokens": done.usage.total_tokens if done.usage else None,
        "provider": raw.headers.get("x-palisade-provider"),
        "attempts": raw.headers.get("x-palisade-attempts"),
    }
    chunks = list(c.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    out["stream"] = {
        "chunks": len(chunks),
        "text": "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices),
        "finish_reason": [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1],
        "usage": any(ch.usage is not None for ch in chunks),
    }
    chunks = list(
        c.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    out["stream_usage"] = {
        "last_choices": len(last.choices),
        "total_tokens": last.usage.total_tokens if last.usage else None,
    }
    # Embeddings: the SDK asks for base64 by default and decodes it.
    emb = c.embeddings.create(model="m", input=["first text", "second text"])
    floats = c.embeddings.create(model="m", input="first text", encoding_format="float")
    wide = c.embeddings.create(model="m", input="x", dimensions=16)
    out["embeddings"] = {
        "count": len(emb.data),
        "dims": len(emb.data[0].embedding),
        "same_text_same_vector": all(
            abs(a - b) < 1e-6 for a, b in zip(emb.data[0].embedding, floats.data[0].embedding)
        ),
        "texts_differ": emb.data[0].embedding != emb.data[1].embedding,
        "wide": len(wide.data[0].embedding),
        "usage": emb.usage.total_tokens,
    }
    # Legacy completions, whole and streamed.
    done = c.completions.create(model="m", prompt="say hello")
    chunks = list(c.completions.create(model="m", prompt="say hello", stream=True))
    out["completions"] = {
        "object": done.object,
        "text": done.choices[0].text,
        "finish_reason": done.choices[0].finish_reason,
        "stream_text": "".join(ch.choices[0].text for ch in chunks if ch.choices),
        "stream_finish": [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1],
    }
    # The Responses API, whole and streamed.
    raw = c.responses.with_raw_response.create(model="m", input="hello", instructions="be brief")
    done = raw.parse()
    events = list(c.responses.create(model="m", input=[{"role": "user", "content": "hello"}], stream=True))
    last = events[-1]
    out["responses"] = {
        "object": done.object,
        "status": done.status,
        "text": done.output_text,
        "input_tokens": done.usage.input_tokens,
        "output_tokens": done.usage.output_tokens,
        "provider": raw.headers.get("x-palisade-provider"),
        "first_event": events[0].type,
        "last_event": last.type,
        "stream_text": "".join(e.delta for e in events if e.type == "response.output_text.delta"),
        "stream_final_text": last.response.output_text,
        "stream_output_tokens": last.response.usage.output_tokens,
    }
    # A stored response read back, its input listed, then deleted.
    got = c.responses.retrieve(done.id)
    items = c.responses.input_items.list(done.id)
    deleted = c.responses.with_raw_response.delete(done.id)
    try:
        c.responses.retrieve(done.id)
        gone = "no error"
    except openai.NotFoundError as e:
        gone = e.status_code
    out["stored"] = {
        "same_id": got.id == done.id,
        "text": got.output_text,
        "input": [part.text for item in items.data for part in item.content],
        "deleted_status": deleted.http_response.status_code,
        "gone": gone,
    }
    try:
        c.chat.completions.create(model="no-such-model", messages=MESSAGES)
        out["not_found"] = "no error"
    except openai.NotFoundError as e:
        out["not_found"] = e.status_code
    out["concurrent"] = asyncio.run(concurrent(200))
    return out


async def concurrent(n):
    c = openai.AsyncOpenAI(base_url=BASE, api_key="unused")
    answers = await asyncio.gather(
        *(c.chat.completions.create(model="m", messages=MESSAGES) for _ in range(n))
    )
    return sum(1 for a in answers if a.choices[0].message.content)


def error(kind, call):
    try:
        call()
        return {"raised": None}
    except kind as e:
        h = e.response.headers
        return {
            "raised": type(e).__name__,
            "status": e.status_code,
            "retry_after": h.get("retry-after"),
            "should_retry": h.get("x-should-retry"),
            "body_type": (e.body or {}).get("type") if isinstance(e.body, dict) else None,
        }


def too_long():
    return error(
        openai.BadRequestError,
        lambda: client(max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x" * 400}]
        ),
    )


def rate_limited():
    return error(
        openai.RateLimitError,
        lambda: client(max_retries=0).chat.completions.create(model="m", messages=MESSAGES),
    )


def failing():
    # The SDK retries 5xx twice by default, unless told not to: palisade
    # has already retried and fallen back, and says so.
    return error(
        openai.InternalServerError,
        lambda: client().chat.completions.create(model="m", messages=MESSAGES),
    )


def responses_cut():
    # A stream cut midway ends with an error event: the SDK raises it.
    events = []
    try:
        for e in client(max_retries=0).responses.create(model="m", input="hello", stream=True):
            events.append(e.type)
        return {"raised": None, "events": events}
    except openai.APIError as e:
        return {"raised": type(e).__name__, "message": e.message, "events": events,
                "code": (e.body or {}).get("code") if isinstance(e.body, dict) else None}


def keys():
    # Keys as the gateway's [gateway.auth] knows them (see openai_sdk.rs).
    def as_key(key, model="m"):
        return lambda: openai.OpenAI(base_url=BASE, api_key=key, max_retries=0).chat.completions.create(
            model=model, messages=MESSAGES
        )

    ok = as_key("client-b-secret")()
    return {
        "wrong_key": error(openai.AuthenticationError, as_key("nope")),
        "other_model": error(openai.PermissionDeniedError, as_key("client-b-secret", "other")),
        "ok": ok.choices[0].finish_reason,
    }


print(json.dumps({
    "happy": happy,
    "too_long": too_long,
    "rate_limited": rate_limited,
    "failing": failing,
    "responses_cut": responses_cut,
    "keys": keys,
}[MODE]()))
