// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IMachinePay
/// @notice Escrow of owner funds, device spending policies and batch settlement of EIP-712 signed
///         device payments. Amounts are in the token's own units (6 decimals for USDC, wei for ETH);
///         the native coin is token `address(0)`. Timestamps are unix seconds.
interface IMachinePay {
    // ---------------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------------

    /// @notice Why a payment in a batch was skipped. `None` means it settled. Values are stable:
    ///         new reasons are only ever appended.
    enum Reason {
        None, // 0  settled
        InvalidSignature, // 1  malformed or unrecoverable signature, or s above n/2 (the compact
        //                   form cannot carry a high-s twin: flipping s changes the signer instead)
        UnknownDevice, // 2  the recovered signer has no policy: not registered, or the signature
        //                   covers other data (token, chain id, contract, any field)
        DeviceRevoked, // 3  the device key was revoked for good
        DevicePaused, // 4  the owner paused this device
        PolicyPaused, // 5  the owner paused the device's policy
        PolicyFrozen, // 6  the owner froze all devices after this policy was last set
        NotYetValid, // 7  block.timestamp < policy.validFrom
        PolicyExpired, // 8  block.timestamp >= policy.validUntil
        WrongToken, // 9  the device signed the batch's token but its policy pays in another
        DeadlinePassed, // 10 block.timestamp >= payment.deadline
        InvalidPayee, // 11 payee is the zero address
        PayeeNotAllowed, // 12 the policy's allow-list does not list the payee
        FeeAboveMax, // 13 the submitter's fee is above the maxFee the device signed
        NonceUsed, // 14 this nonce already settled (replay)
        NonceTooOld, // 15 more than NONCE_WINDOW-1 below the device's highest settled nonce
        ExceedsPaymentCap, // 16 amount + fee > policy.maxPerPayment
        ExceedsPeriodCap, // 17 amount + fee > what is left of policy.maxPerPeriod in this period
        ExceedsLifetimeCap, // 18 amount + fee > what is left of policy.lifetimeMax
        InsufficientBalance, // 19 the owner's ledger balance is below amount + fee
        NonceTooLarge, // 20 nonces are below 2^32 (only nonceStatus reports it: calldata cannot carry more)
        TabClosed, // 21 the voucher's tab is closed (its closing notice has run out)
        VoucherStale // 22 the voucher's cumulative amount is not above what its tab already settled
    }

    /// @notice Spending policy parameters, as an owner sets them.
    /// @param token ERC-20 the devices pay in, or address(0) for the native coin.
    /// @param maxPerPayment Cap on amount + fee of one payment, token units.
    /// @param maxPerPeriod Cap on amount + fee settled per device in one period, token units.
    /// @param periodLength Seconds; periods are fixed windows [k*len, (k+1)*len) of unix time and
    ///        unspent allowance does not roll over into the next window.
    /// @param lifetimeMax Cap on amount + fee settled per device over its whole life, token units.
    /// @param validFrom Payments settle only at or after this timestamp (0 = at once).
    /// @param validUntil Payments settle only before this timestamp (0 = no expiry).
    /// @param payeesRestricted If true, only payees on the policy's allow-list can be paid.
    struct PolicyParams {
        address token;
        uint64 maxPerPayment;
        uint64 maxPerPeriod;
        uint32 periodLength;
        uint64 lifetimeMax;
        uint32 validFrom;
        uint32 validUntil;
        bool payeesRestricted;
    }

    /// @notice A policy as stored: three slots, shared by every device assigned to it.
    /// @dev slot 0: owner(160) | epoch(32) | validFrom(32) | validUntil(32)
    ///      slot 1: token(160) | periodLength(32) | payeesRestricted(8) | paused(8)
    ///      slot 2: maxPerPayment(64) | maxPerPeriod(64) | lifetimeMax(64)
    struct Policy {
        address owner;
        uint32 epoch;
        uint32 validFrom;
        uint32 validUntil;
        address token;
        uint32 periodLength;
        bool payeesRestricted;
        bool paused;
        uint64 maxPerPayment;
        uint64 maxPerPeriod;
        uint64 lifetimeMax;
    }

