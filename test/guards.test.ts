import { loadFixture } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers, network } from "hardhat";
import { deployFixture, NOTICE_PERIOD } from "./fixtures";
import { assignDevices, newDevices, payment, policyParams, registerDevice, signPayment, USDC } from "./helpers";

// Reentrancy guards, extreme inputs and the preview error path.
describe("guards and limits", () => {
  async function reentrantFixture() {
    const base = await deployFixture();
    const token = await ethers.deployContract("ReentrantToken");
    await token.mint(base.owner.address, 10n ** 24n);
    await token.mint(base.stranger.address, 10n ** 24n);
    await token.connect(base.owner).approve(await base.pay.getAddress(), ethers.MaxUint256);
    await token.connect(base.stranger).approve(await base.pay.getAddress(), ethers.MaxUint256);
    return { ...base, token, tokenAddress: await token.getAddress() };
  }

  describe("reentrancy", () => {
    it("refuses a deposit that re-enters deposit from the token's transfer", async () => {
      const { pay, token, tokenAddress, stranger } = await loadFixture(reentrantFixture);
      await token.arm(await pay.getAddress(), pay.interface.encodeFunctionData("deposit", [tokenAddress, 1n]));
      await expect(pay.connect(stranger).deposit(tokenAddress, 100n)).to.be.revertedWithCustomError(
        pay,
        "ReentrancyGuardReentrantCall",
      );
    });

    it("refuses a withdrawal that re-enters withdraw, depositFor or executeWithdrawal", async () => {
      const { pay, token, tokenAddress, stranger, owner } = await loadFixture(reentrantFixture);
      await pay.connect(stranger).deposit(tokenAddress, 1_000n);
      for (const data of [
        pay.interface.encodeFunctionData("withdraw", [tokenAddress, 1n, stranger.address]),
        pay.interface.encodeFunctionData("depositFor", [owner.address, tokenAddress, 1n]),
        pay.interface.encodeFunctionData("executeWithdrawal", [tokenAddress, stranger.address]),
      ]) {
        await token.arm(await pay.getAddress(), data);
        await expect(pay.connect(stranger).withdraw(tokenAddress, 10n, stranger.address)).to.be.revertedWithCustomError(
          pay,
          "ReentrancyGuardReentrantCall",
        );
      }
      expect(await pay.balanceOf(stranger.address, tokenAddress)).to.equal(1_000n);
    });

    it("refuses a deposit whose token transfer re-enters depositWithPermit or depositWithAuthorization", async () => {
      const { pay, token, tokenAddress, stranger } = await loadFixture(reentrantFixture);
      const noSig = [27, ethers.ZeroHash, ethers.ZeroHash] as const;
      const inner = [
        pay.interface.encodeFunctionData("depositWithPermit", [stranger.address, tokenAddress, 1n, 0n, ...noSig]),
        pay.interface.encodeFunctionData("depositWithAuthorization", [
          stranger.address,
          tokenAddress,
          1n,
          0n,
          0n,
          ethers.ZeroHash,
          ...noSig,
        ]),
      ];
      for (const data of inner) {
        await token.arm(await pay.getAddress(), data);
        await expect(pay.connect(stranger).deposit(tokenAddress, 100n)).to.be.revertedWithCustomError(
          pay,
          "ReentrancyGuardReentrantCall",
        );
        // The owner's own depositWithPermit (no permit on this token: it goes ahead on the allowance) is guarded too.
        await token.arm(await pay.getAddress(), data);
        await expect(
          pay.connect(stranger).depositWithPermit(stranger.address, tokenAddress, 100n, 0n, ...noSig),
        ).to.be.revertedWithCustomError(pay, "ReentrancyGuardReentrantCall");
      }
      expect(await pay.balanceOf(stranger.address, tokenAddress)).to.equal(0n);
    });

    it("refuses an executeWithdrawal that re-enters executeWithdrawal", async () => {
      const { pay, token, tokenAddress, owner } = await loadFixture(reentrantFixture);
      await pay.connect(owner).deposit(tokenAddress, 1_000n);
      await pay.connect(owner).createPolicy(policyParams(tokenAddress));
      await pay.connect(owner).announceWithdrawal(tokenAddress, 500n);
      await network.provider.send("evm_increaseTime", [NOTICE_PERIOD]);
      await token.arm(
        await pay.getAddress(),
        pay.interface.encodeFunctionData("executeWithdrawal", [tokenAddress, owner.address]),
      );
      await expect(pay.connect(owner).executeWithdrawal(tokenAddress, owner.address)).to.be.revertedWithCustomError(
        pay,
        "ReentrancyGuardReentrantCall",
      );
      expect(await pay.balanceOf(owner.address, tokenAddress)).to.equal(1_000n);
    });
  });

  describe("extreme inputs", () => {
    it("credits nothing and reverts ZeroAmount when a token delivers nothing", async () => {
      const { pay, stranger } = await loadFixture(deployFixture);
      const burnAll = await ethers.deployContract("FeeOnTransferToken", [10_000]);
      await burnAll.mint(stranger.address, 1_000n);
      await burnAll.connect(stranger).approve(await pay.getAddress(), ethers.MaxUint256);
      await expect(pay.connect(stranger).deposit(await burnAll.getAddress(), 1_000n)).to.be.revertedWithCustomError(
        pay,
        "ZeroAmount",
      );
    });

    it("caps an announced withdrawal above 2^192 - 1 at that value", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(deployFixture);
      await pay.connect(owner).announceWithdrawal(usdcAddress, ethers.MaxUint256);
      expect((await pay.pendingWithdrawal(owner.address, usdcAddress)).amount).to.equal((1n << 192n) - 1n);
    });

    it("refuses a policy once every id is used", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(deployFixture);
      await pay.connect(owner).createPolicy(policyParams(usdcAddress));
      // _policyCount's slot: found by looking for the value 1 after one createPolicy.
      const address = await pay.getAddress();
      let slot = -1;
      for (let i = 0; i < 20; i++) {
        if (BigInt(await ethers.provider.getStorage(address, i)) === 1n) slot = i;
      }
      expect(slot).to.be.greaterThan(-1);
      await network.provider.send("hardhat_setStorageAt", [
        address,
        ethers.toBeHex(slot),
        ethers.zeroPadValue(ethers.toBeHex(2n ** 32n - 2n), 32),
      ]);
      await expect(pay.connect(owner).createPolicy(policyParams(usdcAddress))).to.be.revertedWithCustomError(
        pay,
        "TooManyPolicies",
      );
    });
  });

  describe("preview", () => {
    it("passes on a failure of the rolled-back settlement instead of reporting results", async () => {
      const { pay, usdcAddress, owner, payee } = await loadFixture(deployFixture);
      const devices = newDevices(30);
      await pay.connect(owner).createPolicy(policyParams(usdcAddress));
      await assignDevices(pay, owner, 1, devices);
      const items = [];
      for (const d of devices) {
        items.push(
          await signPayment(pay, d, await payment({ payee: payee.address as `0x${string}`, token: usdcAddress })),
        );
      }
      // Enough gas to enter preview, too little for the inner settlement: it runs out of gas and
      // preview reverts (with no PreviewResult to decode) rather than returning made-up reasons.
      await expect(pay.preview.staticCall(usdcAddress, items, owner.address, { gasLimit: 200_000 })).to.be.reverted;
      const [reasons] = await pay.preview.staticCall(usdcAddress, items, owner.address);
      expect(reasons.every((r) => r === 0n)).to.equal(true);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(0n);
    });

    it("passes on an error of the rolled-back settlement (a ledger overflow's Panic) instead of reporting results", async () => {
      const { pay, usdcAddress, owner, payee } = await loadFixture(deployFixture);
      const [device] = newDevices(1);
      await registerDevice(pay, owner, device, policyParams(usdcAddress));
      // _balances' slot: the mapping base whose entry for (owner, usdc) holds the owner's 10,000 USDC.
      const address = await pay.getAddress();
      const coder = ethers.AbiCoder.defaultAbiCoder();
      const entry = (account: string, base: number) =>
        ethers.keccak256(
          coder.encode(
            ["address", "bytes32"],
            [usdcAddress, ethers.keccak256(coder.encode(["address", "uint256"], [account, base]))],
          ),
        );
      let base = -1;
      for (let i = 0; i < 20 && base < 0; i++) {
        if (BigInt(await ethers.provider.getStorage(address, entry(owner.address, i))) === USDC(10_000)) base = i;
      }
      expect(base).to.be.greaterThan(-1);
      // A payee whose ledger balance cannot take another unit (no real token can get it there).
      await network.provider.send("hardhat_setStorageAt", [
        address,
        entry(payee.address, base),
        ethers.toBeHex(ethers.MaxUint256, 32),
      ]);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(ethers.MaxUint256);
      const item = await signPayment(
        pay,
        device,
        await payment({ payee: payee.address as `0x${string}`, token: usdcAddress }),
      );
      await expect(pay.preview.staticCall(usdcAddress, [item], owner.address)).to.be.revertedWithPanic(0x11);
      await expect(pay.settle(usdcAddress, [item], owner.address)).to.be.revertedWithPanic(0x11);
    });

    it("previewAndRevert and previewVouchersAndRevert, called directly, always revert with PreviewResult", async () => {
      const { pay, usdcAddress, owner, payee, stranger } = await loadFixture(deployFixture);
      const [device] = newDevices(1);
      await registerDevice(pay, owner, device, policyParams(usdcAddress));
      const item = await signPayment(
        pay,
        device,
        await payment({ payee: payee.address as `0x${string}`, token: usdcAddress }),
      );
      await expect(pay.connect(stranger).previewAndRevert(usdcAddress, [item], stranger.address))
        .to.be.revertedWithCustomError(pay, "PreviewResult")
        .withArgs([0], [device.address]);
      await expect(pay.connect(stranger).previewVouchersAndRevert(usdcAddress, [], stranger.address))
        .to.be.revertedWithCustomError(pay, "PreviewResult")
        .withArgs([], []);
      // Nothing of the rolled-back settlement stays.
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(0n);
      expect((await pay.getDevice(device.address)).lifetimeSpent).to.equal(0n);
    });
  });
});
