import { loadFixture } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers, network } from "hardhat";
import { createWalletClient, custom } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import {
  type Address,
  type DeviceProof,
  type Hex,
  hashPayment,
  type PaymentSigner,
  packPayment,
  paymentTypes,
  signEnrollment,
  signPayment,
  ZERO_REF,
} from "../sdk/src";
import { deployFixture } from "./fixtures";
import { domainOf, policyParams, USDC } from "./helpers";

// Hardhat's well-known test key #9: public, never use it for value.
const LOCAL_KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";

describe("sdk signers settle on chain", () => {
  async function fixture() {
    const f = await deployFixture();
    const signers = await ethers.getSigners();
    return { ...f, rpcAccount: signers[6], ethersAccount: signers[7] };
  }

  it("enrolls keys and settles payments signed by a viem account, a viem WalletClient, an ethers Signer and a raw v4 function", async () => {
    const { pay, usdcAddress, owner, payee, rpcAccount, ethersAccount } = await loadFixture(fixture);
    const domain = await domainOf(pay);
    const viemAccount = privateKeyToAccount(LOCAL_KEY);
    const walletClient = createWalletClient({
      account: rpcAccount.address as Address,
      chain: hardhat,
      transport: custom(network.provider),
    });
    const v4Device = new ethers.Wallet(ethers.id("machinepay-v4-device"));
    // The raw signer only sees eth_signTypedData_v4 JSON, as a secure element or another language would.
    const rawV4: PaymentSigner = async (typed) =>
      (await network.provider.send("eth_signTypedData_v4", [rpcAccount.address, JSON.stringify(typed)])) as Hex;

    const kinds: { name: string; device: string; signer: PaymentSigner }[] = [
      { name: "viem LocalAccount", device: viemAccount.address, signer: viemAccount },
      { name: "viem WalletClient (JSON-RPC account)", device: rpcAccount.address, signer: walletClient },
      { name: "ethers Signer", device: ethersAccount.address, signer: ethersAccount },
      { name: "ethers Wallet", device: v4Device.address, signer: v4Device },
      { name: "raw eth_signTypedData_v4", device: rpcAccount.address, signer: rawV4 },
    ];
    const id = await pay.connect(owner).createPolicy.staticCall(policyParams(usdcAddress));
    await pay.connect(owner).createPolicy(policyParams(usdcAddress));
    // Each kind signs its key's Enrollment too; a key signed by two kinds gives the same proof.
    const proofs = new Map<string, DeviceProof>();
    for (const k of kinds) {
      const proof = await signEnrollment({ signer: k.signer, domain, owner: owner.address as Address });
      const earlier = proofs.get(k.device);
      if (earlier) expect(proof, k.name).to.deep.equal(earlier);
      proofs.set(k.device, proof);
    }
    await pay.connect(owner).assignDevices(id, [...proofs.keys()], [...proofs.values()]);

    const deadline = BigInt((await ethers.provider.getBlock("latest"))!.timestamp + 600);
    const items = [];
    for (const [i, k] of kinds.entries()) {
      const payment = {
        payee: payee.address as Address,
        token: usdcAddress,
        amount: USDC(1) + BigInt(i),
        nonce: BigInt(i),
        deadline,
        maxFee: 0n,
        ref: ZERO_REF,
      };
      const signature = await signPayment({ signer: k.signer, domain, payment });
      // Same payment, same key: same digest and same signature (a retry re-sends the same bytes).
      expect(await signPayment({ signer: k.signer, domain, payment }), k.name).to.equal(signature);
      expect(hashPayment(domain, payment)).to.equal(
        ethers.TypedDataEncoder.hash(domain, { Payment: [...paymentTypes.Payment] }, payment),
      );
      items.push(packPayment(payment, signature));
    }
    const [reasons, devices] = await pay.preview.staticCall(usdcAddress, items, ethers.ZeroAddress);
    expect(reasons.map(Number)).to.deep.equal(kinds.map(() => 0));
    expect(devices).to.deep.equal(kinds.map((k) => k.device));
    await pay.settle(usdcAddress, items, ethers.ZeroAddress);
    expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(5) + 0n + 1n + 2n + 3n + 4n);
  });
});
