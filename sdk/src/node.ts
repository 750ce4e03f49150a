/**
 * Node-only parts of the SDK (file system). Import from "@machinepay/sdk/node"; the main entry
 * stays free of Node imports so it bundles for browsers.
 */
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import type { NonceBackend } from "./nonces";

/**
 * Nonces in one small JSON file (`{ "<key>": "<next nonce>" }`). Each save writes a temporary file,
 * fsyncs it and renames it over the old one, so a crash leaves either the old or the new file.
 */
export class FileNonceBackend implements NonceBackend {
  private values: Map<string, bigint> | undefined;

  constructor(readonly path: string) {}

  private async all(): Promise<Map<string, bigint>> {
    if (this.values) return this.values;
    let text: string | undefined;
    try {
      text = await readFile(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    const values = new Map<string, bigint>();
    if (text !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new Error(`nonce file ${this.path} is not valid JSON: restore it from a backup or move it away`);
      }
      for (const [k, v] of Object.entries(parsed as Record<string, string>)) values.set(k, BigInt(v));
    }
    this.values = values;
    return values;
  }

  async load(key: string) {
    return (await this.all()).get(key);
  }

  async save(key: string, value: bigint) {
    const values = await this.all();
    values.set(key, value);
    const body = JSON.stringify(Object.fromEntries([...values].map(([k, v]) => [k, v.toString()])), null, 2);
    await mkdir(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp`;
    const file = await open(tmp, "w");
    try {
      await file.writeFile(body);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, this.path);
  }
}
