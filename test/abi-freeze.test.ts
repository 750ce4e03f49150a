/**
 * Pins MachinePay's v1 ABI: every function (signature, selector, mutability, return types), every
 * event (signature with its indexed parameters, topic), every error (signature, selector), every
 * EIP-712 type string and type hash the contract verifies, and the sdk's generated copy of the ABI.
 * The lists below were computed once from the compiled artifact, reviewed against
 * contracts/interfaces/IMachinePay.sol, and written here as literals: a change to the interface
 * fails here until the pins are updated on purpose.
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { type EventFragment, type FunctionFragment, Interface, keccak256, TypedDataEncoder, toUtf8Bytes } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  ENROLLMENT_TYPE,
  enrollmentTypes,
  machinePayAbi,
  ONBOARDING_TYPE,
  onboardingTypes,
  PAYMENT_TYPE,
  paymentTypes,
  REASONS,
  REVOCATION_TYPE,
  revocationTypes,
  signTypedMessage,
  TAB_CLOSE_TYPE,
  tabCloseTypes,
  toCompactSignature,
  VOUCHER_TYPE,
  voucherTypes,
} from "../sdk/src";
import { onboardingArgs, onboardingOrder, revocationArgs, revocationOrder, signOrder } from "./admin-helpers";
import { deployFixture } from "./fixtures";
import { domainOf, enrollment, newDevices } from "./helpers";
import { settleExpect, signed } from "./settle-helpers";
import { settleVouchersExpect, voucherBy } from "./tab-helpers";

const CHANGED = "the v1 ABI changed: if deliberate, update the pins and say so in the README";

const ARTIFACT = JSON.parse(
  readFileSync(join(__dirname, "../artifacts/contracts/MachinePay.sol/MachinePay.json"), "utf8"),
) as { abi: readonly Record<string, unknown>[] };

/** [signature, selector, stateMutability, return types]. */
const FUNCTIONS: [string, string, string, string][] = [
  ["announceWithdrawal(address,uint256)", "0x0e903829", "nonpayable", "()"],
  ["assignDevices(uint32,address[],(bytes32,bytes32)[])", "0x1b444809", "nonpayable", "()"],
  ["balanceOf(address,address)", "0xf7888aec", "view", "(uint256)"],
  ["cancelWithdrawal(address)", "0x3e0db869", "nonpayable", "()"],
  ["closeTab(address,address,address,uint256)", "0x5fbe59b9", "nonpayable", "()"],
  ["closeTabBySignature(address,address,address,uint256,uint256,bytes32,bytes32)", "0xe874669c", "nonpayable", "()"],
  ["createPolicy((address,uint64,uint64,uint32,uint64,uint32,uint32,bool))", "0x19af359a", "nonpayable", "(uint32)"],
  ["deposit(address,uint256)", "0x47e7ef24", "payable", "()"],
  ["depositFor(address,address,uint256)", "0xb3db428b", "payable", "()"],
  [
    "depositWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
    "0x8a94d4fc",
    "nonpayable",
    "()",
  ],
  ["depositWithPermit(address,address,uint256,uint256,uint8,bytes32,bytes32)", "0x8ef59739", "nonpayable", "()"],
  ["domainSeparator()", "0xf698da25", "view", "(bytes32)"],
  ["eip712Domain()", "0x84b0196e", "view", "(bytes1,string,string,uint256,address,bytes32,uint256[])"],
  ["executeWithdrawal(address,address)", "0x7852fc1e", "nonpayable", "(uint256)"],
  ["freezeAll()", "0x99464c89", "nonpayable", "()"],
  ["getDevice(address)", "0x00d55318", "view", "((uint32,bool,uint32,uint64,uint64,uint32,uint24))"],
  [
    "getPolicy(uint32)",
    "0xc409e513",
    "view",
    "((address,uint32,uint32,uint32,address,uint32,bool,bool,uint64,uint64,uint64))",
  ],
  ["getTab(address,address,address,uint256)", "0x6a99dbe2", "view", "((uint96,uint40))"],
  [
    "headroom(address)",
    "0xaf3e31ae",
    "view",
    "((uint8,uint32,address,address,uint256,uint256,uint256,uint256,uint256,uint256,uint32,uint24))",
  ],
  ["isPayeeAllowed(uint32,address)", "0xbb8df073", "view", "(bool)"],
  ["nonceStatus(address,uint256)", "0x95b4f040", "view", "(uint8)"],
  ["NOTICE_PERIOD()", "0x200e4092", "view", "(uint256)"],
  [
    "onboardBySignature((address,uint32,(address,uint64,uint64,uint32,uint64,uint32,uint32,bool),uint32,uint256,uint256),address[],(bytes32,bytes32)[],bytes)",
    "0xdb40da77",
    "nonpayable",
    "(uint32)",
  ],
  ["ownerEpoch(address)", "0x2fe811af", "view", "(uint32)"],
  ["ownerNonceUsed(address,uint256)", "0x889795a1", "view", "(bool)"],
  ["ownsPolicies(address)", "0x68679984", "view", "(bool)"],
  ["pendingWithdrawal(address,address)", "0x889de79c", "view", "((uint192,uint64))"],
  ["policyCount()", "0xde54d429", "view", "(uint32)"],
  [
    "preview(address,(uint256,uint256,bytes32,bytes32,bytes32)[],address)",
    "0x32534338",
    "nonpayable",
    "(uint8[],address[])",
  ],
  ["previewAndRevert(address,(uint256,uint256,bytes32,bytes32,bytes32)[],address)", "0xcc1cfd4f", "nonpayable", "()"],
  [
    "previewVouchers(address,(uint256,uint256,uint256,bytes32,bytes32)[],address)",
    "0x778f62cf",
    "nonpayable",
    "(uint8[],address[])",
  ],
  [
    "previewVouchersAndRevert(address,(uint256,uint256,uint256,bytes32,bytes32)[],address)",
    "0xa7c02445",
    "nonpayable",
    "()",
  ],
  [
    "registerDevice(address,(address,uint64,uint64,uint32,uint64,uint32,uint32,bool),(bytes32,bytes32))",
    "0x61aae490",
    "nonpayable",
    "(uint32)",
  ],
  ["revokeBySignature((address,uint32,uint256,uint256),address[],bytes)", "0xadcf6eaa", "nonpayable", "()"],
  ["revokeDevice(address)", "0x6fe3c2b2", "nonpayable", "()"],
  ["setDevicePaused(address,bool)", "0x7f9cc460", "nonpayable", "()"],
  ["setPayees(uint32,address[],bool)", "0x2b21ef22", "nonpayable", "()"],
  ["setPolicyPaused(uint32,bool)", "0x7bd7f0ce", "nonpayable", "()"],
  ["settle(address,(uint256,uint256,bytes32,bytes32,bytes32)[],address)", "0x79c1112a", "nonpayable", "()"],
  ["settleVouchers(address,(uint256,uint256,uint256,bytes32,bytes32)[],address)", "0x23572be4", "nonpayable", "()"],
  ["tabKey(address,address,address,uint256)", "0x64d54375", "pure", "(bytes32)"],
  ["updatePolicy(uint32,(address,uint64,uint64,uint32,uint64,uint32,uint32,bool))", "0x00f801ce", "nonpayable", "()"],
  ["withdraw(address,uint256,address)", "0x69328dec", "nonpayable", "()"],
];

