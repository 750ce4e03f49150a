import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { type BaseWallet, Signature, type Signer, TypedDataEncoder, type TypedDataField } from "ethers";
import { ethers } from "hardhat";
import type { MockUSDC } from "../typechain-types";
import { newDevices, USDC } from "./helpers";

const AUTHORIZATION_FIELDS: TypedDataField[] = [
  { name: "from", type: "address" },
  { name: "to", type: "address" },
  { name: "value", type: "uint256" },
  { name: "validAfter", type: "uint256" },
  { name: "validBefore", type: "uint256" },
  { name: "nonce", type: "bytes32" },
];
const TYPES = {
  TransferWithAuthorization: { TransferWithAuthorization: AUTHORIZATION_FIELDS },
  ReceiveWithAuthorization: { ReceiveWithAuthorization: AUTHORIZATION_FIELDS },
  CancelAuthorization: {
    CancelAuthorization: [
      { name: "authorizer", type: "address" },
      { name: "nonce", type: "bytes32" },
    ],
  },
  Permit: {
    Permit: [
      { name: "owner", type: "address" },
      { name: "spender", type: "address" },
      { name: "value", type: "uint256" },
      { name: "nonce", type: "uint256" },
      { name: "deadline", type: "uint256" },
    ],
  },
} satisfies Record<string, Record<string, TypedDataField[]>>;

type Authorization = {
  from: string;
  to: string;
  value: bigint;
  validAfter: bigint;
  validBefore: bigint;
  nonce: string;
};

/** MockUSDC; `holder` is a key with 100 USDC and no ether (EIP-3009 is how it pays without gas). */
async function usdcFixture() {
  const [relayer, payee, stranger] = await ethers.getSigners();
  const usdc = await ethers.deployContract("MockUSDC");
  const [holder] = newDevices(1);
  await usdc.mint(holder.address, USDC(100));
  const { chainId } = await ethers.provider.getNetwork();
  const domain = { name: "USD Coin", version: "1", chainId, verifyingContract: await usdc.getAddress() };
  return { usdc, domain, holder, relayer, payee, stranger };
}

async function sign(
  signer: Signer,
  domain: Awaited<ReturnType<typeof usdcFixture>>["domain"],
  kind: keyof typeof TYPES,
  message: Record<string, unknown>,
) {
  return Signature.from(await signer.signTypedData(domain, TYPES[kind], message));
}

/** A 5 USDC authorization from the holder to the payee, valid from now for an hour, with a random nonce. */
async function authorization(holder: BaseWallet, to: string, overrides: Partial<Authorization> = {}) {
  const now = BigInt(await time.latest());
  return {
    from: holder.address,
    to,
    value: USDC(5),
    validAfter: 0n,
    validBefore: now + 3_600n,
    nonce: ethers.hexlify(ethers.randomBytes(32)),
    ...overrides,
  } satisfies Authorization;
}

function transferWith(usdc: MockUSDC, a: Authorization, sig: Signature) {
  return usdc.transferWithAuthorization(
    a.from,
    a.to,
    a.value,
    a.validAfter,
    a.validBefore,
    a.nonce,
    sig.v,
    sig.r,
    sig.s,
  );
}

