/**
 * The MachinePay demo, end to end through the relayer: a real `hardhat node`, MachinePay deployed
 * (`machinepay deploy --dev`), owners funding their escrows, the relayer running as its own process
 * (`machinepay relayer start`), and eight scenarios in which devices sign with the SDK and pay over
 * the relayer's HTTP API; what settled is proved from the contract's events. A summary table ends
 * it: payments, refusals by reason, batches, gas per payment against one transfer per payment.
 *
 *   npm run demo                                      (after set-up: npx -y pnpm@10 exec ts-node --transpile-only scripts/demo.ts)
 *   … scripts/demo.ts --devices 50 --payments 20 --scenario fridge,stolen
 *   DEVICES=50 PAYMENTS=20 SCENARIO=car npm run demo
 *
 * Keys: Hardhat's well-known test accounts (public: never use them for value) and fresh random
 * device keys that are never printed.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { SingleBar } from "cli-progress";
import type { Progress, ScenarioResult } from "./demo/context";
import { ChainEvents } from "./demo/events";
import { type DemoEnvironment, startEnvironment } from "./demo/harness";
import { runScenario } from "./demo/run";
import { SCENARIOS } from "./demo/scenarios";
import { collectSummary, formatScenarios, formatSummary, measureBaselines } from "./demo/summary";

const USAGE = `usage: scripts/demo.ts [--devices N] [--payments N] [--scenario NAME[,NAME…]] [--no-cli]
  --devices   devices per fleet (default 12; env DEVICES); the onboarded fleet has 10x as many
  --payments  payments per device (default 12; env PAYMENTS); a charging session signs 3x as many vouchers
  --scenario  ${SCENARIOS.map((s) => s.name).join(", ")} (default all; env SCENARIO)
  --no-cli    deploy, fund and freeze with viem instead of the machinepay CLI`;

function options() {
  const { values } = parseArgs({
    options: {
      devices: { type: "string" },
      payments: { type: "string" },
      scenario: { type: "string" },
      "no-cli": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const positive = (name: string, v: string | undefined, fallback: number) => {
    const n = Number(v ?? fallback);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}\n${USAGE}`);
    return n;
  };
  const wanted = (values.scenario ?? process.env.SCENARIO ?? "all").split(",").map((s) => s.trim());
  const scenarios = wanted.includes("all") ? SCENARIOS : wanted.map((w) => SCENARIOS.find((s) => s.name === w));
  const unknown = wanted.filter((w, i) => w !== "all" && !scenarios[i]);
  if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(", ")}\n${USAGE}`);
  return {
    sizes: {
      devices: positive("devices", values.devices ?? process.env.DEVICES, 12),
      payments: positive("payments", values.payments ?? process.env.PAYMENTS, 12),
    },
    scenarios: scenarios as typeof SCENARIOS,
    useCli: !values["no-cli"],
  };
}

/** A cli-progress bar; lines said while it runs are printed once it ends. */
function progressBar(): Progress & { say(line: string): void } {
  let bar: SingleBar | undefined;
  let held: string[] = [];
  return {
    begin(label, total) {
      bar = new SingleBar({
        format: `  ${label.padEnd(28)} [{bar}] {value}/{total} signed and sent`,
        barsize: 30,
        hideCursor: true,
        clearOnComplete: false,
      });
      bar.start(total, 0);
    },
    tick(n = 1) {
      bar?.increment(n);
    },
    end() {
      if (bar) {
        bar.setTotal(Math.max(bar.getProgress() * bar.getTotal(), 1));
        bar.stop();
      }
      bar = undefined;
      for (const l of held) console.log(`  ${l}`);
      held = [];
    },
    say(line) {
      if (bar) held.push(line);
      else console.log(`  ${line}`);
    },
  };
}

function tail(file: string, lines = 30) {
  try {
    return readFileSync(file, "utf8").trim().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function main() {
  let parsed: ReturnType<typeof options>;
  try {
    parsed = options();
  } catch (e) {
    console.error((e as Error).message);
    process.exitCode = 2;
    return;
  }
  const { sizes, scenarios, useCli } = parsed;
  const started = Date.now();
  console.log("MachinePay demo: a hardhat node, the relayer as its own process, devices signing with the SDK");
  console.log(
    "Keys: Hardhat's public test accounts (#0 and #2..#5 owners, #1 the relayer's sender: never use them for value) and fresh device keys, never printed.",
  );
  console.log(`Size: ${sizes.devices} devices per fleet, ${sizes.payments} payments per device.\n`);
  let env: DemoEnvironment | undefined;
  const stop = async (code: number) => {
    console.error("\ninterrupted: stopping the relayer and the node");
    await env?.stop();
    process.exit(code);
  };
  process.once("SIGINT", () => void stop(130));
  process.once("SIGTERM", () => void stop(143));
  try {
    console.log("Set-up");
    env = await startEnvironment({ log: (l) => console.log(`  ${l}`), useCli });
    const events = new ChainEvents(env.client, env.deployment.machinePay, env.deployment.deploymentBlock);
    const results: ScenarioResult<unknown>[] = [];
    for (const [i, scenario] of scenarios.entries()) {
      console.log(`\n${i + 1}. ${scenario.title} (${scenario.name})`);
      const progress = progressBar();
      const result = await runScenario(env, events, scenario, { sizes, progress, say: progress.say });
      progress.end();
      for (const c of result.checks)
        console.log(`  ${c.ok ? "✓" : "✗"} ${c.claim}${c.ok || !c.detail ? "" : ` (${c.detail})`}`);
      console.log(`  (${(result.ms / 1000).toFixed(1)} s)`);
      results.push(result as ScenarioResult<unknown>);
    }
    // Settled on chain is not yet `settled` at the relayer until it saw the receipt: let it catch up.
    const relayer = env.relayer;
    for (let i = 0; i < 100; i++) {
      const { queue = {} } = await relayer.health();
      if (Object.values(queue).every((n) => n === 0)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const baselines = await measureBaselines(env);
    const summary = await collectSummary(env, events, results, Date.now() - started, baselines);
    console.log("\nSummary (settlement proved from MachinePay's events)\n");
    for (const l of formatSummary(summary)) console.log(l);
    console.log("\nPer scenario\n");
    for (const l of formatScenarios(results)) console.log(l);
    console.log(`\nHow: ${env.notes.join("; ")}.`);
    const failed = results.flatMap((r) => r.checks.filter((c) => !c.ok).map((c) => `${r.name}: ${c.claim}`));
    if (failed.length > 0 || summary.skipped.size > 0 || summary.droppedAtPreview > 0) {
      console.error(`\n${failed.length} check(s) failed:\n  ${failed.join("\n  ")}`);
      process.exitCode = 1;
    }
  } catch (e) {
    console.error(`\ndemo failed: ${(e as Error).stack ?? e}`);
    if (env) console.error(`\nthe relayer's log, last lines:\n${tail(env.relayerLog)}`);
    process.exitCode = 1;
  } finally {
    await env?.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