/** [signature with indexed parameters marked, topic0]. */
const EVENTS: [string, string][] = [
  [
    "BatchSettled(address indexed,address indexed,address,uint256,uint256)",
    "0x89ff6e5e8a00e9a637c5c84a1c35dbd3433608e5ca251190acddb8f8fa75df14",
  ],
  [
    "Deposited(address indexed,address indexed,uint256)",
    "0x8752a472e571a816aea92eec8dae9baf628e840f4929fbcc2d155e6233ff68a7",
  ],
  [
    "DeviceAssigned(address indexed,uint32 indexed)",
    "0x8185edb7b9005b68b2ed1bb2eacedf9faf480ae86ae71fe11fa2ca08c11b35f2",
  ],
  ["DevicePausedSet(address indexed,bool)", "0xd8d66451a9cf41a5d1237e5ed44975a678b8a6ee29f4e3f0ba498432c8b9d7bb"],
  [
    "DeviceRevokedForever(address indexed,address indexed)",
    "0x17a2a2c0f419a688f848c0518fb4406358b4f51e7b3fa5ec1a5a489b21f62071",
  ],
  ["EIP712DomainChanged()", "0x0a6387c9ea3628b88a633bb4f3b151770f70085117a15f9bf3787cda53f13d31"],
  ["OwnerFrozen(address indexed,uint32)", "0xc85c0f00510f6edcea8bbf203c60b4760bc2097b456e48361f5de6bb470444da"],
  ["PayeesSet(uint32 indexed,address[],bool)", "0x0ea8c70cfe445054cfb4ced2555c737d74c5b1e83a02530a211e0bd28ff4bbac"],
  [
    "PaymentSettled(address indexed,address indexed,bytes32,uint256)",
    "0x403075b6638109f37e154eadf12cad6b5de1c8406370535e2c703a4613abceb7",
  ],
  ["PaymentSkipped(uint256,address,uint8)", "0xe6527b2f4e3ec3bfd7a848f3428c21bfe7ef7faa038781c231f53a8a548386f3"],
  ["PolicyPausedSet(uint32 indexed,bool)", "0x4935e5f8a94637017db097e17c36d75989e8f52529e691269ed409abc877bd6b"],
  [
    "PolicySet(uint32 indexed,address indexed,(address,uint32,uint32,uint32,address,uint32,bool,bool,uint64,uint64,uint64))",
    "0xfdea42f26b6a2cee3dd9d56ac6402b9222bf3b1944d6a5bf54c98f8ad4cf2641",
  ],
  [
    "TabClosing(bytes32 indexed,address indexed,address indexed,address,uint256,uint256,address)",
    "0xc2d36b54d5f36aafd590bb82fd143ea523da2f4070f5395666ca86a12b275678",
  ],
  [
    "VoucherSettled(address indexed,address indexed,uint256,uint256)",
    "0x6c15be7400c3e5551bff1a9eb40ac703fa7a40aaf8bac5aaddbff5da9ec3fad3",
  ],
  ["VoucherSkipped(uint256,address,uint8)", "0xb16bf293eb214774c144d1a3714b985d230b2542701f324740b34f85ad21c880"],
  [
    "WithdrawalAnnounced(address indexed,address indexed,uint256,uint256)",
    "0xc928030e5a8733053fe0b9b133e8e6945af6acb852da1dc5429dc036a6863847",
  ],
  [
    "WithdrawalCancelled(address indexed,address indexed)",
    "0x06788d6037cfde4c7d6701eaa3ddf0875dfe514ed5d6ea4ca14e36c24b107841",
  ],
  [
    "Withdrawn(address indexed,address indexed,address,uint256)",
    "0xa4195c37c2947bbe89165f03e320b6903116f0b10d8cfdb522330f7ce6f9fa24",
  ],
];

