// Drives vllm-autoscaler with the official `openai` npm client, as an application would.
//
//   node openai_client.mjs BASE_URL MODEL [MAX_TOKENS]
//
// BASE_URL is the proxy's public address (http://127.0.0.1:PORT, without /v1). Runs, in order:
// a non-streaming chat completion (the one that meets the sleeping backend), a streaming chat
// completion, and a model listing. Prints exactly one JSON line with what the client saw, and
// exits 0; on any client error it prints {"error": ...} and exits 1.
import OpenAI from "openai";
import { VERSION } from "openai/version";

const [baseUrl, model, maxTokensArg] = process.argv.slice(2);
if (!baseUrl || !model) {
  console.error("usage: node openai_client.mjs BASE_URL MODEL [MAX_TOKENS]");
  process.exit(2);
}
const maxTokens = Number(maxTokensArg ?? 5);

const client = new OpenAI({
  baseURL: `${baseUrl.replace(/\/$/, "")}/v1`,
  apiKey: process.env.OPENAI_API_KEY ?? "unused",
  maxRetries: 0, // a retry would hide a proxy that drops the request held during the wake
  timeout: 60_000,
});
const messages = [{ role: "user", content: "say something nice" }];

async function main() {
  const result = { version: VERSION };

  let t0 = performance.now();
  const completion = await client.chat.completions.create({ model, messages, max_tokens: maxTokens });
  result.nonstream = {
    ms: performance.now() - t0,
    object: completion.object,
    model: completion.model,
    content: completion.choices[0]?.message?.content ?? null,
    role: completion.choices[0]?.message?.role ?? null,
    finish_reason: completion.choices[0]?.finish_reason ?? null,
    completion_tokens: completion.usage?.completion_tokens ?? null,
  };

  t0 = performance.now();
  const stream = await client.chat.completions.create({
    model,
    messages,
    max_tokens: maxTokens,
    stream: true,
  });
  const deltas = [];
  let chunks = 0;
  let finishReason = null;
  let role = null;
  for await (const chunk of stream) {
    chunks += 1;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta?.role) role = choice.delta.role;
    if (choice.delta?.content) deltas.push(choice.delta.content);
    if (choice.finish_reason) finishReason = choice.finish_reason;
  }
  result.stream = {
    ms: performance.now() - t0,
    chunks, // every parsed event before [DONE]
    content_chunks: deltas.length,
    content: deltas.join(""),
    role,
    finish_reason: finishReason,
  };

  const models = [];
  for await (const m of client.models.list()) {
    models.push({ id: m.id, object: m.object, owned_by: m.owned_by, state: m.state ?? null });
  }
  result.models = models;

  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
  const error = {
    name: err?.constructor?.name ?? "Error",
    message: String(err?.message ?? err),
    status: err?.status ?? null,
  };
  process.stdout.write(JSON.stringify({ error }) + "\n");
  process.exit(1);
});