    /// @notice Everything mutable about one device key, in one storage slot so a settled payment
    ///         costs one cold read and one write.
    /// @dev policyId(32) | paused(8) | periodIndex(32) | periodSpent(64) | lifetimeSpent(64)
    ///      | nonceTop(32) | nonceWindow(24). Bit i of nonceWindow set means nonce nonceTop - i
    ///      has settled (bit 0 is nonceTop itself).
    struct DeviceState {
        uint32 policyId;
        bool paused;
        uint32 periodIndex;
        uint64 periodSpent;
        uint64 lifetimeSpent;
        uint32 nonceTop;
        uint24 nonceWindow;
    }

    /// @notice A signed payment as it travels in calldata: five words, every field packed.
    /// @dev The EIP-712 `Payment` the device signs has the same values, widened to uint256. The
    ///      token is given once per batch (settle's `token`), not per item.
    ///      payeeAmount = payee(160) << 96 | amount(96)
    ///      terms       = maxFee(96) << 160 | fee(96) << 64 | deadline(32) << 32 | nonce(32)
    ///      (r, vs) is the EIP-2098 compact signature (vs = s | (v - 27) << 255).
    ///      `fee` is not signed: the submitter picks it, at most maxFee.
    struct SignedPayment {
        uint256 payeeAmount;
        uint256 terms;
        bytes32 ref;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice An owner's signed order to set a policy and assign devices to it (EIP-712 `Onboarding`,
    ///         with the device list alongside): anyone submits it.
    /// @param owner The signing owner: an EOA (ECDSA) or a smart account (ERC-1271), named because a
    ///        contract's address cannot be recovered from a signature.
    /// @param policyId 0 to create a new policy, else one of the owner's policies to overwrite.
    /// @param policy The policy's parameters.
    /// @param epoch The owner's current epoch (ownerEpoch): an order signed before a freezeAll is void.
    /// @param nonce Any unused number of the owner's (orders can be used in any order, each once).
    /// @param deadline The order is valid before this timestamp.
    struct Onboarding {
        address owner;
        uint32 policyId;
        PolicyParams policy;
        uint32 epoch;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice An owner's signed order to revoke devices for good (EIP-712 `Revocation`).
    /// @param owner As in Onboarding. @param epoch As in Onboarding.
    /// @param nonce As in Onboarding. @param deadline As in Onboarding.
    struct Revocation {
        address owner;
        uint32 epoch;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice A device key's proof of possession: its EIP-712 `Enrollment(address owner)` signature,
    ///         EIP-2098 compact (vs = s | (v - 27) << 255). Binding a key to an owner needs it, so
    ///         nobody can register (and then revoke, i.e. burn) a key they do not hold.
    struct DeviceProof {
        bytes32 r;
        bytes32 vs;
    }

    /// @notice A signed tab voucher as it travels in calldata: five words.
    /// @dev The EIP-712 `Voucher` the device signs has the same values, widened to uint256.
    ///      payeeCumulative = payee(160) << 96 | cumulative(96)
    ///      terms           = maxFee(96) << 160 | fee(96) << 64 | deadline(32) << 32 (low 32 bits unused)
    ///      (r, vs) is the EIP-2098 compact signature. `fee` is not signed: at most maxFee.
    struct SignedVoucher {
        uint256 payeeCumulative;
        uint256 terms;
        uint256 tabId;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice A tab's stored state: one slot, settled(96) | closesAt(40).
    /// @param settled Cumulative amount already paid on the tab, token units.
    /// @param closesAt 0 while open; else vouchers settle only before this timestamp.
    struct Tab {
        uint96 settled;
        uint40 closesAt;
    }

