import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { BaseWallet } from "ethers";
import { ethers } from "hardhat";
import type { Address } from "../sdk/src";
import type { MachinePay, MockSmartAccount } from "../typechain-types";
import { onboardingArgs, onboardingOrder, revocationArgs, revocationOrder, signOrder } from "./admin-helpers";
import { deployFixture, NOTICE_PERIOD } from "./fixtures";
import { enrollment, newDevices, USDC } from "./helpers";
import { applyMoves, expectLedgerMatchesHoldings, ledger, settleExpect, signed } from "./settle-helpers";

/**
 * deployFixture plus a smart account (MockSmartAccount, a 1-of-1 stand-in for a Safe) whose signer is
 * an EOA with no ether: the account never sends a transaction to MachinePay except through
 * `execute`, and its orders travel as ERC-1271 signatures a relayer submits. The treasury (the
 * fixture's owner) funds it with depositFor.
 */
async function smartAccountFixture() {
  const f = await deployFixture();
  const signers = await ethers.getSigners();
  const accountSigner = signers[6];
  const otherEoa = signers[7];
  const account = await ethers.deployContract("MockSmartAccount", [accountSigner.address]);
  const accountAddress = (await account.getAddress()) as Address;
  await f.pay.connect(f.owner).depositFor(accountAddress, f.usdcAddress, USDC(500));
  const fleet = newDevices(4);
  return { ...f, account, accountAddress, accountSigner, otherEoa, fleet };
}
type Fixture = Awaited<ReturnType<typeof smartAccountFixture>>;

/** Proofs binding `devices` to `owner` (each signed by the device key itself). */
function proofsFor(pay: MachinePay, devices: BaseWallet[], owner: string) {
  return Promise.all(devices.map((d) => enrollment(pay, d, owner)));
}

/** The fleet onboarded on a new policy of the smart account, by the relayer, from an ERC-1271 signature. */
async function onboardFleet(f: Fixture) {
  const order = await onboardingOrder(
    f.accountAddress,
    f.usdcAddress,
    f.fleet.map((d) => d.address),
  );
  const signature = await signOrder(f.pay, f.accountSigner, order);
  const proofs = await proofsFor(f.pay, f.fleet, f.accountAddress);
  return f.pay.connect(f.relayer).onboardBySignature(...onboardingArgs(order, proofs, signature));
}

/** Call MachinePay as the smart account (through execute, sent by its signer). */
async function asAccount(f: Fixture, data: string) {
  return (f.account as MockSmartAccount).connect(f.accountSigner).execute(await f.pay.getAddress(), data);
}

