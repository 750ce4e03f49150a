import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadFixture } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { type BaseWallet, keccak256, TypedDataEncoder, toUtf8Bytes } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  DOMAIN_NAME,
  DOMAIN_VERSION,
  type Hex,
  machinePayDomain,
  PAYMENT_TYPE,
  packPayment,
} from "../sdk/src";
import { ethersPaymentTypes, reason } from "./admin-helpers";
import { deployFixture } from "./fixtures";
import { domainOf, newDevices, payment, policyParams, registerDevice, USDC } from "./helpers";
import { expectPaymentSettled } from "./settle-helpers";

// Pinned on purpose: changing either breaks every device already signing. Computed once with
// keccak256(toUtf8Bytes(PAYMENT_TYPE)) and written here as literals.
const PINNED_PAYMENT_TYPE =
  "Payment(address payee,address token,uint256 amount,uint256 nonce,uint256 deadline,uint256 maxFee,bytes32 ref)";
const PINNED_PAYMENT_TYPEHASH = "0xc477d1036850df1e7fc3b5026077e9b0faa948a8e35e6ca52b1a320706bd9d27";

/** deployFixture plus a registered device key. */
async function signingFixture() {
  const base = await deployFixture();
  const [device] = newDevices(1) as [BaseWallet];
  await registerDevice(base.pay, base.owner, device, policyParams(base.usdcAddress));
  return { ...base, device };
}

describe("EIP-712 types and domain", () => {
  describe("the Payment type", () => {
    it("the sdk's PAYMENT_TYPE is the pinned string and hashes to the pinned type hash", () => {
      expect(PAYMENT_TYPE).to.equal(PINNED_PAYMENT_TYPE);
      expect(keccak256(toUtf8Bytes(PINNED_PAYMENT_TYPE))).to.equal(PINNED_PAYMENT_TYPEHASH);
    });

    it("ethers encodes the sdk's paymentTypes to the pinned string", () => {
      const encoded = TypedDataEncoder.from(ethersPaymentTypes).encodeType("Payment");
      expect(encoded).to.equal(PINNED_PAYMENT_TYPE);
      expect(keccak256(toUtf8Bytes(encoded))).to.equal(PINNED_PAYMENT_TYPEHASH);
    });

    it("the contract's PaymentHash.PAYMENT_TYPE source literal is the pinned string", () => {
      const source = readFileSync(join(__dirname, "../contracts/libraries/PaymentHash.sol"), "utf8");
      const literal = /PAYMENT_TYPE\s*=\s*"([^"]*)"/.exec(source)?.[1];
      expect(literal).to.equal(PINNED_PAYMENT_TYPE);
    });
  });

  describe("the on-chain domain", () => {
    it("eip712Domain() is name MachinePay, version 1, this chain and this contract, as the sdk builds it", async () => {
      const { pay } = await loadFixture(deployFixture);
      const { chainId } = await ethers.provider.getNetwork();
      const expected = machinePayDomain({ chainId, verifyingContract: (await pay.getAddress()) as Address });
      const [fields, name, version, onChainId, verifyingContract, salt, extensions] = await pay.eip712Domain();
      expect(fields).to.equal("0x0f"); // name, version, chainId, verifyingContract; no salt
      expect([name, version, onChainId, verifyingContract]).to.deep.equal([
        expected.name,
        expected.version,
        BigInt(expected.chainId),
        expected.verifyingContract,
      ]);
      expect([name, version]).to.deep.equal([DOMAIN_NAME, DOMAIN_VERSION]);
      expect(salt).to.equal(ethers.ZeroHash);
      expect(extensions).to.deep.equal([]);
    });

    it("domainSeparator() is the hash ethers computes for the sdk's domain", async () => {
      const { pay } = await loadFixture(deployFixture);
      expect(await pay.domainSeparator()).to.equal(TypedDataEncoder.hashDomain(await domainOf(pay)));
    });
  });

  describe("signing", () => {
    it("the same payment signed twice gives the same signature (RFC 6979 nonces)", async () => {
      const { pay, device, payee, usdcAddress } = await loadFixture(signingFixture);
      const domain = await domainOf(pay);
      const p = await payment({ payee: payee.address as Address, token: usdcAddress, amount: USDC(2), nonce: 7n });
      const first = await device.signTypedData(domain, ethersPaymentTypes, p);
      const second = await device.signTypedData(domain, ethersPaymentTypes, { ...p });
      expect(second).to.equal(first);
      const other = await device.signTypedData(domain, ethersPaymentTypes, { ...p, nonce: 8n });
      expect(other).to.not.equal(first);
    });

    it("the digest is keccak256(0x1901, on-chain domainSeparator, hashStruct with the pinned type hash)", async () => {
      const { pay, payee, usdcAddress } = await loadFixture(signingFixture);
      const p = await payment({ payee: payee.address as Address, token: usdcAddress, amount: USDC(2), nonce: 7n });
      const structHash = keccak256(
        ethers.AbiCoder.defaultAbiCoder().encode(
          ["bytes32", "address", "address", "uint256", "uint256", "uint256", "uint256", "bytes32"],
          [PINNED_PAYMENT_TYPEHASH, p.payee, p.token, p.amount, p.nonce, p.deadline, p.maxFee, p.ref],
        ),
      );
      const digest = ethers.solidityPackedKeccak256(
        ["bytes2", "bytes32", "bytes32"],
        ["0x1901", await pay.domainSeparator(), structHash],
      );
      expect(TypedDataEncoder.hash(await domainOf(pay), ethersPaymentTypes, p)).to.equal(digest);
    });

    it("the contract recovers the signer from the digest ethers computes: the payment settles", async () => {
      const { pay, device, payee, relayer, usdcAddress } = await loadFixture(signingFixture);
      const domain = await domainOf(pay);
      const p = await payment({ payee: payee.address as Address, token: usdcAddress, amount: USDC(2), nonce: 7n });
      const signature = (await device.signTypedData(domain, ethersPaymentTypes, p)) as Hex;
      const digest = TypedDataEncoder.hash(domain, ethersPaymentTypes, p);
      expect(ethers.recoverAddress(digest, signature)).to.equal(device.address);
      await expectPaymentSettled(
        pay,
        pay.connect(relayer).settle(usdcAddress, [packPayment(p, signature)], relayer.address),
        {
          device: device.address,
          payee: payee.address,
          token: usdcAddress,
          amount: USDC(2),
          nonce: 7n,
          ref: p.ref,
        },
      );
    });

    it("a signature over another chain id recovers another key: skipped as UnknownDevice", async () => {
      const { pay, device, payee, relayer, usdcAddress } = await loadFixture(signingFixture);
      const domain = await domainOf(pay);
      const p = await payment({ payee: payee.address as Address, token: usdcAddress });
      const signature = (await device.signTypedData({ ...domain, chainId: 1 }, ethersPaymentTypes, p)) as Hex;
      const recovered = ethers.recoverAddress(TypedDataEncoder.hash(domain, ethersPaymentTypes, p), signature);
      expect(recovered).to.not.equal(device.address);
      await expect(pay.connect(relayer).settle(usdcAddress, [packPayment(p, signature)], relayer.address))
        .to.emit(pay, "PaymentSkipped")
        .withArgs(0, recovered, reason("UnknownDevice"));
    });
  });
});