    /// @notice What a relayer or UI needs to know about a device now.
    /// @param status None if the device can pay now, else why not (payee, nonce and deadline are
    ///        not considered: they belong to a payment).
    /// @param perPayment Largest amount + fee one payment may carry, token units.
    /// @param period What is left of this period's allowance, token units.
    /// @param lifetime What is left of the lifetime allowance, token units.
    /// @param balance The owner's ledger balance in the policy's token.
    /// @param spendable min(perPayment, period, lifetime, balance): the largest amount + fee that
    ///        would settle now (0 if status is not None).
    /// @param periodEndsAt When the current period ends and its allowance is fresh again.
    struct Headroom {
        Reason status;
        uint32 policyId;
        address owner;
        address token;
        uint256 perPayment;
        uint256 period;
        uint256 lifetime;
        uint256 balance;
        uint256 spendable;
        uint256 periodEndsAt;
        uint32 nonceTop;
        uint24 nonceWindow;
    }

    /// @notice An announced owner withdrawal.
    /// @param amount Token units announced (execution takes at most this, at most the balance).
    /// @param readyAt Timestamp from which it can be executed.
    struct PendingWithdrawal {
        uint192 amount;
        uint64 readyAt;
    }

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// @notice Funds entered the escrow.
    /// @param amount Token units credited (what arrived, for fee-on-transfer tokens).
    event Deposited(address indexed account, address indexed token, uint256 amount);

    /// @notice Funds left the escrow.
    /// @param amount Token units sent to `to`.
    event Withdrawn(address indexed account, address indexed token, address to, uint256 amount);

    /// @notice An owner announced a withdrawal of funds its devices may spend.
    /// @param amount Token units announced. @param readyAt Earliest execution timestamp.
    event WithdrawalAnnounced(address indexed owner, address indexed token, uint256 amount, uint256 readyAt);

    /// @notice An owner cancelled its announced withdrawal.
    event WithdrawalCancelled(address indexed owner, address indexed token);

    /// @notice A policy was created or changed (the whole new policy is in the event).
    event PolicySet(uint32 indexed policyId, address indexed owner, Policy policy);

    /// @notice The payee allow-list of a policy changed.
    event PayeesSet(uint32 indexed policyId, address[] payees, bool allowed);

    /// @notice A policy was paused or unpaused.
    event PolicyPausedSet(uint32 indexed policyId, bool paused);

    /// @notice A device key was assigned to a policy (registered, or moved between the owner's policies).
    /// @dev The owner is the policy's (PolicySet); leaving it out of the topics saves 375 gas per device.
    event DeviceAssigned(address indexed device, uint32 indexed policyId);

    /// @notice A device was paused or unpaused.
    event DevicePausedSet(address indexed device, bool paused);

    /// @notice A device key was revoked for good.
    event DeviceRevokedForever(address indexed device, address indexed owner);

    /// @notice An owner froze every device of every policy it had set; re-setting a policy thaws it.
    /// @param epoch The owner's new epoch.
    event OwnerFrozen(address indexed owner, uint32 epoch);

    /// @notice A device payment settled: with the batch's BatchSettled (same transaction, which names
    ///         the token), enough to prove it from chain data.
    /// @dev `amounts` is packed to save ~770 gas per payment: amount(64) | fee(64) << 64 | nonce(32) << 128.
    ///      amount + fee fit 64 bits because they settled under a uint64 per-payment cap. The SDK's
    ///      decodeMachinePayLog unpacks it.
    /// @param ref The 32-byte reference the device signed (an order or data-item id).
    /// @param amounts Token units credited to the payee, token units charged as fee, and the nonce.
    event PaymentSettled(address indexed device, address indexed payee, bytes32 ref, uint256 amounts);

    /// @notice A payment in a batch was skipped; nothing of it settled.
    /// @param index Position in the submitted batch. @param device Recovered signer (0 if none).
    event PaymentSkipped(uint256 index, address device, Reason reason);