/** [signature, selector]. */
const ERRORS: [string, string][] = [
  ["DeviceIsRevoked(address)", "0x1cb8b7c8"],
  ["DeviceNotRegistered(address)", "0x082d79d0"],
  ["DeviceOwnedByAnother(address,address)", "0xc4f53138"],
  ["InsufficientLedgerBalance(address,address,uint256,uint256)", "0x4af0dbfd"],
  ["InvalidDeviceSignature(address)", "0xf3152e42"],
  ["InvalidEnrollment(address,address)", "0xd74673c6"],
  ["InvalidOwnerSignature()", "0x38a85a8d"],
  ["InvalidPeriodLength(uint32)", "0x16f55816"],
  ["InvalidShortString()", "0xb3512b0c"],
  ["InvalidValidity(uint32,uint32)", "0xabc586fa"],
  ["LengthMismatch(uint256,uint256)", "0xab8b67c6"],
  ["NativeAmountMismatch(uint256,uint256)", "0x7e957b11"],
  ["NativeTransferFailed(address,uint256)", "0xa5b05eec"],
  ["NoPendingWithdrawal(address,address)", "0x33f8e8e9"],
  ["NotDeviceOwner(address,address)", "0x32f007ec"],
  ["NoticeRequired(address,address)", "0x86273f62"],
  ["NotPolicyOwner(uint32,address)", "0x48a3d475"],
  ["NotTabParty(address)", "0xa7d508f2"],
  ["OwnerNonceUsed(address,uint256)", "0x2727f276"],
  ["PermitFailed(address,address)", "0x6fef213c"],
  ["PreviewResult(uint8[],address[])", "0x3f5d85d8"],
  ["ReentrancyGuardReentrantCall()", "0x3ee5aeb5"],
  ["SafeERC20FailedOperation(address)", "0x5274afe7"],
  ["SignatureExpired(uint256,uint256)", "0xf88f0490"],
  ["StaleEpoch(address,uint256,uint256)", "0x6b14e61c"],
  ["StringTooLong(string)", "0x305a27a9"],
  ["TabAlreadyClosing(uint256)", "0xeeac1d9f"],
  ["TooManyPolicies()", "0x8c47adbb"],
  ["UnexpectedNativeValue(uint256)", "0xaae3b3da"],
  ["UnknownPolicy(uint32)", "0x22835a2c"],
  ["WithdrawalNotReady(uint256,uint256)", "0xb42fcca6"],
  ["ZeroAddress()", "0xd92e233d"],
  ["ZeroAmount()", "0x1f2a2005"],
];

