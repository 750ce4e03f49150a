import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { BaseWallet, Signer } from "ethers";
import { ethers } from "hardhat";
import { hashTypedData, recoverAddress } from "viem";
import {
  type Address,
  type DeviceProof,
  type Hex,
  ONBOARDING_TYPE,
  type Onboarding,
  onboardingTypes,
  type PolicyParams,
  REVOCATION_TYPE,
  type Revocation,
  revocationTypes,
  signTypedMessage,
  toCompactSignature,
} from "../sdk/src";
import { deployFixture } from "./fixtures";
import { domainOf, enrollmentFor, newDevices, payment, policyParams, signPayment, USDC } from "./helpers";

describe("fleet onboarding by owner signature", () => {
  async function fixture() {
    const f = await deployFixture();
    const domain = await domainOf(f.pay);
    const deadline = BigInt((await time.latest()) + 3600);
    const policy = policyParams(f.usdcAddress) as unknown as PolicyParams;
    // One signer for both owner messages: the owner's 65-byte EIP-712 signature (ECDSA for an EOA).
    const signOwner =
      <T extends Record<string, unknown>>(
        types: Parameters<typeof signTypedMessage>[0]["types"],
        primaryType: string,
      ) =>
      async (message: T, signer: Signer = f.owner): Promise<Hex> =>
        signTypedMessage({ signer, domain, types, primaryType, message });
    const signOnboarding = signOwner<Onboarding>(onboardingTypes, "Onboarding");
    const signRevocation = signOwner<Revocation>(revocationTypes, "Revocation");
    const order = (devices: BaseWallet[], over: Partial<Onboarding> = {}): Onboarding => ({
      owner: f.owner.address as Address,
      policyId: 0,
      policy,
      devices: devices.map((d) => d.address as Address),
      epoch: 0,
      nonce: 1n,
      deadline,
      ...over,
    });
    /** Each device's Enrollment proof for `owner` (the order's owner unless given). */
    const proofsOf = (devices: BaseWallet[], owner: string = f.owner.address) =>
      Promise.all(devices.map((d) => enrollmentFor(domain, d, owner)));
    const call = (o: Onboarding, proofs: DeviceProof[]) => {
      const { devices, ...rest } = o;
      return [rest, devices, proofs] as const;
    };
    const revocation = (devices: BaseWallet[], over: Partial<Revocation> = {}): Revocation => ({
      owner: f.owner.address as Address,
      devices: devices.map((d) => d.address as Address),
      epoch: 0,
      nonce: 7n,
      deadline,
      ...over,
    });
    const revokeCall = (r: Revocation) => {
      const { devices, ...rest } = r;
      return [rest, devices] as const;
    };
    return {
      ...f,
      domain,
      deadline,
      policy,
      signOnboarding,
      signRevocation,
      order,
      proofsOf,
      call,
      revocation,
      revokeCall,
    };
  }

  it("pins the Onboarding and Revocation type strings the contract hashes", () => {
    expect(ONBOARDING_TYPE).to.equal(
      "Onboarding(address owner,uint32 policyId,PolicyParams policy,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)" +
        "PolicyParams(address token,uint64 maxPerPayment,uint64 maxPerPeriod,uint32 periodLength,uint64 lifetimeMax,uint32 validFrom,uint32 validUntil,bool payeesRestricted)",
    );
    expect(REVOCATION_TYPE).to.equal(
      "Revocation(address owner,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)",
    );
    expect(ethers.TypedDataEncoder.from(onboardingTypes as never).encodeType("Onboarding")).to.equal(ONBOARDING_TYPE);
    expect(ethers.TypedDataEncoder.from(revocationTypes as never).encodeType("Revocation")).to.equal(REVOCATION_TYPE);
    expect(ethers.id(ONBOARDING_TYPE)).to.equal("0xe52073640580c544c5dab1c9d1b06eeb8fe8068e1b2bdf6fce9482756778abed");
    expect(ethers.id(REVOCATION_TYPE)).to.equal("0x39783dbe304049743ad787e762d07fdc59c53f808cc8736578c971538705f7c1");
  });

  it("creates a policy and assigns a fleet from one owner signature submitted by anyone", async () => {
    const { pay, relayer, owner, payee, usdcAddress, signOnboarding, order, proofsOf, call } =
      await loadFixture(fixture);
    const devices = newDevices(20);
    const o = order(devices);
    const signature = await signOnboarding(o);
    const proofs = await proofsOf(devices);
    const policyId = await pay.connect(relayer).onboardBySignature.staticCall(...call(o, proofs), signature);
    await expect(pay.connect(relayer).onboardBySignature(...call(o, proofs), signature))
      .to.emit(pay, "DeviceAssigned")
      .withArgs(devices[19].address, policyId);
    expect((await pay.getPolicy(policyId)).owner).to.equal(owner.address);
    for (const d of devices) expect((await pay.getDevice(d.address)).policyId).to.equal(policyId);
    expect(await pay.ownerNonceUsed(owner.address, 1n)).to.equal(true);
    // The onboarded devices pay from the owner's escrow.
    const item = await signPayment(
      pay,
      devices[3],
      await payment({ payee: payee.address as Address, token: usdcAddress }),
    );
    const [reasons] = await pay.preview.staticCall(usdcAddress, [item], ethers.ZeroAddress);
    expect(reasons[0]).to.equal(0n);
  });

  it("overwrites an existing policy of the signer and adds devices to it", async () => {
    const { pay, relayer, owner, usdcAddress, signOnboarding, order, proofsOf, call } = await loadFixture(fixture);
    await pay.connect(owner).createPolicy(policyParams(usdcAddress));
    const [d] = newDevices(1);
    const o = order([d], {
      policyId: 1,
      policy: policyParams(usdcAddress, { maxPerPayment: USDC(3) }) as unknown as PolicyParams,
    });
    await pay.connect(relayer).onboardBySignature(...call(o, await proofsOf([d])), await signOnboarding(o));
    expect((await pay.getPolicy(1)).maxPerPayment).to.equal(USDC(3));
    expect((await pay.getDevice(d.address)).policyId).to.equal(1n);
  });

  it("refuses a replayed, expired, tampered, stale-epoch or foreign-policy order", async () => {
    const { pay, relayer, owner, stranger, signOnboarding, order, proofsOf, call } = await loadFixture(fixture);
    const [d1, d2] = newDevices(2);
    const o = order([d1]);
    const signature = await signOnboarding(o);
    await pay.connect(relayer).onboardBySignature(...call(o, await proofsOf([d1])), signature);
    await expect(pay.connect(relayer).onboardBySignature(...call(o, await proofsOf([d1])), signature))
      .to.be.revertedWithCustomError(pay, "OwnerNonceUsed")
      .withArgs(owner.address, 1n);

    // Tampered: another device list, policy or owner than the one signed. The owner is named in the
    // order, so nothing recovers a made-up "owner": the signature does not verify.
    const o2 = order([d2], { nonce: 2n });
    const sig2 = await signOnboarding(o2);
    const tampered: Onboarding[] = [
      { ...o2, devices: [d1.address as Address] },
      { ...o2, policy: { ...o2.policy, maxPerPayment: o2.policy.maxPerPayment + 1n } },
      { ...o2, policyId: 1 },
      { ...o2, owner: stranger.address as Address },
    ];
    for (const t of tampered) {
      await expect(
        pay.connect(relayer).onboardBySignature(...call(t, await proofsOf([d2], t.owner)), sig2),
      ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    }
    expect(await pay.ownerNonceUsed(owner.address, 2n)).to.equal(false);
    expect((await pay.getDevice(d1.address)).policyId).to.equal(1n);

    const expired = order([d2], { nonce: 3n, deadline: BigInt(await time.latest()) });
    await expect(
      pay.connect(relayer).onboardBySignature(...call(expired, await proofsOf([d2])), await signOnboarding(expired)),
    ).to.be.revertedWithCustomError(pay, "SignatureExpired");

    await pay.connect(owner).freezeAll();
    const stale = order([d2], { nonce: 4n, epoch: 0 });
    await expect(
      pay.connect(relayer).onboardBySignature(...call(stale, await proofsOf([d2])), await signOnboarding(stale)),
    )
      .to.be.revertedWithCustomError(pay, "StaleEpoch")
      .withArgs(owner.address, 0, 1);
    const fresh = order([d2], { nonce: 4n, epoch: 1 });
    await pay.connect(relayer).onboardBySignature(...call(fresh, await proofsOf([d2])), await signOnboarding(fresh));
    expect((await pay.getDevice(d2.address)).policyId).to.not.equal(0n);

    const foreign = order([], { owner: stranger.address as Address, policyId: 1, nonce: 9n });
    await expect(pay.connect(relayer).onboardBySignature(...call(foreign, []), await signOnboarding(foreign, stranger)))
      .to.be.revertedWithCustomError(pay, "NotPolicyOwner")
      .withArgs(1, stranger.address);
  });

  it("refuses an order for one owner signed by another account: InvalidOwnerSignature", async () => {
    const { pay, relayer, stranger, signOnboarding, order, proofsOf, call } = await loadFixture(fixture);
    const [d] = newDevices(1);
    const o = order([d]); // names the owner
    await expect(
      pay.connect(relayer).onboardBySignature(...call(o, await proofsOf([d])), await signOnboarding(o, stranger)),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    expect((await pay.getDevice(d.address)).policyId).to.equal(0n);
  });

  it("revokes devices for good from one owner signature, and only the signer's", async () => {
    const {
      pay,
      relayer,
      owner,
      stranger,
      signOnboarding,
      signRevocation,
      order,
      proofsOf,
      call,
      revocation,
      revokeCall,
    } = await loadFixture(fixture);
    const devices = newDevices(3);
    const o = order(devices);
    await pay.connect(relayer).onboardBySignature(...call(o, await proofsOf(devices)), await signOnboarding(o));

    const rv = revocation([devices[0], devices[1]]);
    await expect(pay.connect(relayer).revokeBySignature(...revokeCall(rv), await signRevocation(rv)))
      .to.emit(pay, "DeviceRevokedForever")
      .withArgs(devices[1].address, owner.address);
    expect((await pay.headroom(devices[0].address)).status).to.equal(3n); // DeviceRevoked
    expect((await pay.headroom(devices[2].address)).status).to.equal(0n);
    expect(await pay.ownerNonceUsed(owner.address, 7n)).to.equal(true);

    // The stranger signing for itself owns none of them.
    const bad = revocation([devices[2]], { owner: stranger.address as Address, nonce: 1n });
    await expect(pay.connect(relayer).revokeBySignature(...revokeCall(bad), await signRevocation(bad, stranger)))
      .to.be.revertedWithCustomError(pay, "NotDeviceOwner")
      .withArgs(devices[2].address, stranger.address);
    // The stranger signing in the owner's name does not verify; neither does a tampered device list.
    const forged = revocation([devices[2]], { nonce: 2n });
    await expect(
      pay.connect(relayer).revokeBySignature(...revokeCall(forged), await signRevocation(forged, stranger)),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    const signed = revocation([devices[0]], { nonce: 3n });
    const [fields] = revokeCall(signed);
    await expect(
      pay.connect(relayer).revokeBySignature(fields, [devices[2].address], await signRevocation(signed)),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    expect((await pay.headroom(devices[2].address)).status).to.equal(0n);
  });

  it("refuses a malformed owner signature with InvalidOwnerSignature (empty, zero, compact 64-byte, high s)", async () => {
    const { pay, relayer, signOnboarding, order, call } = await loadFixture(fixture);
    const o = order([]);
    const good = await signOnboarding(o);
    const { r, vs } = toCompactSignature(good);
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const s = BigInt(`0x${good.slice(66, 130)}`);
    const v = Number.parseInt(good.slice(130, 132), 16);
    const highS = ethers.concat([good.slice(0, 66), ethers.toBeHex(n - s, 32), ethers.toBeHex(v === 27 ? 28 : 27, 1)]);
    // The high-s twin recovers the owner under plain ecrecover: the contract must refuse it anyway.
    const digest = hashTypedData({
      domain: await domainOf(pay),
      types: onboardingTypes,
      primaryType: "Onboarding",
      message: o,
    });
    expect(await recoverAddress({ hash: digest, signature: highS as Hex })).to.equal(o.owner);
    for (const signature of ["0x", ethers.ZeroHash, `0x${"00".repeat(65)}`, ethers.concat([r, vs]), highS]) {
      await expect(
        pay.connect(relayer).onboardBySignature(...call(o, []), signature),
        `signature ${signature.length} chars`,
      ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    }
    await pay.connect(relayer).onboardBySignature(...call(o, []), good);
  });
});
