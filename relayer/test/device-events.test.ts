/**
 * `deviceEventOf` reads the registry's device events from a log's topics, without decoding it. Each
 * event that writes a device's word, built with viem's encoder from MachinePay's ABI with random
 * arguments, must give what viem's decoder says (the device, and the policy of an assignment); every
 * other MachinePay event must give nothing.
 */
import { randomBytes } from "node:crypto";
import { decodeMachinePayLog, machinePayAbi } from "@machinepay/sdk";
import { expect } from "chai";
import { type AbiEvent, encodeAbiParameters, encodeEventTopics, type Hex } from "viem";
import { deviceEventOf } from "../src/batcher";

const events = machinePayAbi.filter((x): x is AbiEvent & (typeof machinePayAbi)[number] => x.type === "event");
const WRITES_DEVICE = [
  "DeviceAssigned",
  "PaymentSettled",
  "VoucherSettled",
  "DevicePausedSet",
  "DeviceRevokedForever",
  "TabClosing",
];

/** A random value of an ABI parameter (the types MachinePay's events use). */
type Param = { name?: string; type: string; components?: readonly Param[] };
function value(p: Param): unknown {
  const { type } = p;
  if (type === "tuple") return Object.fromEntries(p.components!.map((c) => [c.name!, value(c)]));
  if (type === "address") return `0x${randomBytes(20).toString("hex")}`;
  if (type === "bool") return randomBytes(1)[0] % 2 === 0;
  if (type === "bytes32") return `0x${randomBytes(32).toString("hex")}`;
  if (type.endsWith("[]")) return [value({ ...p, type: type.slice(0, -2) }), value({ ...p, type: type.slice(0, -2) })];
  const bits = Number(type.replace(/^u?int/, "") || 256);
  if (type.startsWith("uint")) return BigInt(`0x${randomBytes(bits / 8).toString("hex")}`);
  throw new Error(`no random value for ${type}`);
}

describe("relayer: device events from log topics (deviceEventOf)", () => {
  it("names MachinePay's events that write a device's word", () => {
    const names = events.map((e) => e.name);
    for (const n of WRITES_DEVICE) expect(names).to.include(n);
  });

  for (const event of events) {
    it(`${event.name}: ${WRITES_DEVICE.includes(event.name) ? "the device (and policy) viem decodes" : "nothing"}`, () => {
      for (let run = 0; run < 20; run++) {
        const args = Object.fromEntries(event.inputs.map((i) => [i.name!, value(i as Param)]));
        const topics = encodeEventTopics({ abi: [event], eventName: event.name, args } as never) as Hex[];
        const dataInputs = event.inputs.filter((i) => !i.indexed);
        const data = encodeAbiParameters(
          dataInputs,
          dataInputs.map((i) => args[i.name!]),
        );
        const blockNumber = 1 + (randomBytes(2).readUInt16BE() % 10_000);
        const logIndex = randomBytes(1)[0];
        const log = {
          transactionHash: null,
          topics,
          data,
          blockNumber: `0x${blockNumber.toString(16)}` as Hex,
          logIndex: `0x${logIndex.toString(16)}` as Hex,
        };
        const got = deviceEventOf(log);
        if (!WRITES_DEVICE.includes(event.name)) {
          expect(got, event.name).to.equal(undefined);
          continue;
        }
        const decoded = decodeMachinePayLog({ ...log, address: "0x" } as never) as unknown as {
          args: Record<string, unknown>;
        };
        const a = decoded.args ?? (decoded as unknown as Record<string, unknown>);
        expect(got).to.deep.equal({
          device: (a.device as string).toLowerCase(),
          kind: event.name === "DeviceAssigned" ? "assigned" : "touched",
          ...(event.name === "DeviceAssigned" ? { policyId: Number(a.policyId) } : {}),
          blockNumber,
          logIndex,
        });
      }
    });
  }
});