/** [primary type, the exact type string, its keccak256]; Onboarding's includes PolicyParams, as EIP-712 appends it. */
const TYPES: [string, string, string][] = [
  [
    "Payment",
    "Payment(address payee,address token,uint256 amount,uint256 nonce,uint256 deadline,uint256 maxFee,bytes32 ref)",
    "0xc477d1036850df1e7fc3b5026077e9b0faa948a8e35e6ca52b1a320706bd9d27",
  ],
  [
    "Voucher",
    "Voucher(address payee,address token,uint256 tabId,uint256 cumulative,uint256 deadline,uint256 maxFee)",
    "0xd38641f80767199f53123f7b142d572eeb04558d9ca0734714a6f450522baf32",
  ],
  [
    "TabClose",
    "TabClose(address payee,address token,uint256 tabId,uint256 deadline)",
    "0xcfd1ca01ebb55f19ce5e633a4394eabd57ee483f87967e97a7842ff92d826bc1",
  ],
  [
    "Onboarding",
    "Onboarding(address owner,uint32 policyId,PolicyParams policy,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)" +
      "PolicyParams(address token,uint64 maxPerPayment,uint64 maxPerPeriod,uint32 periodLength,uint64 lifetimeMax,uint32 validFrom,uint32 validUntil,bool payeesRestricted)",
    "0xe52073640580c544c5dab1c9d1b06eeb8fe8068e1b2bdf6fce9482756778abed",
  ],
  [
    "Revocation",
    "Revocation(address owner,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)",
    "0x39783dbe304049743ad787e762d07fdc59c53f808cc8736578c971538705f7c1",
  ],
  ["Enrollment", "Enrollment(address owner)", "0x755ae5a0343e419f0c7c08dab9257b2709f420475bc3c20a44f8fbe6595fe7d9"],
];

const PINNED_REASONS = [
  "None",
  "InvalidSignature",
  "UnknownDevice",
  "DeviceRevoked",
  "DevicePaused",
  "PolicyPaused",
  "PolicyFrozen",
  "NotYetValid",
  "PolicyExpired",
  "WrongToken",
  "DeadlinePassed",
  "InvalidPayee",
  "PayeeNotAllowed",
  "FeeAboveMax",
  "NonceUsed",
  "NonceTooOld",
  "ExceedsPaymentCap",
  "ExceedsPeriodCap",
  "ExceedsLifetimeCap",
  "InsufficientBalance",
  "NonceTooLarge",
  "TabClosed",
  "VoucherStale",
];

