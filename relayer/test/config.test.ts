/**
 * Configuration defaults and their environment variables for the throughput settings: the verify
 * workers per core, and view reads folded into multicalls (on unless turned off, a wrong value named).
 */
import { expect } from "chai";
import { defaultVerifyWorkers, loadConfig } from "../src/config";

const base = { rpcUrl: "http://127.0.0.1:8545", deployment: "deployment.json", "sender.dev": true };

describe("relayer configuration: verify workers and multicall reads", () => {
  it("runs one verify worker per core, at most 4, and none on a single core", () => {
    expect([1, 2, 3, 4, 8, 64].map(defaultVerifyWorkers)).to.deep.equal([0, 2, 3, 4, 4, 4]);
    expect(loadConfig({ overrides: base, env: { MACHINEPAY_VERIFY_WORKERS: "1" } }).verifyWorkers).to.equal(1);
  });

  it("folds view reads into multicalls by default; MACHINEPAY_MULTICALL_READS turns it off; a wrong value names the key", () => {
    expect(loadConfig({ overrides: base }).multicallReads).to.equal(true);
    expect(loadConfig({ overrides: base, env: { MACHINEPAY_MULTICALL_READS: "false" } }).multicallReads).to.equal(
      false,
    );
    expect(loadConfig({ overrides: base, env: { MACHINEPAY_MULTICALL_READS: "0" } }).multicallReads).to.equal(false);
    expect(loadConfig({ overrides: { ...base, multicallReads: false } }).multicallReads).to.equal(false);
    expect(() => loadConfig({ overrides: base, env: { MACHINEPAY_MULTICALL_READS: "yes" } })).to.throw(
      /multicallReads/,
    );
  });
});
