/**
 * One throwaway PostgreSQL server for the whole test run (scripts/lib/postgres.ts), started on first
 * use and stopped by a root hook; each test takes a schema of its own. Without PostgreSQL the suites
 * that need it say loudly that they did not run (and fail under MACHINEPAY_REQUIRE_POSTGRES=1, as
 * .ci/run sets it).
 */
import { Client } from "pg";
import { type PostgresServer, startPostgres } from "../../../scripts/lib/postgres";

let server: Promise<PostgresServer | undefined> | undefined;
after(async () => {
  await (await server)?.stop();
});

/** The test server, or skips the calling suite loudly (fails it when MACHINEPAY_REQUIRE_POSTGRES=1). */
export async function requirePostgres(ctx: Mocha.Context): Promise<PostgresServer> {
  server ??= startPostgres();
  const started = await server;
  if (started) return started;
  const why =
    process.env.MACHINEPAY_NO_POSTGRES === "1"
      ? "MACHINEPAY_NO_POSTGRES=1"
      : "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)";
  if (process.env.MACHINEPAY_REQUIRE_POSTGRES === "1") {
    throw new Error(`${why}, but MACHINEPAY_REQUIRE_POSTGRES=1: the PostgreSQL store tests must run here`);
  }
  console.warn(
    `\n  !!! NOT RUN: the PostgreSQL store tests (${ctx.test?.parent?.title}): ${why}. ` +
      "Install it (apt-get install -y postgresql) to run them.\n",
  );
  ctx.skip();
}

let schemas = 0;
/** A new, empty schema on the server, and the URL whose connections use it. */
export async function newSchema(pg: PostgresServer): Promise<{ schema: string; url: string }> {
  const schema = `t${process.pid}_${++schemas}`;
  await sql(pg, `CREATE SCHEMA ${schema}`);
  return { schema, url: `${pg.url}?options=${encodeURIComponent(`-c search_path=${schema}`)}` };
}

/** Runs statements on a connection of its own (the test's side channel). */
export async function sql(pg: PostgresServer | string, text: string, values: unknown[] = []) {
  const client = new Client({ connectionString: typeof pg === "string" ? pg : pg.url });
  await client.connect();
  try {
    return (await client.query(text, values)).rows;
  } finally {
    await client.end();
  }
}