/** The sdk's string and types object for each primary type. */
const SDK_TYPES: Record<string, { string: string; types: Record<string, readonly { name: string; type: string }[]> }> =
  {
    Payment: { string: PAYMENT_TYPE, types: paymentTypes },
    Voucher: { string: VOUCHER_TYPE, types: voucherTypes },
    TabClose: { string: TAB_CLOSE_TYPE, types: tabCloseTypes },
    Onboarding: { string: ONBOARDING_TYPE, types: onboardingTypes },
    Revocation: { string: REVOCATION_TYPE, types: revocationTypes },
    Enrollment: { string: ENROLLMENT_TYPE, types: enrollmentTypes },
  };

/** Where each type string's Solidity constant lives. */
const SOLIDITY_CONSTANT: Record<string, [file: string, name: string]> = {
  Payment: ["PaymentHash.sol", "PAYMENT_TYPE"],
  Voucher: ["VoucherHash.sol", "VOUCHER_TYPE"],
  TabClose: ["VoucherHash.sol", "TAB_CLOSE_TYPE"],
  Onboarding: ["OnboardingHash.sol", "ONBOARDING_TYPE"],
  Revocation: ["OnboardingHash.sol", "REVOCATION_TYPE"],
  Enrollment: ["OnboardingHash.sol", "ENROLLMENT_TYPE"],
};

/** The value of a `string constant NAME = "..." "...";` in a library (adjacent literals concatenated). */
function solidityString(file: string, name: string): string | undefined {
  const source = readFileSync(join(__dirname, "../contracts/libraries", file), "utf8");
  const match = new RegExp(`string internal constant ${name}\\s*=\\s*((?:"[^"]*"\\s*)+);`).exec(source);
  return match?.[1]
    .match(/"([^"]*)"/g)
    ?.map((s) => s.slice(1, -1))
    .join("");
}

const iface = new Interface(ARTIFACT.abi as never);

function functionRow(f: FunctionFragment): [string, string, string, string] {
  return [
    f.format("sighash"),
    f.selector,
    f.stateMutability,
    `(${f.outputs.map((o) => o.format("sighash")).join(",")})`,
  ];
}

function eventRow(e: EventFragment): [string, string] {
  const inputs = e.inputs.map((i) => `${i.format("sighash")}${i.indexed ? " indexed" : ""}`);
  return [`${e.name}(${inputs.join(",")})`, e.topicHash];
}

const bySignature = <T extends string[]>(rows: T[]) => [...rows].sort((a, b) => a[0].localeCompare(b[0]));

