/** Run one scenario against a started environment: a fresh context and counters, its story collected. */
import {
  type Progress,
  type Scenario,
  type ScenarioContext,
  type ScenarioResult,
  type Sizes,
  silentProgress,
  syncClock,
  Tally,
} from "./context";
import type { ChainEvents } from "./events";
import type { DemoEnvironment } from "./harness";

export type RunScenarioParameters = {
  sizes: Sizes;
  progress?: Progress;
  /** Each line of the scenario's story as it happens. */
  say?: (line: string) => void;
};

/** A scenario's context over a started environment, with fresh counters. */
export function contextFor(
  env: DemoEnvironment,
  events: ChainEvents,
  { sizes, progress = silentProgress, say = () => undefined }: RunScenarioParameters,
): ScenarioContext {
  return {
    env,
    client: env.client,
    relayer: env.relayer,
    domain: env.domain,
    token: env.token,
    contract: env.deployment.machinePay,
    owners: env.owners,
    sizes,
    progress,
    events,
    tally: new Tally(),
    say,
  };
}

export async function runScenario<D>(
  env: DemoEnvironment,
  events: ChainEvents,
  scenario: Scenario<D>,
  { say = () => undefined, ...rest }: RunScenarioParameters,
): Promise<ScenarioResult<D>> {
  await syncClock(env.client);
  const lines: string[] = [];
  const ctx = contextFor(env, events, {
    ...rest,
    say(line) {
      lines.push(line);
      say(line);
    },
  });
  const started = Date.now();
  const outcome = await scenario.run(ctx);
  return { ...outcome, name: scenario.name, title: scenario.title, lines, tally: ctx.tally, ms: Date.now() - started };
}
