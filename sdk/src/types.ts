/**
 * EIP-712 domain and types of MachinePay: the single source of truth. The contracts hash exactly
 * these type strings (contracts/libraries/PaymentHash.sol); test/eip712-types.test.ts pins both.
 * Plain objects: usable by viem (`signTypedData`), ethers v6 (`signer.signTypedData`) and raw
 * `eth_signTypedData_v4` (see `toTypedDataV4`).
 */

export type Address = `0x${string}`;
export type Hex = `0x${string}`;

export const DOMAIN_NAME = "MachinePay";
export const DOMAIN_VERSION = "1";

/** The EIP-712 domain every MachinePay signature is bound to. */
export type MachinePayDomain = {
  name: typeof DOMAIN_NAME;
  version: typeof DOMAIN_VERSION;
  chainId: number;
  verifyingContract: Address;
};

export type MachinePayDomainParameters = { chainId: number | bigint; verifyingContract: Address };

/** The domain for a deployment: chain id and MachinePay contract address. */
export function machinePayDomain({ chainId, verifyingContract }: MachinePayDomainParameters): MachinePayDomain {
  return { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: Number(chainId), verifyingContract };
}

export const PAYMENT_TYPE =
  "Payment(address payee,address token,uint256 amount,uint256 nonce,uint256 deadline,uint256 maxFee,bytes32 ref)";

/** EIP-712 `types` for a Payment (without EIP712Domain, as viem and ethers want them). */
export const paymentTypes = {
  Payment: [
    { name: "payee", type: "address" },
    { name: "token", type: "address" },
    { name: "amount", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
    { name: "maxFee", type: "uint256" },
    { name: "ref", type: "bytes32" },
  ],
} as const;

/**
 * A device payment. Amounts are token units (6 decimals for USDC); `token` is address(0) for the
 * native coin; `deadline` is unix seconds and the payment settles only in a block before it;
 * `maxFee` is the most the device's owner pays a relayer for settling it (0: no fee); `ref` is 32
 * bytes the payee can use as an order or data-item id.
 */
export type Payment = {
  payee: Address;
  token: Address;
  amount: bigint;
  nonce: bigint;
  deadline: bigint;
  maxFee: bigint;
  ref: Hex;
};

export const VOUCHER_TYPE =
  "Voucher(address payee,address token,uint256 tabId,uint256 cumulative,uint256 deadline,uint256 maxFee)";

/** EIP-712 `types` for a tab Voucher. */
export const voucherTypes = {
  Voucher: [
    { name: "payee", type: "address" },
    { name: "token", type: "address" },
    { name: "tabId", type: "uint256" },
    { name: "cumulative", type: "uint256" },
    { name: "deadline", type: "uint256" },
    { name: "maxFee", type: "uint256" },
  ],
} as const;

/**
 * A tab voucher: the device owes `payee` a `cumulative` total on tab (device, payee, token, tabId)
 * so far. Settling it pays only the difference from what the tab already settled; any older
 * voucher of the tab is then worthless.
 */
export type Voucher = {
  payee: Address;
  token: Address;
  tabId: bigint;
  cumulative: bigint;
  deadline: bigint;
  maxFee: bigint;
};

export const TAB_CLOSE_TYPE = "TabClose(address payee,address token,uint256 tabId,uint256 deadline)";

/** EIP-712 `types` for a device's order to close one of its tabs (after the notice period). */
export const tabCloseTypes = {
  TabClose: [
    { name: "payee", type: "address" },
    { name: "token", type: "address" },
    { name: "tabId", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export type TabClose = { payee: Address; token: Address; tabId: bigint; deadline: bigint };

/** Spending policy parameters, as `IMachinePay.PolicyParams` (caps are uint64 token units). */
export type PolicyParams = {
  token: Address;
  maxPerPayment: bigint;
  maxPerPeriod: bigint;
  periodLength: number;
  lifetimeMax: bigint;
  validFrom: number;
  validUntil: number;
  payeesRestricted: boolean;
};

const policyParamsFields = [
  { name: "token", type: "address" },
  { name: "maxPerPayment", type: "uint64" },
  { name: "maxPerPeriod", type: "uint64" },
  { name: "periodLength", type: "uint32" },
  { name: "lifetimeMax", type: "uint64" },
  { name: "validFrom", type: "uint32" },
  { name: "validUntil", type: "uint32" },
  { name: "payeesRestricted", type: "bool" },
] as const;

export const ONBOARDING_TYPE =
  "Onboarding(address owner,uint32 policyId,PolicyParams policy,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)" +
  "PolicyParams(address token,uint64 maxPerPayment,uint64 maxPerPeriod,uint32 periodLength,uint64 lifetimeMax,uint32 validFrom,uint32 validUntil,bool payeesRestricted)";

/** EIP-712 `types` for an owner's signed fleet onboarding (create or overwrite a policy, assign devices). */
export const onboardingTypes = {
  Onboarding: [
    { name: "owner", type: "address" },
    { name: "policyId", type: "uint32" },
    { name: "policy", type: "PolicyParams" },
    { name: "devices", type: "address[]" },
    { name: "epoch", type: "uint32" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
  PolicyParams: policyParamsFields,
} as const;

/**
 * An owner's onboarding order: `owner` is the signing account (an EOA, or a smart account that
 * verifies through ERC-1271); `policyId` 0 creates a policy; `epoch` must be the owner's current one.
 */
export type Onboarding = {
  owner: Address;
  policyId: number;
  policy: PolicyParams;
  devices: Address[];
  epoch: number;
  nonce: bigint;
  deadline: bigint;
};

export const REVOCATION_TYPE =
  "Revocation(address owner,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)";

/** EIP-712 `types` for an owner's signed revocation of devices. */
export const revocationTypes = {
  Revocation: [
    { name: "owner", type: "address" },
    { name: "devices", type: "address[]" },
    { name: "epoch", type: "uint32" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export type Revocation = { owner: Address; devices: Address[]; epoch: number; nonce: bigint; deadline: bigint };

export const ENROLLMENT_TYPE = "Enrollment(address owner)";

/**
 * EIP-712 `types` for a device key's proof of possession: the key signs the owner it binds itself
 * to, once (keys are never unbound, only revoked for good). `registerDevice`, `assignDevices` and
 * `onboardBySignature` take it as a `DeviceProof` (see `signEnrollment`).
 */
export const enrollmentTypes = {
  Enrollment: [{ name: "owner", type: "address" }],
} as const;

export type Enrollment = { owner: Address };

/** Bounds the packed calldata encoding puts on the signed uint256 fields. */
export const LIMITS = {
  amount: (1n << 96n) - 1n,
  maxFee: (1n << 96n) - 1n,
  nonce: (1n << 32n) - 1n,
  deadline: (1n << 32n) - 1n,
} as const;

/** Settlement reason codes, as IMachinePay.Reason numbers them (index = on-chain value). */
export const REASONS = [
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
] as const;
export type ReasonName = (typeof REASONS)[number];

/** Width of the contract's replay window: nonces more than this many below a device's highest
 *  settled nonce can no longer settle. */
export const NONCE_WINDOW = 24;

/** The all-zero `ref`, for payments that need none. */
export const ZERO_REF: Hex = `0x${"00".repeat(32)}`;
