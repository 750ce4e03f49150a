import { loadFixture } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { BaseWallet, Signer } from "ethers";
import { ethers, network } from "hardhat";
import { hashTypedData, recoverAddress } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import {
  type Address,
  type DeviceProof,
  ENROLLMENT_TYPE,
  enrollmentTypes,
  type Hex,
  machinePayDomain,
  type PackedPayment,
  type PaymentSigner,
  packPayment,
  signEnrollment,
  signPayment as signPaymentWith,
} from "../sdk/src";
import {
  type OrderFields,
  onboardingArgs,
  onboardingOrder,
  revocationArgs,
  revocationOrder,
  signOrder,
} from "./admin-helpers";
import { deployFixture } from "./fixtures";
import {
  assignDevices,
  domainOf,
  enrollment,
  NO_PROOF,
  newDevices,
  payment,
  policyParams,
  registerDevice,
  signPayment,
} from "./helpers";
import { SECP256K1_N, SECP256K1_N_HALF, splitVs, word } from "./settle-helpers";

// Hardhat's well-known test key #9: public, never use it for value.
const LOCAL_KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";

/**
 * deployFixture with three parties: ownerA (the owner, policies 1 and 2), ownerB (payee2, policy 3)
 * and an attacker (the stranger, policy 4) who sees every pending transaction but holds no device key.
 */
async function enrollmentFixture() {
  const f = await deployFixture();
  const { pay, owner: ownerA, payee2: ownerB, stranger: attacker, usdcAddress } = f;
  await pay.connect(ownerA).createPolicy(policyParams(usdcAddress));
  await pay.connect(ownerA).createPolicy(policyParams(usdcAddress));
  await pay.connect(ownerB).createPolicy(policyParams(usdcAddress));
  await pay.connect(attacker).createPolicy(policyParams(usdcAddress, { lifetimeMax: 0 }));
  const [device, other] = newDevices(2);
  const domain = await domainOf(pay);
  let nonce = 100n;
  /** onboardBySignature of an order `signer` signs for itself, submitted by the relayer. */
  const onboard = async (signer: Signer, devices: string[], proofs: DeviceProof[], fields: OrderFields = {}) => {
    const order = await onboardingOrder(signer, usdcAddress, devices, { nonce: ++nonce, ...fields });
    return pay
      .connect(f.relayer)
      .onboardBySignature(...onboardingArgs(order, proofs, await signOrder(pay, signer, order)));
  };
  return { ...f, ownerA, ownerB, attacker, device, other, domain, onboard };
}
type Fixture = Awaited<ReturnType<typeof enrollmentFixture>>;

/**
 * The proof's malleated twin (s' = n - s, v flipped) packed as EIP-2098 would: n - s is above n/2
 * and almost always needs bit 255, so the contract reads another (s, v) from it. See the test of
 * s above n/2 below for a twin that the compact form can carry.
 */
function malleated(proof: DeviceProof): DeviceProof {
  const { s, vBit } = splitVs(proof.vs);
  return { r: proof.r, vs: word((SECP256K1_N - s) | ((1n - vBit) << 255n)) };
}

/** Every proof a front-runner without the key can bring for binding `device` to itself. */
async function attackerProofs(f: Fixture, device: BaseWallet) {
  const [attackersKey] = newDevices(1);
  const copied = await enrollment(f.pay, device, f.ownerA); // from the owner's pending transaction
  return {
    missing: NO_PROOF,
    copied,
    "own key": await enrollment(f.pay, attackersKey, f.attacker),
    "random words": { r: word(BigInt(ethers.hexlify(ethers.randomBytes(32)))), vs: word(1234n) },
    "copied, malleated": malleated(copied),
  } satisfies Record<string, DeviceProof>;
}

