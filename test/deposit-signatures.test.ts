import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { type BaseWallet, Signature, type Signer, type TypedDataField } from "ethers";
import { ethers } from "hardhat";
import type { MachinePay } from "../typechain-types";
import { deployFixture } from "./fixtures";
import { newDevices, USDC, ZERO } from "./helpers";
import { expectLedgerMatchesHoldings } from "./settle-helpers";

const PERMIT_TYPES: Record<string, TypedDataField[]> = {
  Permit: [
    { name: "owner", type: "address" },
    { name: "spender", type: "address" },
    { name: "value", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
};
const AUTHORIZATION_FIELDS: TypedDataField[] = [
  { name: "from", type: "address" },
  { name: "to", type: "address" },
  { name: "value", type: "uint256" },
  { name: "validAfter", type: "uint256" },
  { name: "validBefore", type: "uint256" },
  { name: "nonce", type: "bytes32" },
];
const RECEIVE_TYPES = { ReceiveWithAuthorization: AUTHORIZATION_FIELDS };
const TRANSFER_TYPES = { TransferWithAuthorization: AUTHORIZATION_FIELDS };

/**
 * deployFixture plus two USDC holders with no escrow: `holder`, a key with 100 USDC and no ether
 * (it only signs), and `self`, an account with 100 USDC that sends its own transactions. The
 * attacker is the stranger; the relayer submits for the holders.
 */
async function depositFixture() {
  const f = await deployFixture();
  const self = (await ethers.getSigners())[6];
  const [holder] = newDevices(1);
  await f.usdc.mint(holder.address, USDC(100));
  await f.usdc.mint(self.address, USDC(100));
  const { chainId } = await ethers.provider.getNetwork();
  const usdcDomain = { name: "USD Coin", version: "1", chainId, verifyingContract: f.usdcAddress };
  const payAddress = await f.pay.getAddress();
  const accounts = [f.owner, f.relayer, f.payee, f.payee2, f.stranger, self].map((s) => s.address);
  return { ...f, holder, self, usdcDomain, payAddress, accounts: [...accounts, holder.address] };
}
type Fixture = Awaited<ReturnType<typeof depositFixture>>;

type Permit = { owner: string; spender: string; value: bigint; nonce: bigint; deadline: bigint };

/** `signer`'s permit of `value` to MachinePay (or `over.spender`), at its current nonce, for an hour. */
async function signPermit(f: Fixture, signer: BaseWallet | Signer, value: bigint, over: Partial<Permit> = {}) {
  const owner = await signer.getAddress();
  const permit: Permit = {
    owner,
    spender: f.payAddress,
    value,
    nonce: await f.usdc.nonces(owner),
    deadline: BigInt(await time.latest()) + 3_600n,
    ...over,
  };
  return { permit, sig: Signature.from(await signer.signTypedData(f.usdcDomain, PERMIT_TYPES, permit)) };
}

function depositWithPermit(
  pay: MachinePay,
  token: string,
  { permit, sig }: Awaited<ReturnType<typeof signPermit>>,
  owner = permit.owner,
  amount = permit.value,
) {
  return pay.depositWithPermit(owner, token, amount, permit.deadline, sig.v, sig.r, sig.s);
}

type Authorization = {
  from: string;
  to: string;
  value: bigint;
  validAfter: bigint;
  validBefore: bigint;
  nonce: string;
};

/** `signer`'s ReceiveWithAuthorization (or TransferWithAuthorization) of `value` to MachinePay, valid for an hour. */
async function signAuthorization(
  f: Fixture,
  signer: BaseWallet | Signer,
  value: bigint,
  over: Partial<Authorization> = {},
  types: Record<string, TypedDataField[]> = RECEIVE_TYPES,
) {
  const a: Authorization = {
    from: await signer.getAddress(),
    to: f.payAddress,
    value,
    validAfter: 0n,
    validBefore: BigInt(await time.latest()) + 3_600n,
    nonce: ethers.hexlify(ethers.randomBytes(32)),
    ...over,
  };
  return { a, sig: Signature.from(await signer.signTypedData(f.usdcDomain, types, a)) };
}

function depositWithAuthorization(
  pay: MachinePay,
  token: string,
  { a, sig }: Awaited<ReturnType<typeof signAuthorization>>,
  over: Partial<Authorization> = {},
) {
  const x = { ...a, ...over };
  return pay.depositWithAuthorization(
    x.from,
    token,
    x.value,
    x.validAfter,
    x.validBefore,
    x.nonce,
    sig.v,
    sig.r,
    sig.s,
  );
}

function receiveArgs({ a, sig }: Awaited<ReturnType<typeof signAuthorization>>, to = a.to) {
  return [a.from, to, a.value, a.validAfter, a.validBefore, a.nonce, sig.v, sig.r, sig.s] as const;
}

describe("deposits with a signature (one transaction, submitted by anyone)", () => {
  describe("depositWithPermit (EIP-2612)", () => {
    it("a relayer submits the holder's permit: the holder is debited and credited, the allowance used up", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, holder } = f;
      const signed = await signPermit(f, holder, USDC(40));
      const tx = depositWithPermit(pay.connect(relayer), usdcAddress, signed);
      await expect(tx).to.emit(pay, "Deposited").withArgs(holder.address, usdcAddress, USDC(40));
      await expect(tx).to.changeTokenBalances(
        usdc,
        [holder.address, f.payAddress, relayer.address],
        [-USDC(40), USDC(40), 0],
      );
      expect(await pay.balanceOf(holder.address, usdcAddress)).to.equal(USDC(40));
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(0n);
      expect(await usdc.allowance(holder.address, f.payAddress)).to.equal(0n);
      expect(await usdc.nonces(holder.address)).to.equal(1n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a front-run permit (submitted to the token first) still lets the owner's own call deposit", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, stranger, self } = f;
      const signed = await signPermit(f, self, USDC(30));
      const { permit, sig } = signed;
      await usdc
        .connect(stranger)
        .permit(permit.owner, permit.spender, permit.value, permit.deadline, sig.v, sig.r, sig.s);
      expect(await usdc.allowance(self.address, f.payAddress)).to.equal(USDC(30));
      await expect(depositWithPermit(pay.connect(self), usdcAddress, signed))
        .to.emit(pay, "Deposited")
        .withArgs(self.address, usdcAddress, USDC(30));
      expect(await pay.balanceOf(self.address, usdcAddress)).to.equal(USDC(30));
      expect(await usdc.allowance(self.address, f.payAddress)).to.equal(0n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("after a front-run, a third party's call reverts PermitFailed: nobody else moves funds on a bare allowance", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, stranger, self } = f;
      const signed = await signPermit(f, self, USDC(30));
      const { permit, sig } = signed;
      await usdc
        .connect(stranger)
        .permit(permit.owner, permit.spender, permit.value, permit.deadline, sig.v, sig.r, sig.s);
      for (const who of [relayer, stranger]) {
        await expect(depositWithPermit(pay.connect(who), usdcAddress, signed))
          .to.be.revertedWithCustomError(pay, "PermitFailed")
          .withArgs(self.address, usdcAddress);
      }
      expect(await usdc.balanceOf(self.address)).to.equal(USDC(100));
      // The owner's standing allowance (here unlimited, from the fixture) is no licence for anyone else either.
      const { owner } = f;
      const garbage = { permit: { ...permit, owner: owner.address }, sig };
      await expect(depositWithPermit(pay.connect(relayer), usdcAddress, garbage))
        .to.be.revertedWithCustomError(pay, "PermitFailed")
        .withArgs(owner.address, usdcAddress);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("the owner's own call with a used permit needs an allowance of at least the amount", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, stranger, self } = f;
      const signed = await signPermit(f, self, USDC(30));
      const { permit, sig } = signed;
      await usdc
        .connect(stranger)
        .permit(permit.owner, permit.spender, permit.value, permit.deadline, sig.v, sig.r, sig.s);
      await expect(depositWithPermit(pay.connect(self), usdcAddress, signed, self.address, USDC(30) + 1n))
        .to.be.revertedWithCustomError(pay, "PermitFailed")
        .withArgs(self.address, usdcAddress);
      await expect(depositWithPermit(pay.connect(self), usdcAddress, signed, self.address, USDC(12)))
        .to.emit(pay, "Deposited")
        .withArgs(self.address, usdcAddress, USDC(12));
      expect(await usdc.allowance(self.address, f.payAddress)).to.equal(USDC(18));
    });

    it("an expired, mis-signed or altered permit reverts PermitFailed and moves nothing", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, holder, stranger } = f;
      const expired = await signPermit(f, holder, USDC(5), { deadline: BigInt(await time.latest()) });
      const byStranger = await signPermit(f, stranger, USDC(5));
      const good = await signPermit(f, holder, USDC(5));
      const otherSpender = await signPermit(f, holder, USDC(5), { spender: relayer.address });
      const cases = [
        ["expired", () => depositWithPermit(pay.connect(relayer), usdcAddress, expired)],
        ["another key's", () => depositWithPermit(pay.connect(relayer), usdcAddress, byStranger, holder.address)],
        ["another amount", () => depositWithPermit(pay.connect(relayer), usdcAddress, good, holder.address, USDC(6))],
        ["another spender", () => depositWithPermit(pay.connect(relayer), usdcAddress, otherSpender)],
      ] as const;
      for (const [name, send] of cases) {
        await expect(send(), name)
          .to.be.revertedWithCustomError(pay, "PermitFailed")
          .withArgs(holder.address, usdcAddress);
      }
      // The owner calling itself with an expired permit and no allowance fails the same way.
      const selfExpired = await signPermit(f, f.self, USDC(5), { deadline: BigInt(await time.latest()) });
      await expect(depositWithPermit(pay.connect(f.self), usdcAddress, selfExpired))
        .to.be.revertedWithCustomError(pay, "PermitFailed")
        .withArgs(f.self.address, usdcAddress);
      expect(await usdc.balanceOf(holder.address)).to.equal(USDC(100));
      expect(await usdc.nonces(holder.address)).to.equal(0n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("reverts ZeroAmount for a permit of 0, and ZeroAddress for a zero owner or token", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdcAddress, relayer, holder } = f;
      await expect(
        depositWithPermit(pay.connect(relayer), usdcAddress, await signPermit(f, holder, 0n)),
      ).to.be.revertedWithCustomError(pay, "ZeroAmount");
      const signed = await signPermit(f, holder, USDC(1));
      await expect(depositWithPermit(pay.connect(relayer), usdcAddress, signed, ZERO)).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
      await expect(depositWithPermit(pay.connect(relayer), ZERO, signed)).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
      // The good permit is still usable afterwards: nothing was spent.
      await expect(depositWithPermit(pay.connect(relayer), usdcAddress, signed)).to.emit(pay, "Deposited");
    });

    it("a token without permit: only its owner deposits on a prior approve; a third party reverts PermitFailed", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, relayer, self } = f;
      const fot = await ethers.deployContract("FeeOnTransferToken", [100]);
      const fotAddress = await fot.getAddress();
      await fot.mint(self.address, 10_000n);
      await fot.connect(self).approve(f.payAddress, 10_000n);
      const noSig = { v: 27, r: ethers.ZeroHash, s: ethers.ZeroHash };
      await expect(
        pay.connect(relayer).depositWithPermit(self.address, fotAddress, 1_000n, 0, noSig.v, noSig.r, noSig.s),
      )
        .to.be.revertedWithCustomError(pay, "PermitFailed")
        .withArgs(self.address, fotAddress);
      // Credits what arrived (1% is burnt in transfer).
      await expect(pay.connect(self).depositWithPermit(self.address, fotAddress, 1_000n, 0, noSig.v, noSig.r, noSig.s))
        .to.emit(pay, "Deposited")
        .withArgs(self.address, fotAddress, 990n);
      expect(await pay.balanceOf(self.address, fotAddress)).to.equal(990n);
      expect(await fot.balanceOf(f.payAddress)).to.equal(990n);
    });
  });

  describe("depositWithAuthorization (EIP-3009 receiveWithAuthorization)", () => {
    it("anyone submits it: `from` is credited, Deposited is emitted, the submitter gets nothing", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, stranger, holder } = f;
      const signed = await signAuthorization(f, holder, USDC(25));
      const tx = depositWithAuthorization(pay.connect(relayer), usdcAddress, signed);
      await expect(tx).to.emit(pay, "Deposited").withArgs(holder.address, usdcAddress, USDC(25));
      await expect(tx).to.emit(usdc, "AuthorizationUsed").withArgs(holder.address, signed.a.nonce);
      await expect(tx).to.changeTokenBalances(
        usdc,
        [holder.address, f.payAddress, relayer.address],
        [-USDC(25), USDC(25), 0],
      );
      expect(await pay.balanceOf(holder.address, usdcAddress)).to.equal(USDC(25));
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(0n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
      // A second authorization, submitted by a stranger: still the holder's money and the holder's credit.
      await expect(depositWithAuthorization(pay.connect(stranger), usdcAddress, await signAuthorization(f, holder, 1n)))
        .to.emit(pay, "Deposited")
        .withArgs(holder.address, usdcAddress, 1n);
      expect(await pay.balanceOf(holder.address, usdcAddress)).to.equal(USDC(25) + 1n);
      expect(await pay.balanceOf(stranger.address, usdcAddress)).to.equal(0n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a replayed authorization is refused by the token", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, holder } = f;
      const signed = await signAuthorization(f, holder, USDC(5));
      await depositWithAuthorization(pay.connect(relayer), usdcAddress, signed);
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, signed))
        .to.be.revertedWithCustomError(usdc, "AuthorizationAlreadyUsed")
        .withArgs(holder.address, signed.a.nonce);
      expect(await pay.balanceOf(holder.address, usdcAddress)).to.equal(USDC(5));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a wrong signature is refused: another key's, changed terms, or a TransferWithAuthorization", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, holder, stranger } = f;
      const byStranger = await signAuthorization(f, stranger, USDC(5), { from: holder.address });
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, byStranger))
        .to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner")
        .withArgs(stranger.address, holder.address);
      const good = await signAuthorization(f, holder, USDC(5));
      for (const over of [{ value: USDC(6) }, { validBefore: good.a.validBefore + 1n }, { nonce: ethers.ZeroHash }]) {
        await expect(
          depositWithAuthorization(pay.connect(relayer), usdcAddress, good, over),
        ).to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner");
      }
      const transfer = await signAuthorization(f, holder, USDC(5), {}, TRANSFER_TYPES);
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, transfer)).to.be.revertedWithCustomError(
        usdc,
        "InvalidAuthorizationSigner",
      );
      expect(await usdc.balanceOf(holder.address)).to.equal(USDC(100));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("an authorization outside its validity window is refused by the token", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, holder } = f;
      const now = BigInt(await time.latest());
      const early = await signAuthorization(f, holder, USDC(5), { validAfter: now + 100n });
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, early)).to.be.revertedWithCustomError(
        usdc,
        "AuthorizationNotYetValid",
      );
      const late = await signAuthorization(f, holder, USDC(5), { validBefore: now + 1n });
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, late)).to.be.revertedWithCustomError(
        usdc,
        "AuthorizationExpired",
      );
    });

    it("a front-runner calling the token itself cannot redirect the funds, and the deposit then goes through", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdc, usdcAddress, relayer, stranger, holder } = f;
      const signed = await signAuthorization(f, holder, USDC(20));
      // receiveWithAuthorization to MachinePay can only be redeemed by MachinePay...
      await expect(usdc.connect(stranger).receiveWithAuthorization(...receiveArgs(signed)))
        .to.be.revertedWithCustomError(usdc, "CallerMustBePayee")
        .withArgs(stranger.address, f.payAddress);
      // ...naming itself as the payee breaks the signature...
      await expect(
        usdc.connect(stranger).receiveWithAuthorization(...receiveArgs(signed, stranger.address)),
      ).to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner");
      // ...and the signature is not a TransferWithAuthorization, to MachinePay or anyone.
      for (const to of [f.payAddress, stranger.address]) {
        await expect(
          usdc.connect(stranger).transferWithAuthorization(...receiveArgs(signed, to)),
        ).to.be.revertedWithCustomError(usdc, "InvalidAuthorizationSigner");
      }
      expect(await usdc.balanceOf(stranger.address)).to.equal(0n);
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, signed))
        .to.emit(pay, "Deposited")
        .withArgs(holder.address, usdcAddress, USDC(20));
      expect(await usdc.balanceOf(holder.address)).to.equal(USDC(80));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("reverts ZeroAddress for a zero `from` or token, and ZeroAmount for 0", async () => {
      const f = await loadFixture(depositFixture);
      const { pay, usdcAddress, relayer, holder } = f;
      const signed = await signAuthorization(f, holder, USDC(5));
      await expect(
        depositWithAuthorization(pay.connect(relayer), usdcAddress, signed, { from: ZERO }),
      ).to.be.revertedWithCustomError(pay, "ZeroAddress");
      await expect(depositWithAuthorization(pay.connect(relayer), ZERO, signed)).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
      await expect(
        depositWithAuthorization(pay.connect(relayer), usdcAddress, await signAuthorization(f, holder, 0n)),
      ).to.be.revertedWithCustomError(pay, "ZeroAmount");
      await expect(depositWithAuthorization(pay.connect(relayer), usdcAddress, signed)).to.emit(pay, "Deposited");
    });
  });
});
