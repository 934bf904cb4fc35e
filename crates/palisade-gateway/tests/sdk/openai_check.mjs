// Drives palisade-gateway with the official OpenAI Node SDK.
//
// Run by tests/openai_node.rs as `node openai_check.mjs MODE BASE_URL` (from
// the directory the SDK is installed in); prints one JSON object with what
// it saw, or exits non-zero with the error.

import OpenAI from "openai";

const [mode, base] = process.argv.slice(2);
const messages = [{ role: "user", content: "hello" }];
const client = (opts = {}) => new OpenAI({ baseURL: base, apiKey: "unused", ...opts });

async function happy() {
  const c = client();
  const models = [];
  for await (const m of c.models.list()) models.push(m.id);
  const { data: done, response } = await c.chat.completions
    .create({ model: "m", messages })
    .withResponse();
  const out = {
    models: models.sort(),
    whole: {
      content: done.choices[0].message.content,
      finish_reason: done.choices[0].finish_reason,
      object: done.object,
      total_tokens: done.usage ? done.usage.total_tokens : null,
      provider: response.headers.get("x-palisade-provider"),
    },
  };
  let text = "";
  let finish = null;
  let chunks = 0;
  let usage = null;
  const stream = await c.chat.completions.create({
    model: "m",
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const ch of stream) {
    chunks += 1;
    if (ch.choices.length) {
      text += ch.choices[0].delta.content || "";
      finish = ch.choices[0].finish_reason || finish;
    }
    if (ch.usage) usage = ch.usage.total_tokens;
  }
  out.stream = { chunks, text, finish_reason: finish, total_tokens: usage };
  // The Responses API, whole and streamed.
  const resp = await c.responses.create({ model: "m", input: "hello" });
  let deltas = "";
  let last = null;
  const events = await c.responses.create({ model: "m", input: "hello", stream: true });
  for await (const e of events) {
    if (e.type === "response.output_text.delta") deltas += e.delta;
    last = e;
  }
  out.responses = {
    status: resp.status,
    text: resp.output_text,
    output_tokens: resp.usage.output_tokens,
    stream_text: deltas,
    last_event: last.type,
  };
  // A stored response read back, its input listed, then deleted.
  const got = await c.responses.retrieve(resp.id);
  const items = await c.responses.inputItems.list(resp.id);
  await c.responses.delete(resp.id);
  let gone;
  try {
    await c.responses.retrieve(resp.id);
    gone = "no error";
  } catch (e) {
    gone = e instanceof OpenAI.NotFoundError ? e.status : String(e);
  }
  out.stored = {
    same_id: got.id === resp.id,
    text: got.output_text,
    input: items.data.flatMap((item) => item.content.map((part) => part.text)),
    gone,
  };
  const emb = await c.embeddings.create({ model: "m", input: ["first text", "second text"] });
  out.embeddings = { count: emb.data.length, dims: emb.data[0].embedding.length };
  try {
    await c.chat.completions.create({ model: "no-such-model", messages });
    out.not_found = "no error";
  } catch (e) {
    out.not_found = e instanceof OpenAI.NotFoundError ? e.status : String(e);
  }
  const answers = await Promise.all(
    Array.from({ length: 100 }, () => c.chat.completions.create({ model: "m", messages })),
  );
  out.concurrent = answers.filter((a) => a.choices[0].message.content).length;
  return out;
}

async function error(kind, call) {
  try {
    await call();
    return { raised: null };
  } catch (e) {
    return {
      raised: e instanceof kind ? kind.name : e.constructor.name,
      status: e.status,
      retry_after: e.headers ? e.headers.get("retry-after") : null,
      should_retry: e.headers ? e.headers.get("x-should-retry") : null,
    };
  }
}

const modes = {
  happy,
  rate_limited: () =>
    error(OpenAI.RateLimitError, () =>
      client({ maxRetries: 0 }).chat.completions.create({ model: "m", messages }),
    ),
  // The SDK retries 5xx twice by default, unless told not to: palisade
  // has already retried and fallen back, and says so.
  failing: () =>
    error(OpenAI.InternalServerError, () => client().chat.completions.create({ model: "m", messages })),
};

console.log(JSON.stringify(await modes[mode]()));