describe("smart-account owners (ERC-1271)", () => {
  it("a funded smart account onboards a fleet gaslessly: a relayer submits its ERC-1271 signature", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, accountAddress, accountSigner, fleet } = f;
    expect(await pay.balanceOf(accountAddress, f.usdcAddress)).to.equal(USDC(500));
    const signerEtherBefore = await ethers.provider.getBalance(accountSigner.address);
    const tx = onboardFleet(f);
    await expect(tx).to.emit(pay, "PolicySet");
    for (const d of fleet) await expect(tx).to.emit(pay, "DeviceAssigned").withArgs(d.address, 1);
    expect((await pay.getPolicy(1)).owner).to.equal(accountAddress);
    expect(await pay.ownsPolicies(accountAddress)).to.equal(true);
    expect(await pay.ownerNonceUsed(accountAddress, 1n)).to.equal(true);
    expect(await pay.ownerNonceUsed(accountSigner.address, 1n), "the EOA's own nonces are its own").to.equal(false);
    for (const d of fleet) expect((await pay.headroom(d.address)).owner).to.equal(accountAddress);
    expect(await ethers.provider.getBalance(accountSigner.address), "the signer paid no gas").to.equal(
      signerEtherBefore,
    );
  });

  it("its devices then pay and settle from the smart account's escrow", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, relayer, payee, payee2, accountAddress, usdcAddress, fleet } = f;
    await onboardFleet(f);
    const accounts = [accountAddress, payee.address, payee2.address, relayer.address, f.owner.address];
    const before = await ledger(pay, usdcAddress, accounts);
    const plan = [
      { device: fleet[0], payee: payee.address, amount: USDC(3), fee: 1_000n },
      { device: fleet[1], payee: payee.address, amount: USDC(2), fee: 0n },
      { device: fleet[2], payee: payee2.address, amount: USDC(5), fee: 500n },
      { device: fleet[0], payee: payee2.address, amount: USDC(1), fee: 0n },
    ];
    const nonces = new Map<string, bigint>();
    const items = [];
    for (const p of plan) {
      const nonce = nonces.get(p.device.address) ?? 0n;
      nonces.set(p.device.address, nonce + 1n);
      items.push(
        await signed(
          pay,
          p.device,
          { payee: p.payee, token: usdcAddress, amount: p.amount, nonce, maxFee: 1_000n },
          p.fee,
        ),
      );
    }
    await settleExpect(pay, relayer, usdcAddress, items, ["None", "None", "None", "None"]);
    const expected = applyMoves(
      before,
      plan.map((p) => ({ owner: accountAddress, payee: p.payee, amount: p.amount, fee: p.fee })),
      relayer.address,
    );
    expect(await ledger(pay, usdcAddress, accounts)).to.deep.equal(expected);
    expect(await pay.balanceOf(accountAddress, usdcAddress)).to.equal(USDC(500) - USDC(11) - 1_500n);
    await expectLedgerMatchesHoldings(pay, usdcAddress, accounts);
  });

  it("revokes devices by an ERC-1271 signature; its devices are skipped as DeviceRevoked", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, relayer, payee, accountAddress, accountSigner, usdcAddress, fleet } = f;
    await onboardFleet(f);
    const order = await revocationOrder(accountAddress, [fleet[0].address, fleet[3].address], { nonce: 2n });
    const tx = pay
      .connect(relayer)
      .revokeBySignature(...revocationArgs(order, await signOrder(pay, accountSigner, order)));
    await expect(tx).to.emit(pay, "DeviceRevokedForever").withArgs(fleet[0].address, accountAddress);
    await expect(tx).to.emit(pay, "DeviceRevokedForever").withArgs(fleet[3].address, accountAddress);
    const to = { payee: payee.address, token: usdcAddress };
    await settleExpect(
      pay,
      relayer,
      usdcAddress,
      [await signed(pay, fleet[0], to), await signed(pay, fleet[1], to), await signed(pay, fleet[3], to)],
      ["DeviceRevoked", "None", "DeviceRevoked"],
    );
  });

  it("refuses orders signed by a different EOA with InvalidOwnerSignature, and spends no nonce", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, relayer, accountAddress, accountSigner, otherEoa, usdcAddress, fleet } = f;
    const order = await onboardingOrder(accountAddress, usdcAddress, [fleet[0].address]);
    const proofs = await proofsFor(pay, [fleet[0]], accountAddress);
    await expect(
      pay.connect(relayer).onboardBySignature(...onboardingArgs(order, proofs, await signOrder(pay, otherEoa, order))),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    // Nor is the account's signer, signing for itself, the account.
    const asSignerItself = { ...order, owner: accountSigner.address as Address };
    await expect(
      pay
        .connect(relayer)
        .onboardBySignature(...onboardingArgs(order, proofs, await signOrder(pay, accountSigner, asSignerItself))),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    expect(await pay.ownerNonceUsed(accountAddress, 1n)).to.equal(false);

    await onboardFleet(f);
    const revocation = await revocationOrder(accountAddress, [fleet[1].address], { nonce: 2n });
    await expect(
      pay.connect(relayer).revokeBySignature(...revocationArgs(revocation, await signOrder(pay, otherEoa, revocation))),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
    expect((await pay.headroom(fleet[1].address)).status).to.equal(0n);
    // A signature the account accepted once cannot be replayed (its nonce is spent).
    const order1 = await onboardingOrder(
      accountAddress,
      usdcAddress,
      f.fleet.map((d) => d.address),
    );
    await expect(
      pay
        .connect(relayer)
        .onboardBySignature(
          ...onboardingArgs(
            order1,
            await proofsFor(pay, fleet, accountAddress),
            await signOrder(pay, accountSigner, order1),
          ),
        ),
    )
      .to.be.revertedWithCustomError(pay, "OwnerNonceUsed")
      .withArgs(accountAddress, 1n);
  });

  it("refuses an order naming a contract that does not implement ERC-1271", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, relayer, accountSigner, usdcAddress, fleet } = f;
    const notAnAccount = f.usdcAddress; // has code, no isValidSignature
    const order = await onboardingOrder(notAnAccount, usdcAddress, [fleet[0].address]);
    await expect(
      pay
        .connect(relayer)
        .onboardBySignature(
          ...onboardingArgs(
            order,
            await proofsFor(pay, [fleet[0]], notAnAccount),
            await signOrder(pay, accountSigner, order),
          ),
        ),
    ).to.be.revertedWithCustomError(pay, "InvalidOwnerSignature");
  });

  it("the account acts through execute like any owner: pauses a device, and withdraws only after notice", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, relayer, payee, accountAddress, usdcAddress, fleet, stranger } = f;
    await onboardFleet(f);
    await expect(asAccount(f, pay.interface.encodeFunctionData("setDevicePaused", [fleet[2].address, true])))
      .to.emit(pay, "DevicePausedSet")
      .withArgs(fleet[2].address, true);
    await settleExpect(
      pay,
      relayer,
      usdcAddress,
      [await signed(pay, fleet[2], { payee: payee.address, token: usdcAddress })],
      ["DevicePaused"],
    );
    // An owner of policies cannot withdraw at once.
    const noticeRequired = pay.interface.encodeErrorResult("NoticeRequired", [accountAddress, usdcAddress]);
    await expect(asAccount(f, pay.interface.encodeFunctionData("withdraw", [usdcAddress, USDC(1), stranger.address])))
      .to.be.revertedWithCustomError(f.account, "CallFailed")
      .withArgs(noticeRequired);
    await asAccount(f, pay.interface.encodeFunctionData("announceWithdrawal", [usdcAddress, USDC(100)]));
    await time.increase(NOTICE_PERIOD);
    await expect(asAccount(f, pay.interface.encodeFunctionData("executeWithdrawal", [usdcAddress, stranger.address])))
      .to.emit(pay, "Withdrawn")
      .withArgs(accountAddress, usdcAddress, stranger.address, USDC(100));
    expect(await pay.balanceOf(accountAddress, usdcAddress)).to.equal(USDC(400));
    // Only its signer can make it act.
    await expect((f.account as MockSmartAccount).connect(stranger).execute(await pay.getAddress(), "0x"))
      .to.be.revertedWithCustomError(f.account, "NotSigner")
      .withArgs(stranger.address);
  });

  it("the EOA owner path keeps working alongside: the signer onboards and revokes for itself", async () => {
    const f = await loadFixture(smartAccountFixture);
    const { pay, relayer, payee, accountAddress, accountSigner, owner, usdcAddress, fleet } = f;
    await onboardFleet(f);
    await pay.connect(owner).depositFor(accountSigner.address, usdcAddress, USDC(20));
    const [mine] = newDevices(1);
    const order = await onboardingOrder(accountSigner, usdcAddress, [mine.address]);
    await expect(
      pay
        .connect(relayer)
        .onboardBySignature(
          ...onboardingArgs(
            order,
            await proofsFor(pay, [mine], accountSigner.address),
            await signOrder(pay, accountSigner, order),
          ),
        ),
    )
      .to.emit(pay, "DeviceAssigned")
      .withArgs(mine.address, 2);
    expect((await pay.getPolicy(2)).owner).to.equal(accountSigner.address);
    // A device of the account cannot be moved onto the EOA's policy: they are different owners.
    const move = await onboardingOrder(accountSigner, usdcAddress, [fleet[0].address], { nonce: 2n, policyId: 2 });
    const moveProofs = await proofsFor(pay, [fleet[0]], accountSigner.address);
    await expect(
      pay
        .connect(relayer)
        .onboardBySignature(...onboardingArgs(move, moveProofs, await signOrder(pay, accountSigner, move))),
    )
      .to.be.revertedWithCustomError(pay, "DeviceOwnedByAnother")
      .withArgs(fleet[0].address, accountAddress);
    const to = { payee: payee.address, token: usdcAddress };
    await settleExpect(
      pay,
      relayer,
      usdcAddress,
      [await signed(pay, mine, { ...to, amount: USDC(2) }), await signed(pay, fleet[0], { ...to, amount: USDC(3) })],
      ["None", "None"],
    );
    expect(await pay.balanceOf(accountSigner.address, usdcAddress)).to.equal(USDC(18));
    expect(await pay.balanceOf(accountAddress, usdcAddress)).to.equal(USDC(497));
    const revocation = await revocationOrder(accountSigner, [mine.address], { nonce: 3n });
    await expect(
      pay
        .connect(relayer)
        .revokeBySignature(...revocationArgs(revocation, await signOrder(pay, accountSigner, revocation))),
    )
      .to.emit(pay, "DeviceRevokedForever")
      .withArgs(mine.address, accountSigner.address);
  });
});
