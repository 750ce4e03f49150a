/**
 * Start a real `hardhat node` as a child process on a free port (tests, demo, benchmarks), and stop
 * it by its PID. Hardhat's CLI is run with this Node directly (not through npx or a shell), so the
 * PID we hold is the process that listens.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";

const ROOT = join(__dirname, "..", "..");

export type HardhatNode = { url: string; port: number; pid: number; process: ChildProcess; stop(): Promise<void> };

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startHardhatNode({ port, timeoutMs = 60_000 }: { port?: number; timeoutMs?: number } = {}) {
  const p = port ?? (await freePort());
  const cli = require.resolve("hardhat/internal/cli/cli.js", { paths: [ROOT] });
  const child = spawn(process.execPath, [cli, "node", "--hostname", "127.0.0.1", "--port", String(p)], {
    cwd: ROOT,
    env: { ...process.env, HARDHAT_DISABLE_TELEMETRY_PROMPT: "true" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`hardhat node did not start in ${timeoutMs} ms:\n${output}`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Started HTTP and WebSocket JSON-RPC server")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`hardhat node exited (${code}) before it listened:\n${output}`));
    });
  });
  // Keep draining its output so a chatty node never blocks on a full pipe.
  child.stdout!.resume();
  child.stderr!.resume();
  const node: HardhatNode = {
    url: `http://127.0.0.1:${p}`,
    port: p,
    pid: child.pid!,
    process: child,
    stop: () => stopProcess(child),
  };
  return node;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export function stopProcess(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}
