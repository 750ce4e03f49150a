/**
 * Start a throwaway PostgreSQL server for tests: `initdb` in a temp dir, `pg_ctl start` on a free
 * port, stopped by its PID. PostgreSQL refuses to run as root, so under root (CI) the server runs as
 * the `postgres` system user and the temp dir belongs to that user. Returns undefined when
 * PostgreSQL is not installed (or MACHINEPAY_NO_POSTGRES=1 says to act as if it were not).
 */
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./hardhat-node";

export type PostgresServer = {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust authentication, no password). */
  url: string;
  port: number;
  /** The postmaster's PID. */
  pid: number;
  /** Temp dir holding the data directory, the socket and the server log. */
  dir: string;
  /** Immediate shutdown (no checkpoint: a crash, as far as the data is concerned), then the temp dir goes. */
  stop(): Promise<void>;
};

/** The newest PostgreSQL's bin directory under /usr/lib/postgresql, or undefined if none is installed. */
export function postgresBinDir(root = "/usr/lib/postgresql"): string | undefined {
  if (process.env.MACHINEPAY_NO_POSTGRES === "1" || !existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "initdb")) && existsSync(join(root, v, "bin", "pg_ctl")))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  return versions.length > 0 ? join(root, versions[0], "bin") : undefined;
}

export async function startPostgres({
  timeoutSeconds = 30,
}: {
  timeoutSeconds?: number;
} = {}): Promise<PostgresServer | undefined> {
  const bin = postgresBinDir();
  if (bin === undefined) return undefined;
  const asRoot = process.getuid?.() === 0;
  // runuser, not su: no login shell, no PAM session, arguments passed as they are.
  const run = (tool: string, args: string[]) => {
    const [cmd, argv] = asRoot
      ? ["runuser", ["-u", "postgres", "--", join(bin, tool), ...args]]
      : [join(bin, tool), args];
    try {
      return execFileSync(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], timeout: (timeoutSeconds + 10) * 1000 });
    } catch (e) {
      const err = e as { stderr?: Buffer; stdout?: Buffer; message: string };
      throw new Error(
        `${tool} ${args.join(" ")} failed: ${err.stderr?.toString() || err.stdout?.toString() || err.message}`,
      );
    }
  };

  const dir = mkdtempSync(join(tmpdir(), "machinepay-pg-"));
  if (asRoot) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString());
    chownSync(dir, uid, gid);
  }
  const data = join(dir, "data");
  let pid: number | undefined;
  try {
    // --no-sync: initdb's own files need no fsync for a throwaway cluster; the server still fsyncs commits.
    run("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        run("pg_ctl", [
          "-D",
          data,
          "-o",
          `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`,
          "-l",
          join(dir, "log"),
          "-w",
          "-t",
          String(timeoutSeconds),
          "start",
        ]);
        break;
      } catch (e) {
        // Another process may have taken the port between freePort and the server's bind: try another.
        if (attempt >= 3) throw new Error(`${(e as Error).message}\nserver log:\n${serverLog(dir)}`);
      }
    }
    pid = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
    const started = pid;
    // If the test process dies without stopping it, do not leave a server behind.
    const onExit = () => {
      kill(started);
      rmSync(dir, { recursive: true, force: true });
    };
    process.once("exit", onExit);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      port,
      pid,
      dir,
      async stop() {
        process.removeListener("exit", onExit);
        try {
          run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "-t", "10", "stop"]);
        } catch {
          // Fall through to the kill: the PID is what we hold.
        }
        kill(started);
        await waitGone(started);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    if (pid !== undefined) kill(pid);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

function serverLog(dir: string): string {
  try {
    return readFileSync(join(dir, "log"), "utf8");
  } catch {
    return "(no log)";
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A daemon's exited process stays a zombie until init reaps it: that is gone too.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function kill(pid: number): void {
  if (alive(pid)) process.kill(pid, "SIGKILL");
}

async function waitGone(pid: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
}
