import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Wallet } from "ethers";
import { recoverTypedDataAddress } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import {
  type Address,
  hashVoucher,
  itemId,
  MemoryNonceBackend,
  machinePayDomain,
  signVoucher,
  Tab,
  voucherTypes,
} from "../src";
import { FileNonceBackend } from "../src/node";

// Hardhat's third well-known test key: public, never use it for value.
const KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const domain = machinePayDomain({ chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" });
const account = privateKeyToAccount(KEY);
const base = {
  signer: account,
  device: account.address,
  domain,
  payee: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" as Address,
  token: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512" as Address,
  tabId: 1n,
  now: () => 1_800_000_000,
};

describe("sdk: tabs", () => {
  it("signs vouchers for the running cumulative total, one call per payment", async () => {
    const tab = new Tab({ ...base, backend: new MemoryNonceBackend() });
    const a = await tab.pay(100n);
    const b = await tab.pay(250n);
    const c = await tab.pay(1n);
    expect([a, b, c].map((v) => v.voucher.cumulative)).to.deep.equal([100n, 350n, 351n]);
    expect(await tab.cumulative()).to.equal(351n);
    const signer = await recoverTypedDataAddress({
      domain,
      types: voucherTypes,
      primaryType: "Voucher",
      message: c.voucher,
      signature: c.signature,
    });
    expect(signer).to.equal(account.address);
    expect(c.id).to.equal(itemId(hashVoucher(domain, c.voucher), account.address));
  });

  it("keeps concurrent pays consistent: totals strictly increase by each amount", async () => {
    const tab = new Tab({ ...base, backend: new MemoryNonceBackend() });
    const got = await Promise.all([5n, 7n, 11n, 13n].map((x) => tab.pay(x)));
    const totals = got.map((v) => v.voucher.cumulative).sort((x, y) => Number(x - y));
    expect(totals.at(-1)).to.equal(36n);
    expect(new Set(totals.map(String)).size).to.equal(4);
  });

  it("resumes from the stored total after a restart, never signing a lower total", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "machinepay-tab-")), "tabs.json");
    const first = new Tab({ ...base, backend: new FileNonceBackend(path) });
    await first.pay(40n);
    await first.pay(2n);
    const second = new Tab({ ...base, backend: new FileNonceBackend(path) });
    expect((await second.pay(8n)).voucher.cumulative).to.equal(50n);
  });

  it("signs the same voucher identically with viem and ethers", async () => {
    const voucher = { payee: base.payee, token: base.token, tabId: 9n, cumulative: 77n, deadline: 1n, maxFee: 3n };
    expect(await signVoucher({ signer: new Wallet(KEY), domain, voucher })).to.equal(
      await signVoucher({ signer: account, domain, voucher }),
    );
  });

  it("refuses a negative amount", () => {
    const tab = new Tab({ ...base, backend: new MemoryNonceBackend() });
    expect(() => tab.pay(-1n)).to.throw(RangeError, /negative/);
  });
});
