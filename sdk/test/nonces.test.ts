import { spawn } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { MemoryNonceBackend, NonceManager } from "../src";
import { FileNonceBackend } from "../src/node";

const tempFile = async () => join(await mkdtemp(join(tmpdir(), "machinepay-nonces-")), "nonces.json");

describe("sdk: nonces", () => {
  it("hands out increasing, distinct nonces per device even to concurrent callers", async () => {
    const m = new NonceManager({ backend: new MemoryNonceBackend() });
    const got = await Promise.all(Array.from({ length: 50 }, () => m.reserve("0xA")));
    expect(new Set(got.map(String)).size).to.equal(50);
    expect([...got].sort((a, b) => Number(a - b))).to.deep.equal(Array.from({ length: 50 }, (_, i) => BigInt(i)));
    expect(await m.reserve("0xB")).to.equal(0n);
    expect(await m.reserve("0xa")).to.equal(50n); // keys are case-insensitive addresses
  });

  it("continues above every reserved nonce after a restart from the file", async () => {
    const path = await tempFile();
    const first = new NonceManager({ backend: new FileNonceBackend(path) });
    for (let i = 0; i < 5; i++) await first.reserve("0xDevice");
    const second = new NonceManager({ backend: new FileNonceBackend(path) });
    expect(await second.peek("0xDevice")).to.equal(5n);
    expect(await second.reserve("0xDevice")).to.equal(5n);
  });

  it("never reuses a nonce after the process is killed mid-reservation", async function () {
    this.timeout(60_000);
    const path = await tempFile();
    const child = spawn(
      process.execPath,
      ["-r", "ts-node/register/transpile-only", join(__dirname, "nonce-child.ts"), path],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    await new Promise<void>((resolve) => {
      child.stdout.on("data", (d) => {
        out += d;
        if (out.split("\n").length > 200) resolve();
      });
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    const handedOut = out
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => BigInt(l));
    const highest = [...handedOut].sort((a, b) => (a < b ? -1 : 1)).at(-1)!;
    const after = new NonceManager({ backend: new FileNonceBackend(path) });
    const next = await after.reserve("0xDevice");
    expect(next > highest, `next nonce ${next} must be above ${highest}, the highest handed out before the crash`).to.be
      .true;
  });

  it("refuses a corrupt nonce file with a message saying what to do", async () => {
    const path = await tempFile();
    await writeFile(path, "{not json");
    const m = new NonceManager({ backend: new FileNonceBackend(path) });
    let error: unknown;
    try {
      await m.reserve("0xDevice");
    } catch (e) {
      error = e;
    }
    expect(String(error)).to.match(/not valid JSON/);
    expect(await readFile(path, "utf8")).to.equal("{not json"); // nothing overwritten
  });
});
