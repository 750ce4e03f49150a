import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers } from "hardhat";
import {
  type Address,
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
import { domainOf, newDevices, payment, policyParams, signPayment, USDC } from "./helpers";

describe("fleet onboarding by owner signature", () => {
  async function fixture() {
    const f = await deployFixture();
    const domain = await domainOf(f.pay);
    const deadline = BigInt((await time.latest()) + 3600);
    const policy = policyParams(f.usdcAddress) as unknown as PolicyParams;
    // One signer for both owner messages: EIP-2098 (r, vs) of the owner's EIP-712 signature.
    const signOwner =
      <T extends Record<string, unknown>>(
        types: Parameters<typeof signTypedMessage>[0]["types"],
        primaryType: string,
      ) =>
      async (message: T, signer = f.owner) =>
        toCompactSignature(await signTypedMessage({ signer, domain, types, primaryType, message }));
    const signOnboarding = signOwner<Onboarding>(onboardingTypes, "Onboarding");
    const signRevocation = signOwner<Revocation>(revocationTypes, "Revocation");
    const order = (devices: Address[], over: Partial<Onboarding> = {}): Onboarding => ({
      policyId: 0,
      policy,
      devices,
      epoch: 0,
      nonce: 1n,
      deadline,
      ...over,
    });
    const call = (o: Onboarding) => {
      const { devices, ...rest } = o;
      return [rest, devices] as const;
    };
    return { ...f, domain, deadline, policy, signOnboarding, signRevocation, order, call };
  }

  it("pins the Onboarding and Revocation type strings the contract hashes", () => {
    expect(ONBOARDING_TYPE).to.equal(
      "Onboarding(uint32 policyId,PolicyParams policy,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)" +
        "PolicyParams(address token,uint64 maxPerPayment,uint64 maxPerPeriod,uint32 periodLength,uint64 lifetimeMax,uint32 validFrom,uint32 validUntil,bool payeesRestricted)",
    );
    expect(ethers.TypedDataEncoder.from(onboardingTypes as never).encodeType("Onboarding")).to.equal(ONBOARDING_TYPE);
    expect(ethers.TypedDataEncoder.from(revocationTypes as never).encodeType("Revocation")).to.equal(REVOCATION_TYPE);
    expect(ethers.id(ONBOARDING_TYPE)).to.equal("0x39d7639f50e5859ce7197e45f72ff3afa8743a88029385a324bbdeeff26fc14e");
    expect(ethers.id(REVOCATION_TYPE)).to.equal("0xc57ff5b6f5c0202fd91550d4fde1ead22308904541274a4780f950d0023e095f");
  });

  it("creates a policy and assigns a fleet from one owner signature submitted by anyone", async () => {
    const { pay, relayer, owner, payee, usdcAddress, signOnboarding, order, call } = await loadFixture(fixture);
    const devices = newDevices(20);
    const o = order(devices.map((d) => d.address as Address));
    const { r, vs } = await signOnboarding(o);
    const policyId = await pay.connect(relayer).onboardBySignature.staticCall(...call(o), r, vs);
    await expect(pay.connect(relayer).onboardBySignature(...call(o), r, vs))
      .to.emit(pay, "DeviceAssigned")
      .withArgs(devices[19].address, policyId, owner.address);
    expect((await pay.getPolicy(policyId)).owner).to.equal(owner.address);
    for (const d of devices) expect((await pay.getDevice(d.address)).policyId).to.equal(policyId);
    expect(await pay.ownerNonceUsed(owner.address, 1n)).to.equal(true);
    // The onboarded devices pay from the owner's escrow.
    const item = await signPayment(
      pay,
      devices[3],
      await payment({ payee: payee.address as Address, token: usdcAddress }),
    );
    const [reasons] = await pay.settle.staticCall(usdcAddress, [item], ethers.ZeroAddress);
    expect(reasons[0]).to.equal(0n);
  });

  it("overwrites an existing policy of the signer and adds devices to it", async () => {
    const { pay, relayer, owner, usdcAddress, signOnboarding, order, call } = await loadFixture(fixture);
    await pay.connect(owner).createPolicy(policyParams(usdcAddress));
    const [d] = newDevices(1);
    const o = order([d.address as Address], {
      policyId: 1,
      policy: policyParams(usdcAddress, { maxPerPayment: USDC(3) }) as unknown as PolicyParams,
    });
    const { r, vs } = await signOnboarding(o);
    await pay.connect(relayer).onboardBySignature(...call(o), r, vs);
    expect((await pay.getPolicy(1)).maxPerPayment).to.equal(USDC(3));
    expect((await pay.getDevice(d.address)).policyId).to.equal(1n);
  });

  it("refuses a replayed, expired, tampered, stale-epoch or foreign-policy order", async () => {
    const { pay, relayer, owner, stranger, signOnboarding, order, call } = await loadFixture(fixture);
    const [d1, d2] = newDevices(2);
    const o = order([d1.address as Address]);
    const { r, vs } = await signOnboarding(o);
    await pay.connect(relayer).onboardBySignature(...call(o), r, vs);
    await expect(pay.connect(relayer).onboardBySignature(...call(o), r, vs))
      .to.be.revertedWithCustomError(pay, "OwnerNonceUsed")
      .withArgs(owner.address, 1n);

    // Tampered: another device list than the one signed recovers another "owner", whose epoch and
    // nonce checks pass but who owns no escrow; assigning the devices to it must not touch ours.
    const o2 = order([d2.address as Address], { nonce: 2n });
    const sig2 = await signOnboarding(o2);
    await pay
      .connect(relayer)
      .onboardBySignature(...call({ ...o2, devices: [d1.address as Address] }), sig2.r, sig2.vs)
      .then(
        () => expect.fail("a device of the owner was taken by a forged order"),
        (e: Error) => expect(String(e)).to.match(/DeviceOwnedByAnother/),
      );

    const expired = order([d2.address as Address], { nonce: 3n, deadline: BigInt(await time.latest()) });
    const sig3 = await signOnboarding(expired);
    await expect(
      pay.connect(relayer).onboardBySignature(...call(expired), sig3.r, sig3.vs),
    ).to.be.revertedWithCustomError(pay, "SignatureExpired");

    await pay.connect(owner).freezeAll();
    const stale = order([d2.address as Address], { nonce: 4n, epoch: 0 });
    const sig4 = await signOnboarding(stale);
    await expect(pay.connect(relayer).onboardBySignature(...call(stale), sig4.r, sig4.vs))
      .to.be.revertedWithCustomError(pay, "StaleEpoch")
      .withArgs(owner.address, 0, 1);
    const fresh = order([d2.address as Address], { nonce: 4n, epoch: 1 });
    const sig5 = await signOnboarding(fresh);
    await pay.connect(relayer).onboardBySignature(...call(fresh), sig5.r, sig5.vs);
    expect((await pay.getDevice(d2.address)).policyId).to.not.equal(0n);

    const foreign = order([], { policyId: 1, nonce: 9n });
    const sig6 = await signOnboarding(foreign, stranger);
    await expect(pay.connect(relayer).onboardBySignature(...call(foreign), sig6.r, sig6.vs))
      .to.be.revertedWithCustomError(pay, "NotPolicyOwner")
      .withArgs(1, stranger.address);
  });

  it("revokes devices for good from one owner signature, and only the signer's", async () => {
    const { pay, relayer, owner, stranger, signOnboarding, signRevocation, order, call, deadline } =
      await loadFixture(fixture);
    const devices = newDevices(3);
    const o = order(devices.map((d) => d.address as Address));
    const s = await signOnboarding(o);
    await pay.connect(relayer).onboardBySignature(...call(o), s.r, s.vs);

    const rv: Revocation = {
      devices: [devices[0].address as Address, devices[1].address as Address],
      epoch: 0,
      nonce: 7n,
      deadline,
    };
    const sig = await signRevocation(rv);
    await expect(pay.connect(relayer).revokeBySignature({ epoch: 0, nonce: 7n, deadline }, rv.devices, sig.r, sig.vs))
      .to.emit(pay, "DeviceRevokedForever")
      .withArgs(devices[1].address, owner.address);
    expect((await pay.headroom(devices[0].address)).status).to.equal(3n); // DeviceRevoked
    expect((await pay.headroom(devices[2].address)).status).to.equal(0n);

    const bad: Revocation = { devices: [devices[2].address as Address], epoch: 0, nonce: 1n, deadline };
    const badSig = await signRevocation(bad, stranger);
    await expect(
      pay.connect(relayer).revokeBySignature({ epoch: 0, nonce: 1n, deadline }, bad.devices, badSig.r, badSig.vs),
    )
      .to.be.revertedWithCustomError(pay, "NotDeviceOwner")
      .withArgs(devices[2].address, stranger.address);
  });

  it("refuses a malformed signature with InvalidOwnerSignature", async () => {
    const { pay, relayer, order, call } = await loadFixture(fixture);
    const o = order([]);
    await expect(
      pay.connect(relayer).onboardBySignature(...call(o), ethers.ZeroHash, ethers.ZeroHash),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
  });
});