    /// @notice A tab voucher settled: the tab now stands at `cumulative`, `increment` was paid. The
    ///         token is in the same transaction's BatchSettled.
    /// @dev `amounts` = increment(64) | fee(64) << 64 | cumulative(96) << 128 (increment + fee settled
    ///      under a uint64 per-payment cap). The SDK's decodeMachinePayLog unpacks it.
    /// @param tabId The device's id for the tab.
    /// @param amounts Token units credited to the payee, charged as fee, and paid on the tab in all.
    event VoucherSettled(address indexed device, address indexed payee, uint256 tabId, uint256 amounts);

    /// @notice A voucher in a batch was skipped; nothing of it settled.
    /// @param index Position in the batch. @param device Recovered signer (0 if none).
    event VoucherSkipped(uint256 index, address device, Reason reason);

    /// @notice A tab is closing: vouchers settle until `closesAt`, then never again.
    /// @param closesAt Unix seconds. @param by Who closed it: the payee, the owner, or the device (signed close).
    event TabClosing(
        bytes32 indexed tabKey,
        address indexed device,
        address indexed payee,
        address token,
        uint256 tabId,
        uint256 closesAt,
        address by
    );

    /// @notice A batch was processed.
    /// @param feeRecipient Credited with the fees (per item in PaymentSettled).
    /// @param settled Items settled. @param skipped Items skipped.
    event BatchSettled(
        address indexed submitter, address indexed feeRecipient, address token, uint256 settled, uint256 skipped
    );

    // ---------------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------------

    error ZeroAmount();
    error ZeroAddress();
    error NativeAmountMismatch(uint256 sent, uint256 amount);
    error UnexpectedNativeValue(uint256 sent);
    error NativeTransferFailed(address to, uint256 amount);
    error InsufficientLedgerBalance(address account, address token, uint256 balance, uint256 requested);
    error NoticeRequired(address owner, address token);
    error NoPendingWithdrawal(address owner, address token);
    error WithdrawalNotReady(uint256 readyAt, uint256 now_);
    error UnknownPolicy(uint32 policyId);
    error NotPolicyOwner(uint32 policyId, address caller);
    error InvalidPeriodLength(uint32 periodLength);
    error InvalidValidity(uint32 validFrom, uint32 validUntil);
    error DeviceOwnedByAnother(address device, address owner);
    error DeviceNotRegistered(address device);
    error DeviceIsRevoked(address device);
    error NotDeviceOwner(address device, address caller);
    error TooManyPolicies();
    error NotTabParty(address caller);
    error TabAlreadyClosing(uint256 closesAt);
    error SignatureExpired(uint256 deadline, uint256 now_);
    error InvalidDeviceSignature(address device);
    error InvalidOwnerSignature();
    error StaleEpoch(address owner, uint256 signed, uint256 current);
    error OwnerNonceUsed(address owner, uint256 nonce);
    error InvalidEnrollment(address device, address owner);
    error LengthMismatch(uint256 devices, uint256 proofs);
    error PermitFailed(address owner, address token);
    /// @notice Carries preview's results out of the rolled-back settlement (internal to preview).
    error PreviewResult(Reason[] reasons, address[] devices);

    // ---------------------------------------------------------------------------------------------
    // Escrow
    // ---------------------------------------------------------------------------------------------

    /// @notice Deposit into the caller's ledger balance.
    /// @param token ERC-20 address, or address(0) for the native coin (send `amount` as value).
    /// @param amount Token units to pull with transferFrom (approve first), or wei sent.
    function deposit(address token, uint256 amount) external payable;

    /// @notice Deposit into another account's ledger balance (a fleet funded by a treasury, say).
    /// @param account Credited account. @param token As in deposit. @param amount As in deposit.
    function depositFor(address account, address token, uint256 amount) external payable;

