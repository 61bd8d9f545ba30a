// The Edge Function's handler under load, driven by bench_serving.py (which prepares the
// database and the fixture): for each group of users (by how many videos they decided), with
// MMR off (mmr_lambda 1, no caps) and on (the defaults), `rounds` requests per user, one at a time.
// Writes {mode: {group: {latencies_ms: [...], items: {user: [video ids]}}}} as JSON.

import { SignJWT } from "npm:jose@6.2.18";
import postgres from "npm:postgres@3.4.9";
import {
  createHandler,
  settleLogWrites,
} from "../../supabase/functions/enhanced_two_tower_recommendations/index.ts";

interface Fixture {
  groups: Record<string, string[]>;
  rounds: number;
  limit: number;
  out: string;
}

const fixture: Fixture = JSON.parse(
  await Deno.readTextFile(Deno.env.get("SWIPEREC_BENCH_FIXTURE")!),
);
const secret = Deno.env.get("JWT_SECRET")!;
const sql = postgres(Deno.env.get("SUPABASE_DB_URL")!, {
  prepare: false,
  max: 4,
});
const handler = createHandler({ sql, jwtSecret: secret });
const key = new TextEncoder().encode(secret);

async function token(user: string): Promise<string> {
  return await new SignJWT({ role: "authenticated", aud: "authenticated" })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(user)
    .setExpirationTime("1h")
    .sign(key);
}

// MMR off: pure relevance and no caps, i.e. the ANN top-k itself.
const MODES = {
  mmr_off: "mmr_lambda=1&max_per_maker=100&max_per_genre=100",
  mmr_on: "", // the defaults: mmr_lambda 0.7, max 3 per maker, 5 per genre
} as const;

async function call(user: string, bearer: string, mode: string) {
  const url = `http://localhost/recommend?limit=${fixture.limit}&${mode}`;
  const started = performance.now();
  const response = await handler(
    new Request(url, { headers: { Authorization: `Bearer ${bearer}` } }),
  );
  const body = await response.json();
  const elapsed = performance.now() - started;
  if (response.status !== 200) {
    throw new Error(`user ${user}: ${response.status} ${JSON.stringify(body)}`);
  }
  return {
    elapsed,
    ids: body.items.map((i: { video_id: number }) => i.video_id),
  };
}

const results: Record<string, Record<string, unknown>> = {};
for (const [mode, query] of Object.entries(MODES)) {
  results[mode] = {};
  for (const [group, users] of Object.entries(fixture.groups)) {
    const bearers = await Promise.all(users.map(token));
    for (let i = 0; i < Math.min(5, users.length); i++) {
      await call(users[i], bearers[i], query); // warm-up: connections, plans, caches
    }
    const latencies: number[] = [];
    const items: Record<string, number[]> = {};
    for (let round = 0; round < fixture.rounds; round++) {
      for (let i = 0; i < users.length; i++) {
        const { elapsed, ids } = await call(users[i], bearers[i], query);
        latencies.push(elapsed);
        items[users[i]] = ids;
      }
    }
    await settleLogWrites();
    results[mode][group] = { latencies_ms: latencies, items };
  }
}
await Deno.writeTextFile(fixture.out, JSON.stringify(results));
await sql.end();
