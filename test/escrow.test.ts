import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers } from "hardhat";
import { ledgerSum, registerNewDevice, settleOne } from "./admin-helpers";
import { deployFixture, NOTICE_PERIOD } from "./fixtures";
import { newDevices, policyParams, registerDevice, USDC, ZERO } from "./helpers";
import { expectPaymentSettled } from "./settle-helpers";

const ETH = ethers.parseEther;

/** deployFixture plus a fee-on-transfer token (1% burnt per transfer) and a contract that refuses ether. */
async function escrowFixture() {
  const base = await deployFixture();
  const fot = await ethers.deployContract("FeeOnTransferToken", [100]);
  const rejecter = await ethers.deployContract("RejectEther");
  await fot.mint(base.stranger.address, ETH("100"));
  await fot.connect(base.stranger).approve(await base.pay.getAddress(), ethers.MaxUint256);
  return { ...base, fot, fotAddress: await fot.getAddress(), rejecter };
}

/** escrowFixture where the owner has a device, paid 3 USDC to `payee`, and 1 ETH in escrow. */
async function earningsFixture() {
  const base = await escrowFixture();
  const { pay, owner, relayer, payee, usdcAddress } = base;
  const { device } = await registerNewDevice(pay, owner, usdcAddress);
  await settleOne(pay, relayer, device, { payee: payee.address, token: usdcAddress, amount: USDC(3) });
  await pay.connect(owner).deposit(ZERO, ETH("1"), { value: ETH("1") });
  return { ...base, device };
}