    /// @notice Deposit with an EIP-2612 permit instead of a prior approve: one transaction, which anyone
    ///         (the owner, or a relayer for it) may send. Credits `owner`, pulls from `owner`.
    /// @dev If the permit was already used (front-run) the deposit still goes ahead on the allowance,
    ///      but only when the owner itself calls: a third party never moves funds on a bare allowance.
    /// @param owner Who signed the permit, pays and is credited. @param token An EIP-2612 ERC-20.
    /// @param amount Token units (the permit's value). @param deadline The permit's deadline.
    /// @param v Permit signature v. @param r Permit signature r. @param s Permit signature s.
    function depositWithPermit(
        address owner,
        address token,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Deposit with an EIP-3009 `receiveWithAuthorization` signed by `from` to this contract:
    ///         anyone may submit it; the token only lets this contract redeem it, so it cannot be
    ///         front-run, and `from` is credited with what arrived.
    /// @param from The authorizer, credited. @param token An EIP-3009 ERC-20 (USDC).
    /// @param amount Token units (the authorization's value). @param validAfter As signed.
    /// @param validBefore As signed. @param nonce The authorization's 32-byte nonce.
    /// @param v Signature v. @param r Signature r. @param s Signature s.
    function depositWithAuthorization(
        address from,
        address token,
        uint256 amount,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Withdraw at once from the caller's ledger balance. Only for accounts that own no
    ///         policy: an owner whose devices may spend its funds must announce first.
    /// @param token Token to withdraw. @param amount Token units. @param to Receiver.
    function withdraw(address token, uint256 amount, address to) external;

    /// @notice Announce a withdrawal of funds the caller's devices may spend; replaces any earlier
    ///         announcement for the token and restarts the notice. Devices keep spending meanwhile.
    /// @param token Token to withdraw. @param amount Token units (may exceed today's balance).
    function announceWithdrawal(address token, uint256 amount) external;

    /// @notice Execute an announced withdrawal once its notice has passed.
    /// @param token Token announced. @param to Receiver.
    /// @return withdrawn Token units sent: min(announced, ledger balance now).
    function executeWithdrawal(address token, address to) external returns (uint256 withdrawn);

    /// @notice Cancel the caller's announced withdrawal of `token`.
    /// @param token The token whose announcement is cancelled.
    function cancelWithdrawal(address token) external;

    // ---------------------------------------------------------------------------------------------
    // Policies and devices
    // ---------------------------------------------------------------------------------------------

    /// @notice Create a policy owned by the caller. Devices are then assigned to it.
    /// @param params The policy. @return policyId Its id (never 0).
    function createPolicy(PolicyParams calldata params) external returns (uint32 policyId);

    /// @notice Replace a policy's parameters atomically for every device assigned to it. Also
    ///         thaws a policy frozen by freezeAll (the policy takes the owner's current epoch).
    /// @dev Counters stay with the devices; a new periodLength can start a fresh window.
    /// @param policyId A policy of the caller's. @param params The new parameters (paused flag kept).
    function updatePolicy(uint32 policyId, PolicyParams calldata params) external;

    /// @notice Pause or unpause every device of a policy.
    /// @param policyId A policy of the caller's. @param paused True to pause.
    function setPolicyPaused(uint32 policyId, bool paused) external;

    /// @notice Add payees to (allowed = true) or remove them from a policy's allow-list.
    /// @param policyId A policy of the caller's. @param payees Accounts to list or unlist.
    /// @param allowed True to list, false to unlist.
    function setPayees(uint32 policyId, address[] calldata payees, bool allowed) external;

    /// @notice Assign device keys to one of the caller's policies. A device may be new (then its
    ///         proof must be its Enrollment signature over the caller), or already on one of the
    ///         caller's policies (its proof is not checked: pass zeros); counters and nonces stay with it.
    /// @param policyId A policy of the caller's. @param devices Device key addresses.
    /// @param proofs Per device, its Enrollment(owner = caller) signature.
    function assignDevices(uint32 policyId, address[] calldata devices, DeviceProof[] calldata proofs) external;

    /// @notice Create a policy for one device and assign the device to it, in one call.
    /// @param device The device key's address. @param params The policy.
    /// @param proof The device's Enrollment(owner = caller) signature (not checked if already the caller's).
    /// @return policyId The new policy's id.
    function registerDevice(address device, PolicyParams calldata params, DeviceProof calldata proof)
        external
        returns (uint32 policyId);

    /// @notice Pause or unpause one device of the caller's.
    /// @param device The device key's address. @param paused True to pause.
    function setDevicePaused(address device, bool paused) external;

    /// @notice Revoke a device key for good: it can never pay again, nor be registered again.
    /// @param device The device key's address.
    function revokeDevice(address device) external;

    /// @notice Freeze every device on every policy of the caller in one transaction. A policy
    ///         thaws when its owner updates it again.
    function freezeAll() external;

    /// @notice Onboard devices with the owner's EIP-712 `Onboarding` signature: creates or overwrites
    ///         the policy and assigns `devices` to it, all for `onboarding.owner`. Anyone may submit.
    /// @param onboarding The signed order. @param devices Device keys (their list is part of what is signed).
    /// @param proofs Per device, its Enrollment(owner) signature, as in assignDevices.
    /// @param signature The owner's signature: 65 bytes (r, s, v) for an EOA, or whatever its
    ///        ERC-1271 `isValidSignature` accepts for a smart account (a Safe's owner signatures).
    /// @return policyId The policy the devices were assigned to.
    function onboardBySignature(
        Onboarding calldata onboarding,
        address[] calldata devices,
        DeviceProof[] calldata proofs,
        bytes calldata signature
    ) external returns (uint32 policyId);

    /// @notice Revoke devices for good with the owner's EIP-712 `Revocation` signature. Anyone may submit.
    /// @param revocation The signed order. @param devices Device keys (signed).
    /// @param signature The owner's signature, as in onboardBySignature.
    function revokeBySignature(Revocation calldata revocation, address[] calldata devices, bytes calldata signature)
        external;

    // ---------------------------------------------------------------------------------------------
    // Settlement
    // ---------------------------------------------------------------------------------------------

    /// @notice Settle a batch of signed device payments. Anyone may call. A bad item is skipped
    ///         (PaymentSkipped with its reason) and never reverts the batch. Results are in the
    ///         events (PaymentSettled, PaymentSkipped, BatchSettled); preview returns them per item.
    /// @dev Returns nothing: building and encoding per-item results cost ~100 gas per item that only
    ///      an eth_call could read, and preview serves those callers.
    /// @param token The token every payment of the batch signed (address(0): native coin).
    /// @param payments Packed signed payments, see SignedPayment. Order a batch by payee (a
    ///        device's payments in nonce order): consecutive credits to one payee are written once.
    /// @param feeRecipient Credited with each item's fee (address(0): the caller).
    function settle(address token, SignedPayment[] calldata payments, address feeRecipient) external;

    /// @notice What settle would do with this batch now, without changing state. Call it with
    ///         eth_call (on the `pending` block); it is not `view` only because it runs settle and
    ///         rolls it back.
    /// @param token As in settle. @param payments As in settle. @param feeRecipient As in settle.
    /// @return reasons Per item: None if it would settle, else why it would be skipped.
    /// @return devices Per item: the recovered signer (address(0) if the signature is invalid).
    function preview(address token, SignedPayment[] calldata payments, address feeRecipient)
        external
        returns (Reason[] memory reasons, address[] memory devices);

    /// @notice Settle a batch of tab vouchers. Anyone may call (a payee settles its own tabs). Each
    ///         settles the increase of its tab's cumulative amount; older vouchers are then stale.
    ///         Caps apply to what is paid: per-payment to increment + fee, period and lifetime to the
    ///         device's running totals. A bad item is skipped (VoucherSkipped) and never reverts the batch.
    ///         Returns nothing, as settle: previewVouchers gives per-item results.
    /// @param token The token every voucher signed. @param vouchers Packed signed vouchers (by payee, as in settle).
    /// @param feeRecipient Credited with each item's fee (address(0): the caller).
    function settleVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient) external;

    /// @notice What settleVouchers would do now, without changing state (use eth_call on `pending`).
    /// @param token As in settleVouchers. @param vouchers As in settleVouchers. @param feeRecipient As in settleVouchers.
    /// @return reasons Per item: None if it would settle, else why not. @return devices Per item: the signer.
    function previewVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient)
        external
        returns (Reason[] memory reasons, address[] memory devices);