describe("the v1 ABI is frozen", () => {
  it("every function: signature, selector, mutability and return types", () => {
    const rows: [string, string, string, string][] = [];
    iface.forEachFunction((f) => rows.push(functionRow(f)));
    expect(bySignature(rows), CHANGED).to.deep.equal(FUNCTIONS);
    for (const [signature, selector] of FUNCTIONS)
      expect(ethers.id(signature).slice(0, 10), signature).to.equal(selector);
  });

  it("every event: signature with its indexed parameters, and topic", () => {
    const rows: [string, string][] = [];
    iface.forEachEvent((e) => rows.push(eventRow(e)));
    expect(bySignature(rows), CHANGED).to.deep.equal(EVENTS);
    for (const [signature, topic] of EVENTS)
      expect(ethers.id(signature.replaceAll(" indexed", "")), signature).to.equal(topic);
  });

  it("every error: signature and selector", () => {
    const rows: [string, string][] = [];
    iface.forEachError((e) => rows.push([e.format("sighash"), e.selector]));
    expect(bySignature(rows), CHANGED).to.deep.equal(ERRORS);
    for (const [signature, selector] of ERRORS) expect(ethers.id(signature).slice(0, 10), signature).to.equal(selector);
  });

  it("nothing else: one constructor (uint256 noticePeriod), no fallback or receive", () => {
    const other = ARTIFACT.abi.filter((x) => !["function", "event", "error"].includes(x.type as string));
    expect(other, CHANGED).to.deep.equal([
      {
        inputs: [{ internalType: "uint256", name: "noticePeriod", type: "uint256" }],
        stateMutability: "nonpayable",
        type: "constructor",
      },
    ]);
  });

  it("the sdk's machinePayAbi is the artifact's abi", () => {
    expect(machinePayAbi, `${CHANGED} (regenerate sdk/src/abi.ts with scripts/export-abi.ts)`).to.deep.equal(
      ARTIFACT.abi,
    );
  });

  it("the reason codes (Reason enum order, as the sdk numbers them)", () => {
    expect([...REASONS], CHANGED).to.deep.equal(PINNED_REASONS);
  });

  describe("EIP-712 types", () => {
    for (const [primary, string, typehash] of TYPES) {
      it(`${primary}: the sdk's string and types, and the contract's constant, are the pinned string and hash`, () => {
        const sdk = SDK_TYPES[primary];
        expect(sdk.string, `${CHANGED} (sdk ${primary} string)`).to.equal(string);
        const fields = Object.fromEntries(
          Object.entries(sdk.types).map(([name, list]) => [name, list.map((f) => ({ ...f }))]),
        );
        expect(TypedDataEncoder.from(fields).encodeType(primary), `${CHANGED} (sdk ${primary} types)`).to.equal(string);
        expect(keccak256(toUtf8Bytes(string)), `${CHANGED} (${primary} type hash)`).to.equal(typehash);
        const [file, name] = SOLIDITY_CONSTANT[primary];
        expect(solidityString(file, name), `${CHANGED} (${file} ${name})`).to.equal(string);
      });
    }

    it("the contract hashes exactly these: sdk-signed messages of every type verify on chain", async () => {
      const f = await loadFixture(deployFixture);
      const { pay, owner, relayer, payee, usdcAddress } = f;
      const [device, fleetDevice] = newDevices(2);
      // Onboarding (with PolicyParams) and Enrollment: the order and the key's proof verify.
      const order = await onboardingOrder(owner, usdcAddress, [device.address, fleetDevice.address]);
      const proofs = [await enrollment(pay, device, owner), await enrollment(pay, fleetDevice, owner)];
      await expect(
        pay.connect(relayer).onboardBySignature(...onboardingArgs(order, proofs, await signOrder(pay, owner, order))),
        `${CHANGED} (Onboarding, PolicyParams or Enrollment)`,
      ).to.emit(pay, "DeviceAssigned");
      // Payment and Voucher: the items settle as the signing key (a wrong type hash recovers another key).
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(pay, relayer, usdcAddress, [await signed(pay, device, to)], ["None"]);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 1n })],
        ["None"],
      );
      // TabClose: closeTabBySignature accepts the device's signature.
      const deadline = BigInt((await time.latest()) + 600);
      const close = { payee: payee.address as Address, token: usdcAddress, tabId: 1n, deadline };
      const { r, vs } = toCompactSignature(
        await signTypedMessage({
          signer: device,
          domain: await domainOf(pay),
          types: tabCloseTypes,
          primaryType: "TabClose",
          message: close,
        }),
      );
      await expect(
        pay.connect(relayer).closeTabBySignature(device.address, payee.address, usdcAddress, 1n, deadline, r, vs),
        `${CHANGED} (TabClose)`,
      ).to.emit(pay, "TabClosing");
      // Revocation: the owner's order verifies.
      const revocation = await revocationOrder(owner, [fleetDevice.address], { nonce: 2n });
      await expect(
        pay.connect(relayer).revokeBySignature(...revocationArgs(revocation, await signOrder(pay, owner, revocation))),
        `${CHANGED} (Revocation)`,
      ).to.emit(pay, "DeviceRevokedForever");
    });
  });
});