describe("escrow", () => {
  describe("depositing an ERC-20", () => {
    it("pulls the tokens and credits the caller's ledger", async () => {
      const { pay, usdc, usdcAddress, owner } = await loadFixture(deployFixture);
      const tx = pay.connect(owner).deposit(usdcAddress, USDC(25));
      await expect(tx).to.emit(pay, "Deposited").withArgs(owner.address, usdcAddress, USDC(25));
      await expect(tx).to.changeTokenBalances(usdc, [owner, pay], [-USDC(25), USDC(25)]);
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(USDC(10_025));
    });

    it("depositFor pulls from the caller and credits the named account", async () => {
      const { pay, usdc, usdcAddress, owner, stranger } = await loadFixture(deployFixture);
      const tx = pay.connect(owner).depositFor(stranger.address, usdcAddress, USDC(7));
      await expect(tx).to.emit(pay, "Deposited").withArgs(stranger.address, usdcAddress, USDC(7));
      await expect(tx).to.changeTokenBalances(usdc, [owner, pay], [-USDC(7), USDC(7)]);
      expect(await pay.balanceOf(stranger.address, usdcAddress)).to.equal(USDC(7));
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(USDC(10_000));
    });

    it("reverts ZeroAmount for an amount of 0", async () => {
      const { pay, usdcAddress, owner, stranger } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).deposit(usdcAddress, 0)).to.be.revertedWithCustomError(pay, "ZeroAmount");
      await expect(pay.connect(owner).depositFor(stranger.address, usdcAddress, 0)).to.be.revertedWithCustomError(
        pay,
        "ZeroAmount",
      );
    });

    it("reverts UnexpectedNativeValue when ether comes with an ERC-20 deposit", async () => {
      const { pay, usdcAddress, owner, stranger } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).deposit(usdcAddress, USDC(1), { value: 5 }))
        .to.be.revertedWithCustomError(pay, "UnexpectedNativeValue")
        .withArgs(5);
      await expect(pay.connect(owner).depositFor(stranger.address, usdcAddress, USDC(1), { value: 1 }))
        .to.be.revertedWithCustomError(pay, "UnexpectedNativeValue")
        .withArgs(1);
    });

    it("depositFor reverts ZeroAddress for the zero account", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).depositFor(ZERO, usdcAddress, USDC(1))).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
      await expect(pay.connect(owner).depositFor(ZERO, ZERO, 1, { value: 1 })).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
    });
  });

  describe("depositing the native coin (token = address(0))", () => {
    it("credits the value sent when it equals the amount", async () => {
      const { pay, owner } = await loadFixture(deployFixture);
      const tx = pay.connect(owner).deposit(ZERO, ETH("1.5"), { value: ETH("1.5") });
      await expect(tx).to.emit(pay, "Deposited").withArgs(owner.address, ZERO, ETH("1.5"));
      await expect(tx).to.changeEtherBalances([owner, pay], [-ETH("1.5"), ETH("1.5")]);
      expect(await pay.balanceOf(owner.address, ZERO)).to.equal(ETH("1.5"));
    });

    it("depositFor credits the named account with the value sent", async () => {
      const { pay, owner, stranger } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).depositFor(stranger.address, ZERO, 1234, { value: 1234 }))
        .to.emit(pay, "Deposited")
        .withArgs(stranger.address, ZERO, 1234);
      expect(await pay.balanceOf(stranger.address, ZERO)).to.equal(1234);
      expect(await pay.balanceOf(owner.address, ZERO)).to.equal(0);
    });

    it("reverts NativeAmountMismatch(sent, amount) when the value differs from the amount", async () => {
      const { pay, owner, stranger } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).deposit(ZERO, 100, { value: 99 }))
        .to.be.revertedWithCustomError(pay, "NativeAmountMismatch")
        .withArgs(99, 100);
      await expect(pay.connect(owner).deposit(ZERO, 100, { value: 101 }))
        .to.be.revertedWithCustomError(pay, "NativeAmountMismatch")
        .withArgs(101, 100);
      await expect(pay.connect(owner).depositFor(stranger.address, ZERO, 100))
        .to.be.revertedWithCustomError(pay, "NativeAmountMismatch")
        .withArgs(0, 100);
    });

    it("reverts ZeroAmount for an amount of 0", async () => {
      const { pay, owner } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).deposit(ZERO, 0)).to.be.revertedWithCustomError(pay, "ZeroAmount");
    });
  });

  describe("depositing a fee-on-transfer token", () => {
    it("credits exactly what arrived, not what was asked", async () => {
      const { pay, fot, fotAddress, stranger } = await loadFixture(escrowFixture);
      const sent = ETH("10");
      const arrived = sent - (sent * 100n) / 10_000n;
      await expect(pay.connect(stranger).deposit(fotAddress, sent))
        .to.emit(pay, "Deposited")
        .withArgs(stranger.address, fotAddress, arrived);
      expect(await pay.balanceOf(stranger.address, fotAddress)).to.equal(arrived);
      expect(await fot.balanceOf(await pay.getAddress())).to.equal(arrived);
    });

    it("lets the whole credited balance be withdrawn (the ledger never exceeds what the contract holds)", async () => {
      const { pay, fot, fotAddress, stranger, payee2 } = await loadFixture(escrowFixture);
      await pay.connect(stranger).deposit(fotAddress, ETH("10"));
      const credited = await pay.balanceOf(stranger.address, fotAddress);
      await pay.connect(stranger).withdraw(fotAddress, credited, payee2.address);
      expect(await pay.balanceOf(stranger.address, fotAddress)).to.equal(0);
      expect(await fot.balanceOf(await pay.getAddress())).to.equal(0);
      expect(await fot.balanceOf(payee2.address)).to.equal(credited - (credited * 100n) / 10_000n);
    });
  });

  describe("withdraw, for an account that owns no policy", () => {
    it("sends a payee's earnings at once to another address", async () => {
      const { pay, usdc, usdcAddress, payee, stranger } = await loadFixture(earningsFixture);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(3));
      const tx = pay.connect(payee).withdraw(usdcAddress, USDC(2), stranger.address);
      await expect(tx).to.emit(pay, "Withdrawn").withArgs(payee.address, usdcAddress, stranger.address, USDC(2));
      await expect(tx).to.changeTokenBalances(usdc, [pay, stranger, payee], [-USDC(2), USDC(2), 0]);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(1));
    });

    it("sends the native coin", async () => {
      const { pay, stranger, payee2 } = await loadFixture(deployFixture);
      await pay.connect(stranger).deposit(ZERO, ETH("2"), { value: ETH("2") });
      const tx = pay.connect(stranger).withdraw(ZERO, ETH("0.5"), payee2.address);
      await expect(tx).to.changeEtherBalances([pay, payee2], [-ETH("0.5"), ETH("0.5")]);
      expect(await pay.balanceOf(stranger.address, ZERO)).to.equal(ETH("1.5"));
    });

    it("reverts InsufficientLedgerBalance(account, token, balance, requested) above the balance", async () => {
      const { pay, usdcAddress, payee } = await loadFixture(earningsFixture);
      await expect(pay.connect(payee).withdraw(usdcAddress, USDC(3) + 1n, payee.address))
        .to.be.revertedWithCustomError(pay, "InsufficientLedgerBalance")
        .withArgs(payee.address, usdcAddress, USDC(3), USDC(3) + 1n);
    });

    it("reverts ZeroAddress for the zero receiver", async () => {
      const { pay, usdcAddress, payee } = await loadFixture(earningsFixture);
      await expect(pay.connect(payee).withdraw(usdcAddress, USDC(1), ZERO)).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
    });

    it("reverts ZeroAmount for an amount of 0", async () => {
      const { pay, usdcAddress, payee } = await loadFixture(earningsFixture);
      await expect(pay.connect(payee).withdraw(usdcAddress, 0, payee.address)).to.be.revertedWithCustomError(
        pay,
        "ZeroAmount",
      );
    });

    it("reverts NativeTransferFailed when the receiver refuses ether, and leaves the ledger unchanged", async () => {
      const { pay, stranger, rejecter } = await loadFixture(escrowFixture);
      await pay.connect(stranger).deposit(ZERO, ETH("1"), { value: ETH("1") });
      const to = await rejecter.getAddress();
      await expect(pay.connect(stranger).withdraw(ZERO, ETH("0.25"), to))
        .to.be.revertedWithCustomError(pay, "NativeTransferFailed")
        .withArgs(to, ETH("0.25"));
      expect(await pay.balanceOf(stranger.address, ZERO)).to.equal(ETH("1"));
      expect(await ethers.provider.getBalance(await pay.getAddress())).to.equal(ETH("1"));
    });
  });

  describe("withdraw, for an account that owns a policy", () => {
    it("reverts NoticeRequired(owner, token), in every token", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      expect(await pay.ownsPolicies(owner.address)).to.equal(true);
      await expect(pay.connect(owner).withdraw(usdcAddress, USDC(1), owner.address))
        .to.be.revertedWithCustomError(pay, "NoticeRequired")
        .withArgs(owner.address, usdcAddress);
      await expect(pay.connect(owner).withdraw(ZERO, 1, owner.address))
        .to.be.revertedWithCustomError(pay, "NoticeRequired")
        .withArgs(owner.address, ZERO);
    });

    it("works at once until the account creates its first policy", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(deployFixture);
      await pay.connect(owner).withdraw(usdcAddress, USDC(1), owner.address);
      await pay.connect(owner).createPolicy(policyParams(usdcAddress));
      await expect(pay.connect(owner).withdraw(usdcAddress, USDC(1), owner.address)).to.be.revertedWithCustomError(
        pay,
        "NoticeRequired",
      );
    });
  });

  describe("withdrawal notice", () => {
    it("announcing records the amount and readyAt = now + NOTICE_PERIOD", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      const at = (await time.latest()) + 10;
      await time.setNextBlockTimestamp(at);
      await expect(pay.connect(owner).announceWithdrawal(usdcAddress, USDC(4_000)))
        .to.emit(pay, "WithdrawalAnnounced")
        .withArgs(owner.address, usdcAddress, USDC(4_000), at + NOTICE_PERIOD);
      const pending = await pay.pendingWithdrawal(owner.address, usdcAddress);
      expect(pending.amount).to.equal(USDC(4_000));
      expect(pending.readyAt).to.equal(at + NOTICE_PERIOD);
    });

    it("the notice period is the one given to the constructor", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(deployFixture);
      expect(await pay.NOTICE_PERIOD()).to.equal(NOTICE_PERIOD);
      const short = await ethers.deployContract("MachinePay", [3_600]);
      expect(await short.NOTICE_PERIOD()).to.equal(3_600);
      await short.connect(owner).announceWithdrawal(usdcAddress, 1);
      expect((await short.pendingWithdrawal(owner.address, usdcAddress)).readyAt).to.equal(
        (await time.latest()) + 3_600,
      );
    });

    it("executing before readyAt reverts WithdrawalNotReady(readyAt, now)", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(4_000));
      const { readyAt } = await pay.pendingWithdrawal(owner.address, usdcAddress);
      await time.setNextBlockTimestamp(readyAt - 1n);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, owner.address))
        .to.be.revertedWithCustomError(pay, "WithdrawalNotReady")
        .withArgs(readyAt, readyAt - 1n);
    });

    it("executing at readyAt sends the announced amount and clears the announcement", async () => {
      const { pay, usdc, usdcAddress, owner, stranger } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(4_000));
      const { readyAt } = await pay.pendingWithdrawal(owner.address, usdcAddress);
      const before = await pay.balanceOf(owner.address, usdcAddress);
      await time.setNextBlockTimestamp(readyAt);
      const tx = pay.connect(owner).executeWithdrawal(usdcAddress, stranger.address);
      await expect(tx).to.emit(pay, "Withdrawn").withArgs(owner.address, usdcAddress, stranger.address, USDC(4_000));
      await expect(tx).to.changeTokenBalances(usdc, [pay, stranger], [-USDC(4_000), USDC(4_000)]);
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(before - USDC(4_000));
      expect((await pay.pendingWithdrawal(owner.address, usdcAddress)).readyAt).to.equal(0);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, stranger.address))
        .to.be.revertedWithCustomError(pay, "NoPendingWithdrawal")
        .withArgs(owner.address, usdcAddress);
    });

    it("works for the native coin", async () => {
      const { pay, owner, stranger } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(ZERO, ETH("0.4"));
      await time.increase(NOTICE_PERIOD);
      await expect(pay.connect(owner).executeWithdrawal(ZERO, stranger.address)).to.changeEtherBalances(
        [pay, stranger],
        [-ETH("0.4"), ETH("0.4")],
      );
      expect(await pay.balanceOf(owner.address, ZERO)).to.equal(ETH("0.6"));
    });

    it("devices keep spending during the notice, and execution takes min(announced, balance left)", async () => {
      const { pay, usdcAddress, owner, relayer, payee, stranger, device } = await loadFixture(earningsFixture);
      const all = await pay.balanceOf(owner.address, usdcAddress);
      await pay.connect(owner).announceWithdrawal(usdcAddress, all);
      await time.increase(NOTICE_PERIOD / 2);
      await expectPaymentSettled(
        pay,
        settleOne(pay, relayer, device, { payee: payee.address, token: usdcAddress, amount: USDC(5), nonce: 1n }),
        { device: device.address, payee: payee.address, token: usdcAddress, amount: USDC(5), nonce: 1n },
      );
      await time.increase(NOTICE_PERIOD / 2);
      expect(await pay.connect(owner).executeWithdrawal.staticCall(usdcAddress, stranger.address)).to.equal(
        all - USDC(5),
      );
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, stranger.address))
        .to.emit(pay, "Withdrawn")
        .withArgs(owner.address, usdcAddress, stranger.address, all - USDC(5));
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(0);
    });

    it("executing with nothing left in the ledger reverts InsufficientLedgerBalance and keeps the announcement", async () => {
      const { pay, usdcAddress, stranger } = await loadFixture(deployFixture);
      await pay.connect(stranger).announceWithdrawal(usdcAddress, USDC(5));
      await time.increase(NOTICE_PERIOD);
      await expect(pay.connect(stranger).executeWithdrawal(usdcAddress, stranger.address))
        .to.be.revertedWithCustomError(pay, "InsufficientLedgerBalance")
        .withArgs(stranger.address, usdcAddress, 0, USDC(5));
      expect((await pay.pendingWithdrawal(stranger.address, usdcAddress)).amount).to.equal(USDC(5));
    });

    it("executing to the zero address reverts ZeroAddress and keeps the announcement", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(1));
      await time.increase(NOTICE_PERIOD);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, ZERO)).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
      expect((await pay.pendingWithdrawal(owner.address, usdcAddress)).amount).to.equal(USDC(1));
    });

    it("cancelling clears the announcement", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(1));
      await expect(pay.connect(owner).cancelWithdrawal(usdcAddress))
        .to.emit(pay, "WithdrawalCancelled")
        .withArgs(owner.address, usdcAddress);
      const pending = await pay.pendingWithdrawal(owner.address, usdcAddress);
      expect([pending.amount, pending.readyAt]).to.deep.equal([0n, 0n]);
      await time.increase(NOTICE_PERIOD);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, owner.address))
        .to.be.revertedWithCustomError(pay, "NoPendingWithdrawal")
        .withArgs(owner.address, usdcAddress);
    });

    it("executing or cancelling without an announcement reverts NoPendingWithdrawal", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, owner.address))
        .to.be.revertedWithCustomError(pay, "NoPendingWithdrawal")
        .withArgs(owner.address, usdcAddress);
      await expect(pay.connect(owner).cancelWithdrawal(usdcAddress))
        .to.be.revertedWithCustomError(pay, "NoPendingWithdrawal")
        .withArgs(owner.address, usdcAddress);
    });

    it("an announcement is per token", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(1));
      await time.increase(NOTICE_PERIOD);
      await expect(pay.connect(owner).executeWithdrawal(ZERO, owner.address))
        .to.be.revertedWithCustomError(pay, "NoPendingWithdrawal")
        .withArgs(owner.address, ZERO);
    });

    it("re-announcing replaces the amount and restarts the clock", async () => {
      const { pay, usdcAddress, owner, stranger } = await loadFixture(earningsFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(1));
      const first = (await pay.pendingWithdrawal(owner.address, usdcAddress)).readyAt;
      await time.increase(NOTICE_PERIOD - 100);
      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(2));
      const second = (await pay.pendingWithdrawal(owner.address, usdcAddress)).readyAt;
      expect(second).to.equal((await time.latest()) + NOTICE_PERIOD);
      await time.setNextBlockTimestamp(first);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, stranger.address))
        .to.be.revertedWithCustomError(pay, "WithdrawalNotReady")
        .withArgs(second, first);
      await time.setNextBlockTimestamp(second);
      await expect(pay.connect(owner).executeWithdrawal(usdcAddress, stranger.address))
        .to.emit(pay, "Withdrawn")
        .withArgs(owner.address, usdcAddress, stranger.address, USDC(2));
    });

    it("announcing 0 reverts ZeroAmount", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(earningsFixture);
      await expect(pay.connect(owner).announceWithdrawal(usdcAddress, 0)).to.be.revertedWithCustomError(
        pay,
        "ZeroAmount",
      );
    });

    // Skipped: fails today. The notice exists so that payees holding signed, unsettled payments can
    // settle them before an owner's funds leave. But an owner can register a key it controls on a
    // policy with caps as large as its balance, pay an account of its own that owns no policy, and
    // withdraw from that account at once: the whole escrow leaves in one block, notice or not.
    // Whether the contract should prevent this (e.g. cap raises and new policies taking effect only
    // after NOTICE_PERIOD) is a design decision; this test states the rule the notice implies.
    it.skip("an owner cannot move its escrow out before the notice ends by paying itself through a new device", async () => {
      const { pay, usdcAddress, owner, stranger } = await loadFixture(deployFixture);
      const all = await pay.balanceOf(owner.address, usdcAddress);
      const [ownKey] = newDevices(1);
      await registerDevice(
        pay,
        owner,
        ownKey,
        policyParams(usdcAddress, { maxPerPayment: all, maxPerPeriod: all, lifetimeMax: all }),
      );
      await settleOne(pay, owner, ownKey, { payee: stranger.address, token: usdcAddress, amount: all });
      await expect(pay.connect(stranger).withdraw(usdcAddress, all, stranger.address)).to.be.reverted;
    });
  });

  describe("ledger invariant", () => {
    it("the ledger balances of all accounts sum to what the contract holds, after every kind of operation", async () => {
      const { pay, usdc, usdcAddress, owner, relayer, payee, payee2, stranger } = await loadFixture(deployFixture);
      const accounts = [owner, relayer, payee, payee2, stranger].map((s) => s.address);
      const payAddress = await pay.getAddress();
      const check = async () => {
        expect(await ledgerSum(pay, usdcAddress, accounts)).to.equal(await usdc.balanceOf(payAddress));
        expect(await ledgerSum(pay, ZERO, accounts)).to.equal(await ethers.provider.getBalance(payAddress));
      };
      await check();

      await pay.connect(owner).depositFor(stranger.address, usdcAddress, USDC(50));
      await pay.connect(owner).deposit(ZERO, ETH("3"), { value: ETH("3") });
      await check();

      const { device } = await registerNewDevice(pay, owner, usdcAddress);
      for (let nonce = 0n; nonce < 3n; nonce++) {
        const p = { payee: payee.address, token: usdcAddress, amount: USDC(2) + nonce, nonce, maxFee: 10_000n };
        await settleOne(pay, stranger, device, p, 10_000n, relayer.address);
      }
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(30_000n);
      await check();

      await pay.connect(payee).withdraw(usdcAddress, USDC(4), payee2.address);
      await pay.connect(stranger).withdraw(usdcAddress, USDC(50), stranger.address);
      await check();

      await pay.connect(owner).announceWithdrawal(usdcAddress, USDC(9_000));
      await pay.connect(owner).announceWithdrawal(ZERO, ETH("1"));
      await time.increase(NOTICE_PERIOD);
      await pay.connect(owner).executeWithdrawal(usdcAddress, owner.address);
      await pay.connect(owner).executeWithdrawal(ZERO, payee2.address);
      await check();
    });
  });
});
