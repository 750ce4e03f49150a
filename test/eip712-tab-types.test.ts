import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { keccak256, TypedDataEncoder, toUtf8Bytes } from "ethers";
import { ethers } from "hardhat";
import { type Hex, packVoucher, TAB_CLOSE_TYPE, toCompactSignature, VOUCHER_TYPE } from "../sdk/src";
import { domainOf, USDC } from "./helpers";
import { ethersVoucherTypes, expectVoucherSettled, tabCloseTypes, tabFixtureWith, toVoucher } from "./tab-helpers";

// Pinned on purpose: changing either breaks every device already signing vouchers or closes.
// Computed once with keccak256(toUtf8Bytes(type)) and written here as literals.
const PINNED_VOUCHER_TYPE =
  "Voucher(address payee,address token,uint256 tabId,uint256 cumulative,uint256 deadline,uint256 maxFee)";
const PINNED_VOUCHER_TYPEHASH = "0xd38641f80767199f53123f7b142d572eeb04558d9ca0734714a6f450522baf32";
const PINNED_TAB_CLOSE_TYPE = "TabClose(address payee,address token,uint256 tabId,uint256 deadline)";
const PINNED_TAB_CLOSE_TYPEHASH = "0xcfd1ca01ebb55f19ce5e633a4394eabd57ee483f87967e97a7842ff92d826bc1";

const VOUCHER_HASH_SOL = readFileSync(join(__dirname, "../contracts/libraries/VoucherHash.sol"), "utf8");

/** The string literal assigned to `name` in VoucherHash.sol (the source may wrap it onto the next line). */
function solidityLiteral(name: string): string | undefined {
  return new RegExp(`\\b${name}\\s*=\\s*"([^"]*)"`).exec(VOUCHER_HASH_SOL)?.[1];
}

async function tabTypesFixture() {
  return tabFixtureWith();
}

describe("EIP-712 tab types", () => {
  describe("the Voucher type", () => {
    it("the sdk's VOUCHER_TYPE is the pinned string and hashes to the pinned type hash", () => {
      expect(VOUCHER_TYPE).to.equal(PINNED_VOUCHER_TYPE);
      expect(keccak256(toUtf8Bytes(PINNED_VOUCHER_TYPE))).to.equal(PINNED_VOUCHER_TYPEHASH);
    });

    it("ethers encodes the sdk's voucherTypes to the pinned string", () => {
      const encoded = TypedDataEncoder.from(ethersVoucherTypes).encodeType("Voucher");
      expect(encoded).to.equal(PINNED_VOUCHER_TYPE);
      expect(keccak256(toUtf8Bytes(encoded))).to.equal(PINNED_VOUCHER_TYPEHASH);
    });

    it("the contract's VoucherHash.VOUCHER_TYPE source literal is the pinned string", () => {
      expect(solidityLiteral("VOUCHER_TYPE")).to.equal(PINNED_VOUCHER_TYPE);
    });

    it("a voucher signed over the digest built from the pinned type hash settles: the contract hashes the same", async () => {
      const { pay, device, payee, relayer, usdcAddress } = await loadFixture(tabTypesFixture);
      const v = toVoucher({ payee: payee.address, token: usdcAddress, tabId: 9n, cumulative: USDC(2), maxFee: 3n });
      const structHash = keccak256(
        ethers.AbiCoder.defaultAbiCoder().encode(
          ["bytes32", "address", "address", "uint256", "uint256", "uint256", "uint256"],
          [PINNED_VOUCHER_TYPEHASH, v.payee, v.token, v.tabId, v.cumulative, v.deadline, v.maxFee],
        ),
      );
      const digest = ethers.solidityPackedKeccak256(
        ["bytes2", "bytes32", "bytes32"],
        ["0x1901", await pay.domainSeparator(), structHash],
      );
      expect(TypedDataEncoder.hash(await domainOf(pay), ethersVoucherTypes, v)).to.equal(digest);
      const signature = device.signingKey.sign(digest).serialized as Hex;
      await expectVoucherSettled(
        pay,
        pay.connect(relayer).settleVouchers(usdcAddress, [packVoucher(v, signature, 3n)], relayer.address),
        {
          device: device.address,
          payee: payee.address,
          token: usdcAddress,
          tabId: 9n,
          increment: USDC(2),
          cumulative: USDC(2),
          fee: 3n,
        },
      );
    });
  });

  describe("the TabClose type", () => {
    it("the contract's VoucherHash.TAB_CLOSE_TYPE source literal and the sdk's TAB_CLOSE_TYPE are the pinned string", () => {
      expect(solidityLiteral("TAB_CLOSE_TYPE")).to.equal(PINNED_TAB_CLOSE_TYPE);
      expect(TAB_CLOSE_TYPE).to.equal(PINNED_TAB_CLOSE_TYPE);
      expect(keccak256(toUtf8Bytes(PINNED_TAB_CLOSE_TYPE))).to.equal(PINNED_TAB_CLOSE_TYPEHASH);
    });

    it("ethers encodes the sdk's tabCloseTypes to the pinned string", () => {
      expect(TypedDataEncoder.from(tabCloseTypes).encodeType("TabClose")).to.equal(PINNED_TAB_CLOSE_TYPE);
    });

    it("a TabClose signed over the digest built from the pinned type hash is accepted by closeTabBySignature", async () => {
      const { pay, device, payee, stranger, usdcAddress } = await loadFixture(tabTypesFixture);
      const deadline = BigInt((await time.latest()) + 1000);
      const msg = { payee: payee.address, token: usdcAddress, tabId: 4n, deadline };
      const structHash = keccak256(
        ethers.AbiCoder.defaultAbiCoder().encode(
          ["bytes32", "address", "address", "uint256", "uint256"],
          [PINNED_TAB_CLOSE_TYPEHASH, msg.payee, msg.token, msg.tabId, msg.deadline],
        ),
      );
      const digest = ethers.solidityPackedKeccak256(
        ["bytes2", "bytes32", "bytes32"],
        ["0x1901", await pay.domainSeparator(), structHash],
      );
      expect(TypedDataEncoder.hash(await domainOf(pay), tabCloseTypes, msg)).to.equal(digest);
      const { r, vs } = toCompactSignature(device.signingKey.sign(digest).serialized as Hex);
      await expect(
        pay.connect(stranger).closeTabBySignature(device.address, payee.address, usdcAddress, 4n, deadline, r, vs),
      ).to.emit(pay, "TabClosing");
      expect((await pay.getTab(device.address, payee.address, usdcAddress, 4n)).closesAt).to.be.greaterThan(0n);
    });
  });
});