    /// @notice Close a tab. The payee closes it at once (it gives up further vouchers); the device's
    ///         owner closes it after NOTICE_PERIOD, so the payee can still settle the newest voucher.
    /// @param device Tab's device. @param payee Tab's payee. @param token Tab's token. @param tabId Tab's id.
    function closeTab(address device, address payee, address token, uint256 tabId) external;

    /// @notice Close a tab with the device's EIP-712 `TabClose` signature (devices send no
    ///         transactions); takes effect after NOTICE_PERIOD, as an owner's close.
    /// @param device Tab's device. @param payee Tab's payee. @param token Tab's token. @param tabId Tab's id.
    /// @param deadline The signature is valid before this timestamp. @param r Signature r. @param vs EIP-2098 vs.
    function closeTabBySignature(
        address device,
        address payee,
        address token,
        uint256 tabId,
        uint256 deadline,
        bytes32 r,
        bytes32 vs
    ) external;

    // ---------------------------------------------------------------------------------------------
    // Views

    /// @notice A tab's state. @param device Tab's device. @param payee Tab's payee.
    /// @param token Tab's token. @param tabId Tab's id.
    function getTab(address device, address payee, address token, uint256 tabId) external view returns (Tab memory);

    /// @notice The storage key of a tab: keccak256(abi.encode(device, payee, token, tabId)).
    /// @param device Tab's device. @param payee Tab's payee. @param token Tab's token. @param tabId Tab's id.
    function tabKey(address device, address payee, address token, uint256 tabId) external pure returns (bytes32);
    // ---------------------------------------------------------------------------------------------

