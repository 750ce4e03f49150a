/**
 * Device Enrollment proofs: a device key's EIP-712 `Enrollment(owner)` signature, which binding the
 * key to an owner needs. The owner either holds the device's key file (the proof is signed here) or
 * gets a proof file the device wrote with `machinepay device enroll`; every proof is checked
 * locally before it goes on chain, so a wrong owner or deployment fails with a clear message.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import {
  type Address,
  type DeviceProof,
  enrollmentTypes,
  type MachinePayDomain,
  machinePayDomain,
  signEnrollment,
} from "@machinepay/sdk";
import { compactSignatureToSignature, getAddress, isAddress, recoverTypedDataAddress, serializeSignature } from "viem";
import type { Deployment } from "../config";
import { loadKey } from "./keys";
import { UsageError } from "./output";

/** What `machinepay device enroll` writes, and `device register --proof` / `onboard` read. */
export type ProofFile = {
  device: Address;
  owner: Address;
  chainId: number;
  machinePay: Address;
  r: `0x${string}`;
  vs: `0x${string}`;
};

export const domainOf = (d: Deployment): MachinePayDomain =>
  machinePayDomain({ chainId: d.chainId, verifyingContract: getAddress(d.machinePay) });

export type EnrolledDevice = { device: Address; proof: DeviceProof; source: string };

const KEY_LINE = /^(0x)?[0-9a-fA-F]{64}$/;

/** Sign a device's enrollment for `owner` with its key file. */
export async function enrollFromKeyFile(keyFile: string, owner: Address, d: Deployment): Promise<EnrolledDevice> {
  const device = await loadKey({ keyFile }, { whose: "the device's", allowDev: false });
  const proof = await signEnrollment({ signer: device, domain: domainOf(d), owner });
  return { device: device.address, proof, source: keyFile };
}

/** Check a proof file's fields and signature against the owner and deployment. */
export async function checkProof(
  json: unknown,
  owner: Address,
  d: Deployment,
  source: string,
): Promise<EnrolledDevice> {
  const p = json as Partial<ProofFile>;
  const hex32 = (v: unknown) => typeof v === "string" && /^0x[0-9a-fA-F]{64}$/.test(v);
  if (!p || typeof p.device !== "string" || !isAddress(p.device, { strict: false }) || !hex32(p.r) || !hex32(p.vs)) {
    throw new UsageError(
      `${source} is not a proof file: want { device, owner, chainId, machinePay, r, vs } (from \`machinepay device enroll\`)`,
    );
  }
  if (p.owner && getAddress(p.owner) !== getAddress(owner)) {
    throw new UsageError(
      `${source} enrolls ${p.device} for owner ${p.owner}, not ${owner}: have the device enroll for ${owner}`,
    );
  }
  if (
    (p.chainId !== undefined && p.chainId !== d.chainId) ||
    (p.machinePay && getAddress(p.machinePay) !== getAddress(d.machinePay))
  ) {
    throw new UsageError(
      `${source} was signed for chain ${p.chainId} / ${p.machinePay}, not this deployment: enroll again`,
    );
  }
  const signature = serializeSignature(
    compactSignatureToSignature({ r: p.r as `0x${string}`, yParityAndS: p.vs as `0x${string}` }),
  );
  const signer = await recoverTypedDataAddress({
    domain: domainOf(d),
    types: enrollmentTypes,
    primaryType: "Enrollment",
    message: { owner },
    signature,
  });
  if (signer !== getAddress(p.device)) {
    throw new UsageError(
      `${source}: the signature is not ${p.device}'s Enrollment for owner ${owner} on this deployment: enroll again`,
    );
  }
  return { device: getAddress(p.device), proof: { r: p.r as `0x${string}`, vs: p.vs as `0x${string}` }, source };
}

/** A key file (signed here) or a proof file (checked), told apart by content. */
export async function enrollFromFile(path: string, owner: Address, d: Deployment): Promise<EnrolledDevice> {
  let text: string;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (KEY_LINE.test(text)) return enrollFromKeyFile(path, owner, d);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`${path} is neither a key file (one hex line) nor a proof file (JSON)`);
  }
  return checkProof(json, owner, d, path);
}

/**
 * A device list file: JSON (an array of proof objects or of paths), or text with one path per line
 * (a device key file or a proof file; `#` starts a comment). Paths are relative to the list file.
 */
export async function enrollFromList(listFile: string, owner: Address, d: Deployment): Promise<EnrolledDevice[]> {
  let text: string;
  try {
    text = readFileSync(listFile, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read the device list ${listFile}: ${(e as Error).message}`);
  }
  const base = dirname(listFile);
  let entries: unknown[];
  try {
    const json = JSON.parse(text);
    if (!Array.isArray(json)) throw new UsageError(`${listFile}: a JSON device list is an array`);
    entries = json;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    entries = text
      .split("\n")
      .map((l) => l.replace(/#.*/, "").trim())
      .filter(Boolean);
  }
  if (entries.length === 0) throw new UsageError(`${listFile} lists no devices`);
  const out: EnrolledDevice[] = [];
  for (const [i, entry] of entries.entries()) {
    out.push(
      typeof entry === "string"
        ? await enrollFromFile(resolve(base, entry), owner, d)
        : await checkProof(entry, owner, d, `${listFile} entry ${i}`),
    );
  }
  const seen = new Set<string>();
  for (const e of out) {
    if (seen.has(e.device)) throw new UsageError(`${listFile} lists ${e.device} twice`);
    seen.add(e.device);
  }
  return out;
}