describe("MockUSDC", () => {
  it("has 6 decimals, like USDC", async () => {
    const { usdc } = await loadFixture(usdcFixture);
    expect(await usdc.decimals()).to.equal(6);
    expect(await usdc.name()).to.equal("USD Coin");
  });

  it("EIP-712 type hashes are the EIP-3009 type strings", async () => {
    const { usdc } = await loadFixture(usdcFixture);
    const typeHash = (kind: keyof typeof TYPES) => ethers.id(TypedDataEncoder.from(TYPES[kind]).encodeType(kind));
    expect(await usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH()).to.equal(typeHash("TransferWithAuthorization"));
    expect(await usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH()).to.equal(typeHash("ReceiveWithAuthorization"));
    expect(await usdc.CANCEL_AUTHORIZATION_TYPEHASH()).to.equal(typeHash("CancelAuthorization"));
  });

  describe("permit (EIP-2612)", () => {
    it("sets an allowance from the owner's signature and uses up the nonce", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const deadline = BigInt(await time.latest()) + 600n;
      const message = { owner: holder.address, spender: payee.address, value: USDC(7), nonce: 0n, deadline };
      const sig = await sign(holder, domain, "Permit", message);
      await usdc.connect(relayer).permit(holder.address, payee.address, USDC(7), deadline, sig.v, sig.r, sig.s);
      expect(await usdc.allowance(holder.address, payee.address)).to.equal(USDC(7));
      expect(await usdc.nonces(holder.address)).to.equal(1);
      await expect(
        usdc.connect(relayer).permit(holder.address, payee.address, USDC(7), deadline, sig.v, sig.r, sig.s),
      ).to.be.revertedWithCustomError(usdc, "ERC2612InvalidSigner");
    });
  });

  describe("transferWithAuthorization (EIP-3009)", () => {
    it("moves the tokens on the holder's signature, submitted by anyone", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      const tx = transferWith(usdc.connect(relayer), a, sig);
      await expect(tx).to.emit(usdc, "AuthorizationUsed").withArgs(holder.address, a.nonce);
      await expect(tx).to.changeTokenBalances(usdc, [holder.address, payee], [-USDC(5), USDC(5)]);
      expect(await usdc.authorizationState(holder.address, a.nonce)).to.equal(true);
    });

    it("is single-use: a second submission reverts AuthorizationAlreadyUsed", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      await transferWith(usdc.connect(relayer), a, sig);
      await expect(transferWith(usdc.connect(relayer), a, sig))
        .to.be.revertedWithCustomError(usdc, "AuthorizationAlreadyUsed")
        .withArgs(holder.address, a.nonce);
    });

    it("is valid only strictly after validAfter", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const validAfter = BigInt(await time.latest()) + 100n;
      const a = await authorization(holder, payee.address, { validAfter });
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      await time.setNextBlockTimestamp(validAfter);
      await expect(transferWith(usdc.connect(relayer), a, sig))
        .to.be.revertedWithCustomError(usdc, "AuthorizationNotYetValid")
        .withArgs(validAfter, validAfter);
      await time.setNextBlockTimestamp(validAfter + 1n);
      await expect(transferWith(usdc.connect(relayer), a, sig)).to.emit(usdc, "AuthorizationUsed");
    });

    it("is valid only strictly before validBefore", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      await time.setNextBlockTimestamp(a.validBefore);
      await expect(transferWith(usdc.connect(relayer), a, sig))
        .to.be.revertedWithCustomError(usdc, "AuthorizationExpired")
        .withArgs(a.validBefore, a.validBefore);
    });

    it("reverts InvalidAuthorizationSigner for another key's signature or changed terms", async () => {
      const { usdc, domain, holder, relayer, payee, stranger } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const byStranger = await sign(stranger, domain, "TransferWithAuthorization", a);
      await expect(transferWith(usdc.connect(relayer), a, byStranger))
        .to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner")
        .withArgs(stranger.address, holder.address);
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      await expect(
        transferWith(usdc.connect(relayer), { ...a, value: a.value + 1n }, sig),
      ).to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner");
      expect(await usdc.balanceOf(holder.address)).to.equal(USDC(100));
    });
  });

  describe("receiveWithAuthorization (EIP-3009)", () => {
    it("reverts CallerMustBePayee unless the payee submits it, and works when it does", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const sig = await sign(holder, domain, "ReceiveWithAuthorization", a);
      const args = [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, sig.v, sig.r, sig.s] as const;
      await expect(usdc.connect(relayer).receiveWithAuthorization(...args))
        .to.be.revertedWithCustomError(usdc, "CallerMustBePayee")
        .withArgs(relayer.address, payee.address);
      await expect(usdc.connect(payee).receiveWithAuthorization(...args)).to.changeTokenBalances(
        usdc,
        [holder.address, payee],
        [-USDC(5), USDC(5)],
      );
    });

    it("does not accept a TransferWithAuthorization signature", async () => {
      const { usdc, domain, holder, payee } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      await expect(
        usdc
          .connect(payee)
          .receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, sig.v, sig.r, sig.s),
      ).to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner");
    });
  });

  describe("cancelAuthorization (EIP-3009)", () => {
    it("burns an unused nonce: the authorization can no longer be used, nor cancelled again", async () => {
      const { usdc, domain, holder, relayer, payee } = await loadFixture(usdcFixture);
      const a = await authorization(holder, payee.address);
      const sig = await sign(holder, domain, "TransferWithAuthorization", a);
      const cancel = await sign(holder, domain, "CancelAuthorization", { authorizer: holder.address, nonce: a.nonce });
      await expect(usdc.connect(relayer).cancelAuthorization(holder.address, a.nonce, cancel.v, cancel.r, cancel.s))
        .to.emit(usdc, "AuthorizationCanceled")
        .withArgs(holder.address, a.nonce);
      expect(await usdc.authorizationState(holder.address, a.nonce)).to.equal(true);
      await expect(transferWith(usdc.connect(relayer), a, sig))
        .to.be.revertedWithCustomError(usdc, "AuthorizationAlreadyUsed")
        .withArgs(holder.address, a.nonce);
      await expect(usdc.connect(relayer).cancelAuthorization(holder.address, a.nonce, cancel.v, cancel.r, cancel.s))
        .to.be.revertedWithCustomError(usdc, "AuthorizationAlreadyUsed")
        .withArgs(holder.address, a.nonce);
    });

    it("reverts InvalidAuthorizationSigner when another key signs the cancellation", async () => {
      const { usdc, domain, holder, stranger } = await loadFixture(usdcFixture);
      const nonce = ethers.hexlify(ethers.randomBytes(32));
      const cancel = await sign(stranger, domain, "CancelAuthorization", { authorizer: holder.address, nonce });
      await expect(usdc.cancelAuthorization(holder.address, nonce, cancel.v, cancel.r, cancel.s))
        .to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner")
        .withArgs(stranger.address, holder.address);
    });
  });
});

describe("FeeOnTransferToken", () => {
  it("burns feeBps of every transfer, and nothing on mint", async () => {
    const [sender, receiver] = await ethers.getSigners();
    const fot = await ethers.deployContract("FeeOnTransferToken", [250]);
    await fot.mint(sender.address, 1_000_000n);
    expect(await fot.totalSupply()).to.equal(1_000_000n);
    await expect(fot.transfer(receiver.address, 10_000n)).to.changeTokenBalances(
      fot,
      [sender, receiver],
      [-10_000n, 9_750n],
    );
    expect(await fot.totalSupply()).to.equal(1_000_000n - 250n);
    expect(await fot.feeBps()).to.equal(250);
  });
});