    /// @notice Ledger balance of `account` in `token`, token units.
    /// @param account Any account. @param token Token, or address(0) for the native coin.
    function balanceOf(address account, address token) external view returns (uint256);

    /// @notice A policy as stored (all zero for an unknown id).
    /// @param policyId Policy id.
    function getPolicy(uint32 policyId) external view returns (Policy memory);

    /// @notice How many policies exist; ids run from 1 to this.
    function policyCount() external view returns (uint32);

    /// @notice Whether an owner's onboarding/revocation nonce is used.
    /// @param owner Any account. @param nonce The nonce.
    function ownerNonceUsed(address owner, uint256 nonce) external view returns (bool);

    /// @notice Whether `account` owns a policy (its withdrawals then need notice).
    /// @param account Any account.
    function ownsPolicies(address account) external view returns (bool);

    /// @notice A device's stored state.
    /// @param device The device key's address.
    function getDevice(address device) external view returns (DeviceState memory);

    /// @notice A device's remaining headroom now; see Headroom.
    /// @param device The device key's address.
    function headroom(address device) external view returns (Headroom memory);

    /// @notice Whether `nonce` would be refused for `device` now (settled, or below the window).
    /// @param device The device key's address. @param nonce The payment nonce.
    /// @return reason None if the nonce is usable, else NonceUsed, NonceTooOld or NonceTooLarge.
    function nonceStatus(address device, uint256 nonce) external view returns (Reason reason);

    /// @notice Whether a restricted policy's allow-list lists `payee`.
    /// @param policyId Policy id. @param payee Any account.
    function isPayeeAllowed(uint32 policyId, address payee) external view returns (bool);

    /// @notice The owner's announced withdrawal of `token`, if any (readyAt 0: none).
    /// @param owner Any account. @param token Token.
    function pendingWithdrawal(address owner, address token) external view returns (PendingWithdrawal memory);

    /// @notice The owner's current freeze epoch.
    /// @param owner Any account.
    function ownerEpoch(address owner) external view returns (uint32);

    /// @notice Seconds an owner waits between announcing and executing a withdrawal.
    function NOTICE_PERIOD() external view returns (uint256);

    /// @notice The EIP-712 domain separator payments are signed under.
    function domainSeparator() external view returns (bytes32);
}
