import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { type Hex, keccak256, recoverTransactionAddress, type TransactionSerializable } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { accountOf, loadSender, transactionHash } from "../src/chain/sender";
import { keccakReady } from "../src/keccak";

const hex = (n: number) => `0x${randomBytes(n).toString("hex")}` as Hex;

/** Transactions of every type the relayer could send, with calldata from empty to a full batch's. */
function randomTransaction(i: number): TransactionSerializable {
  const base = {
    to: hex(20),
    nonce: i * 7919,
    gas: BigInt(21_000 + i * 1_000),
    data: hex([0, 1, 31, 32, 33, 1_000, 80_132][i % 7]),
    value: i % 3 === 0 ? 0n : BigInt(i) * 10n ** 15n,
  };
  const chainId = [1, 31337, 8453, 11155111][i % 4];
  if (i % 5 === 0) return { ...base, chainId, type: "legacy", gasPrice: BigInt(1 + i) * 10n ** 9n };
  if (i % 5 === 1) return { ...base, chainId, type: "eip2930", gasPrice: 2n * 10n ** 9n, accessList: [] };
  return {
    ...base,
    chainId,
    type: "eip1559",
    maxFeePerGas: BigInt(3 + i) * 10n ** 9n,
    maxPriorityFeePerGas: BigInt(1 + (i % 3)) * 10n ** 9n,
  };
}

describe("relayer: chain/sender (native transaction signing)", function () {
  this.timeout(60_000);
  before(() => keccakReady);

  it("signs every transaction to the very bytes viem's account signs, and hashes them as viem does", async () => {
    for (let i = 0; i < 60; i++) {
      const key = hex(32);
      const tx = randomTransaction(i);
      const ours = await accountOf(key).signTransaction(tx);
      const viems = await privateKeyToAccount(key).signTransaction(tx);
      expect(ours, `transaction ${i} (${tx.type})`).to.equal(viems);
      expect(transactionHash(ours)).to.equal(keccak256(ours));
      expect(await recoverTransactionAddress({ serializedTransaction: ours as never })).to.equal(
        privateKeyToAccount(key).address,
      );
    }
  });

  it("keeps the rest of viem's account: address, message signing", async () => {
    const key = hex(32);
    const ours = accountOf(key);
    const viems = privateKeyToAccount(key);
    expect(ours.address).to.equal(viems.address);
    expect(await ours.signMessage({ message: "machinepay" })).to.equal(
      await viems.signMessage({ message: "machinepay" }),
    );
  });

  it("loads a key file into an account that signs the same way", async () => {
    const key = hex(32);
    const dir = mkdtempSync(join(tmpdir(), "machinepay-sender-"));
    const file = join(dir, "sender.key");
    writeFileSync(file, `${key.slice(2)}\n`, { mode: 0o600 });
    const { account, source } = loadSender({ keyFile: file, passphraseEnv: "X", dev: false }, {});
    expect(source).to.equal("key file");
    const tx = randomTransaction(2);
    expect(await account.signTransaction(tx)).to.equal(await privateKeyToAccount(key).signTransaction(tx));
  });
});