describe("device enrollment (proof of possession)", () => {
  describe("a front-runner without the key", () => {
    it("cannot bind it with registerDevice, assignDevices or onboardBySignature, whatever proof it brings", async () => {
      const f = await loadFixture(enrollmentFixture);
      const { pay, attacker, device, usdcAddress, onboard } = f;
      for (const [name, proof] of Object.entries(await attackerProofs(f, device))) {
        await expect(pay.connect(attacker).registerDevice(device.address, policyParams(usdcAddress), proof), name)
          .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
          .withArgs(device.address, attacker.address);
        await expect(pay.connect(attacker).assignDevices(4, [device.address], [proof]), name)
          .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
          .withArgs(device.address, attacker.address);
        await expect(onboard(attacker, [device.address], [proof]), name)
          .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
          .withArgs(device.address, attacker.address);
      }
      expect((await pay.getDevice(device.address)).policyId).to.equal(0n);
      expect(await pay.policyCount()).to.equal(4);
    });

    it("cannot burn it: revoking needs the key bound, and the owner's registration then goes through", async () => {
      const f = await loadFixture(enrollmentFixture);
      const { pay, relayer, ownerA, attacker, device, usdcAddress } = f;
      await expect(pay.connect(attacker).revokeDevice(device.address))
        .to.be.revertedWithCustomError(pay, "DeviceNotRegistered")
        .withArgs(device.address);
      const order = await revocationOrder(attacker, [device.address]);
      await expect(
        pay.connect(relayer).revokeBySignature(...revocationArgs(order, await signOrder(pay, attacker, order))),
      )
        .to.be.revertedWithCustomError(pay, "DeviceNotRegistered")
        .withArgs(device.address);

      // The owner's transaction the attacker saw lands after all of that and binds the key.
      await expect(registerDevice(pay, ownerA, device, policyParams(usdcAddress)))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 5);
      // Bound to the owner, it stays out of the attacker's reach.
      await expect(pay.connect(attacker).revokeDevice(device.address))
        .to.be.revertedWithCustomError(pay, "NotDeviceOwner")
        .withArgs(device.address, attacker.address);
      const again = await revocationOrder(attacker, [device.address], { nonce: 2n });
      await expect(
        pay.connect(relayer).revokeBySignature(...revocationArgs(again, await signOrder(pay, attacker, again))),
      )
        .to.be.revertedWithCustomError(pay, "NotDeviceOwner")
        .withArgs(device.address, attacker.address);
      expect((await pay.headroom(device.address)).status).to.equal(0n);
    });

    it("cannot turn the owner's own signed onboarding against it: submitting it first only does what the owner signed", async () => {
      const f = await loadFixture(enrollmentFixture);
      const { pay, ownerA, attacker, device, usdcAddress } = f;
      const order = await onboardingOrder(ownerA, usdcAddress, [device.address]);
      const args = onboardingArgs(order, [await enrollment(pay, device, ownerA)], await signOrder(pay, ownerA, order));
      await pay.connect(attacker).onboardBySignature(...args);
      expect((await pay.getPolicy((await pay.getDevice(device.address)).policyId)).owner).to.equal(ownerA.address);
      // The order's owner is part of what is signed: renaming it breaks the signature.
      const [fields, devices, proofs, signature] = args;
      await expect(
        pay
          .connect(attacker)
          .onboardBySignature({ ...fields, owner: attacker.address as Address }, devices, proofs, signature),
      ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    });
  });

  describe("a proof names one owner", () => {
    it("a proof signed for owner A cannot bind the key to owner B, in any of the three functions", async () => {
      const { pay, ownerA, ownerB, device, usdcAddress, onboard } = await loadFixture(enrollmentFixture);
      const forA = await enrollment(pay, device, ownerA);
      await expect(pay.connect(ownerB).registerDevice(device.address, policyParams(usdcAddress), forA))
        .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
        .withArgs(device.address, ownerB.address);
      await expect(pay.connect(ownerB).assignDevices(3, [device.address], [forA]))
        .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
        .withArgs(device.address, ownerB.address);
      await expect(onboard(ownerB, [device.address], [forA]))
        .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
        .withArgs(device.address, ownerB.address);
      // The same proof binds the key to A, in each of them.
      const [d2, d3] = newDevices(2);
      await expect(pay.connect(ownerA).registerDevice(device.address, policyParams(usdcAddress), forA))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 5);
      await expect(pay.connect(ownerA).assignDevices(1, [d2.address], [await enrollment(pay, d2, ownerA)]))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(d2.address, 1);
      await expect(onboard(ownerA, [d3.address], [await enrollment(pay, d3, ownerA)]))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(d3.address, 6);
    });

    it("a proof is bound to this chain and this contract", async () => {
      const { pay, ownerA, device, usdcAddress } = await loadFixture(enrollmentFixture);
      const { chainId } = await ethers.provider.getNetwork();
      const payAddress = (await pay.getAddress()) as Address;
      const other = await ethers.deployContract("MachinePay", [1]);
      for (const domain of [
        machinePayDomain({ chainId: chainId + 1n, verifyingContract: payAddress }),
        machinePayDomain({ chainId, verifyingContract: (await other.getAddress()) as Address }),
      ]) {
        const proof = await signEnrollment({ signer: device, domain, owner: ownerA.address as Address });
        await expect(pay.connect(ownerA).registerDevice(device.address, policyParams(usdcAddress), proof))
          .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
          .withArgs(device.address, ownerA.address);
      }
    });
  });

  describe("moving a key between the owner's own policies", () => {
    it("needs no proof in registerDevice, assignDevices or onboardBySignature, and keeps the key's nonces", async () => {
      const f = await loadFixture(enrollmentFixture);
      const { pay, relayer, ownerA, payee, device, usdcAddress, onboard } = f;
      await assignDevices(pay, ownerA, 1, [device]);
      const paid = await signPayment(
        pay,
        device,
        await payment({ payee: payee.address as Address, token: usdcAddress }),
      );
      await pay.connect(relayer).settle(usdcAddress, [paid], ethers.ZeroAddress);

      await expect(pay.connect(ownerA).assignDevices(2, [device.address], [NO_PROOF]))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 2);
      await expect(pay.connect(ownerA).registerDevice(device.address, policyParams(usdcAddress), NO_PROOF))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 5);
      await expect(onboard(ownerA, [device.address], [NO_PROOF], { policyId: 1 }))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 1);
      await expect(onboard(ownerA, [device.address], [NO_PROOF]))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 6);
      const state = await pay.getDevice(device.address);
      expect([state.policyId, state.lifetimeSpent, state.nonceWindow]).to.deep.equal([6n, 1_000_000n, 1n]);
      // The already-settled payment stays settled.
      const [reasons] = await pay.preview.staticCall(usdcAddress, [paid], ethers.ZeroAddress);
      expect(reasons[0]).to.equal(14n); // NonceUsed
    });

    it("a batch may mix keys new to the owner (proof checked) and keys it already holds (proof ignored)", async () => {
      const { pay, ownerA, device, other } = await loadFixture(enrollmentFixture);
      await assignDevices(pay, ownerA, 1, [device]);
      const [fresh] = newDevices(1);
      await expect(
        pay
          .connect(ownerA)
          .assignDevices(2, [device.address, fresh.address], [NO_PROOF, await enrollment(pay, fresh, ownerA)]),
      )
        .to.emit(pay, "DeviceAssigned")
        .withArgs(fresh.address, 2);
      // One bad proof for a new key reverts the whole call.
      await expect(pay.connect(ownerA).assignDevices(1, [device.address, other.address], [NO_PROOF, NO_PROOF]))
        .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
        .withArgs(other.address, ownerA.address);
      expect((await pay.getDevice(device.address)).policyId).to.equal(2n);
    });
  });

  describe("argument checks", () => {
    it("LengthMismatch when devices and proofs differ in length, in assignDevices and onboardBySignature", async () => {
      const { pay, ownerA, device, other, onboard } = await loadFixture(enrollmentFixture);
      const proofs = [await enrollment(pay, device, ownerA), await enrollment(pay, other, ownerA)];
      await expect(pay.connect(ownerA).assignDevices(1, [device.address, other.address], [proofs[0]]))
        .to.be.revertedWithCustomError(pay, "LengthMismatch")
        .withArgs(2, 1);
      await expect(pay.connect(ownerA).assignDevices(1, [device.address], proofs))
        .to.be.revertedWithCustomError(pay, "LengthMismatch")
        .withArgs(1, 2);
      await expect(pay.connect(ownerA).assignDevices(1, [], [proofs[0]]))
        .to.be.revertedWithCustomError(pay, "LengthMismatch")
        .withArgs(0, 1);
      await expect(onboard(ownerA, [device.address, other.address], [proofs[1]], { nonce: 5n }))
        .to.be.revertedWithCustomError(pay, "LengthMismatch")
        .withArgs(2, 1);
      // The reverted onboarding spent no nonce.
      expect(await pay.ownerNonceUsed(ownerA.address, 5n)).to.equal(false);
      await expect(pay.connect(ownerA).assignDevices(1, [], [])).to.not.be.reverted;
    });

    it("a revoked key cannot be bound again, even with a fresh proof", async () => {
      const { pay, ownerA, ownerB, device, usdcAddress, onboard } = await loadFixture(enrollmentFixture);
      await assignDevices(pay, ownerA, 1, [device]);
      await pay.connect(ownerA).revokeDevice(device.address);
      for (const owner of [ownerA, ownerB]) {
        const fresh = await enrollment(pay, device, owner);
        await expect(pay.connect(owner).registerDevice(device.address, policyParams(usdcAddress), fresh))
          .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
          .withArgs(device.address);
        await expect(pay.connect(owner).assignDevices(owner === ownerA ? 2 : 3, [device.address], [fresh]))
          .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
          .withArgs(device.address);
        await expect(onboard(owner, [device.address], [fresh]))
          .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
          .withArgs(device.address);
      }
    });

    it("refuses a zero, r-zero, s-zero or v-flipped proof, and the copied proof's malleated twin", async () => {
      const { pay, ownerA, device, usdcAddress } = await loadFixture(enrollmentFixture);
      const good = await enrollment(pay, device, ownerA);
      const bad: Record<string, DeviceProof> = {
        zero: NO_PROOF,
        "r zero": { r: word(0n), vs: good.vs },
        "s zero": { r: good.r, vs: word(splitVs(good.vs).vBit << 255n) },
        "v flipped": { r: good.r, vs: word(BigInt(good.vs) ^ (1n << 255n)) },
        "malleated twin": malleated(good),
      };
      for (const [name, proof] of Object.entries(bad)) {
        await expect(pay.connect(ownerA).registerDevice(device.address, policyParams(usdcAddress), proof), name)
          .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
          .withArgs(device.address, ownerA.address);
      }
      await expect(pay.connect(ownerA).registerDevice(device.address, policyParams(usdcAddress), good)).to.emit(
        pay,
        "DeviceAssigned",
      );
    });

    // No real key's signature can be ground to an s between n/2 and 2^255 (the only high s a compact
    // proof can carry), so the key is made from the signature instead: ecrecover of (r, s, v) over the
    // enrollment digest is some key, whose address is then the "device". Plain ecrecover would bind it.
    it("refuses a proof with s above n/2 that plain ecrecover accepts, and takes s = n/2 and the low-s twin", async () => {
      const { pay, ownerA, domain, usdcAddress } = await loadFixture(enrollmentFixture);
      const digest = hashTypedData({
        domain,
        types: enrollmentTypes,
        primaryType: "Enrollment",
        message: { owner: ownerA.address as Address },
      });
      const r = (await enrollment(pay, newDevices(1)[0], ownerA)).r; // any valid x coordinate
      const keyOf = (s: bigint, vBit: bigint) =>
        recoverAddress({ hash: digest, signature: ethers.concat([r, word(s), ethers.toBeHex(27n + vBit, 1)]) as Hex });
      const compact = (s: bigint, vBit: bigint): DeviceProof => ({ r, vs: word(s | (vBit << 255n)) });

      const high = SECP256K1_N_HALF + 1n;
      const highKey = await keyOf(high, 0n);
      await expect(pay.connect(ownerA).registerDevice(highKey, policyParams(usdcAddress), compact(high, 0n)))
        .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
        .withArgs(highKey, ownerA.address);
      // Its low-s twin (n - s, v flipped) is the same key's signature, and binds it.
      expect(await keyOf(SECP256K1_N - high, 1n)).to.equal(highKey);
      await expect(
        pay.connect(ownerA).registerDevice(highKey, policyParams(usdcAddress), compact(SECP256K1_N - high, 1n)),
      )
        .to.emit(pay, "DeviceAssigned")
        .withArgs(highKey, 5);
      // s = n/2 exactly is the largest s accepted.
      const edgeKey = await keyOf(SECP256K1_N_HALF, 1n);
      await expect(
        pay.connect(ownerA).registerDevice(edgeKey, policyParams(usdcAddress), compact(SECP256K1_N_HALF, 1n)),
      )
        .to.emit(pay, "DeviceAssigned")
        .withArgs(edgeKey, 6);
    });
  });

  describe("sdk signers", () => {
    it("proofs from an ethers Wallet, a viem account and an eth_signTypedData_v4 function all bind their keys", async () => {
      const { pay, ownerA, relayer, payee, domain, usdcAddress } = await loadFixture(enrollmentFixture);
      const rpcAccount = (await ethers.getSigners())[8];
      const rawV4: PaymentSigner = async (typed) =>
        (await network.provider.send("eth_signTypedData_v4", [rpcAccount.address, JSON.stringify(typed)])) as Hex;
      const wallet = newDevices(1)[0];
      const viemAccount = privateKeyToAccount(LOCAL_KEY);
      const kinds: { name: string; device: string; signer: PaymentSigner }[] = [
        { name: "ethers Wallet", device: wallet.address, signer: wallet },
        { name: "viem LocalAccount", device: viemAccount.address, signer: viemAccount },
        { name: "eth_signTypedData_v4 function", device: rpcAccount.address, signer: rawV4 },
      ];
      const digest = hashTypedData({
        domain,
        types: enrollmentTypes,
        primaryType: "Enrollment",
        message: { owner: ownerA.address as Address },
      });
      const items: PackedPayment[] = [];
      for (const k of kinds) {
        const proof = await signEnrollment({ signer: k.signer, domain, owner: ownerA.address as Address });
        const { s, vBit } = splitVs(proof.vs);
        const signature = ethers.concat([proof.r, word(s), ethers.toBeHex(27n + vBit, 1)]) as Hex;
        expect(await recoverAddress({ hash: digest, signature }), k.name).to.equal(k.device);
        await expect(pay.connect(ownerA).assignDevices(1, [k.device], [proof]), k.name)
          .to.emit(pay, "DeviceAssigned")
          .withArgs(k.device, 1);
        const p = await payment({ payee: payee.address as Address, token: usdcAddress });
        items.push(packPayment(p, await signPaymentWith({ signer: k.signer, domain, payment: p })));
      }
      expect(ENROLLMENT_TYPE).to.equal("Enrollment(address owner)");
      // Each key, once bound, pays from the owner's escrow.
      const [reasons, devices] = await pay.connect(relayer).preview.staticCall(usdcAddress, items, ethers.ZeroAddress);
      expect(reasons.map(Number)).to.deep.equal([0, 0, 0]);
      expect(devices).to.deep.equal(kinds.map((k) => k.device));
    });
  });
});
