// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IERC3009} from "./interfaces/IERC3009.sol";
import {IMachinePay} from "./interfaces/IMachinePay.sol";
import {PaymentHash} from "./libraries/PaymentHash.sol";
import {VoucherHash} from "./libraries/VoucherHash.sol";
import {OnboardingHash} from "./libraries/OnboardingHash.sol";
import {CompactSignature} from "./libraries/CompactSignature.sol";
import {NonceWindow} from "./libraries/NonceWindow.sol";
import {PackedState} from "./libraries/PackedState.sol";

/// @title MachinePay
/// @notice Owners escrow funds and bound what each device key may spend; anyone settles batches of
///         device-signed EIP-712 payments against those bounds. See IMachinePay for the API.
/// @dev Reentrancy: settle makes no external call (ledger entries only, ecrecover is a
///      precompile). Deposits and withdrawals call tokens or send the native coin and are guarded
///      with ReentrancyGuardTransient; withdrawals debit the ledger before the transfer.
contract MachinePay is IMachinePay, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using PackedState for uint256;

    /// @notice Policy id a revoked device points to; never allocated.
    uint32 internal constant REVOKED = type(uint32).max;

    /// @inheritdoc IMachinePay
    uint256 public immutable NOTICE_PERIOD;

    /// @dev Owner-wide state: epoch(32) | hasPolicies(8). One slot, warm after a fleet's first item.
    struct OwnerState {
        uint32 epoch;
        bool hasPolicies;
    }

    mapping(address account => mapping(address token => uint256)) internal _balances;
    mapping(address owner => mapping(address token => PendingWithdrawal)) internal _withdrawals;
    mapping(address owner => OwnerState) internal _owners;
    mapping(uint32 policyId => Policy) internal _policies;
    mapping(uint32 policyId => mapping(address payee => bool)) internal _payeeAllowed;
    mapping(address device => DeviceState) internal _devices;
    uint32 internal _policyCount;
    mapping(address owner => mapping(uint256 nonce => bool)) internal _ownerNonceUsed;

    /// @param noticePeriod Seconds between announcing and executing an owner withdrawal.
    constructor(uint256 noticePeriod) EIP712("MachinePay", "1") {
        NOTICE_PERIOD = noticePeriod;
    }

    // =============================================================================================
    // Escrow
    // =============================================================================================

    /// @inheritdoc IMachinePay
    function deposit(address token, uint256 amount) external payable nonReentrant {
        _deposit(msg.sender, token, amount);
    }

    /// @inheritdoc IMachinePay
    function depositFor(address account, address token, uint256 amount) external payable nonReentrant {
        if (account == address(0)) revert ZeroAddress();
        _deposit(account, token, amount);
    }

    /// @inheritdoc IMachinePay
    function depositWithPermit(
        address owner,
        address token,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant {
        if (owner == address(0) || token == address(0)) revert ZeroAddress();
        try IERC20Permit(token).permit(owner, address(this), amount, deadline, v, r, s) {}
        catch {
            // A permit seen in the mempool can be submitted to the token first; the owner's own
            // deposit then proceeds on the allowance it set. Nobody else's may.
            if (msg.sender != owner || IERC20(token).allowance(owner, address(this)) < amount) {
                revert PermitFailed(owner, token);
            }
        }
        _pull(owner, owner, token, amount);
    }

    /// @inheritdoc IMachinePay
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
    ) external nonReentrant {
        if (from == address(0) || token == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC3009(token).receiveWithAuthorization(
            from, address(this), amount, validAfter, validBefore, nonce, v, r, s
        );
        _creditDeposit(from, token, IERC20(token).balanceOf(address(this)) - before);
    }

    /// @inheritdoc IMachinePay
    function withdraw(address token, uint256 amount, address to) external nonReentrant {
        if (_owners[msg.sender].hasPolicies) revert NoticeRequired(msg.sender, token);
        if (amount == 0) revert ZeroAmount();
        _debit(msg.sender, token, amount);
        _send(msg.sender, token, amount, to);
    }

    /// @inheritdoc IMachinePay
    function announceWithdrawal(address token, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 readyAt = block.timestamp + NOTICE_PERIOD;
        uint192 capped = amount > type(uint192).max ? type(uint192).max : uint192(amount);
        _withdrawals[msg.sender][token] = PendingWithdrawal({amount: capped, readyAt: uint64(readyAt)});
        emit WithdrawalAnnounced(msg.sender, token, capped, readyAt);
    }

    /// @inheritdoc IMachinePay
    function executeWithdrawal(address token, address to) external nonReentrant returns (uint256 withdrawn) {
        PendingWithdrawal memory pending = _withdrawals[msg.sender][token];
        if (pending.readyAt == 0) revert NoPendingWithdrawal(msg.sender, token);
        if (block.timestamp < pending.readyAt) revert WithdrawalNotReady(pending.readyAt, block.timestamp);
        uint256 balance = _balances[msg.sender][token];
        withdrawn = pending.amount < balance ? pending.amount : balance;
        delete _withdrawals[msg.sender][token];
        if (withdrawn == 0) revert InsufficientLedgerBalance(msg.sender, token, 0, pending.amount);
        _balances[msg.sender][token] = balance - withdrawn;
        _send(msg.sender, token, withdrawn, to);
    }

    /// @inheritdoc IMachinePay
    function cancelWithdrawal(address token) external {
        if (_withdrawals[msg.sender][token].readyAt == 0) revert NoPendingWithdrawal(msg.sender, token);
        delete _withdrawals[msg.sender][token];
        emit WithdrawalCancelled(msg.sender, token);
    }

    function _deposit(address account, address token, uint256 amount) internal {
        if (token == address(0)) {
            if (amount == 0) revert ZeroAmount();
            if (msg.value != amount) revert NativeAmountMismatch(msg.value, amount);
            _creditDeposit(account, token, amount);
        } else {
            if (msg.value != 0) revert UnexpectedNativeValue(msg.value);
            _pull(msg.sender, account, token, amount);
        }
    }

    /// @dev Pulls `amount` of an ERC-20 from `from` and credits `account` with what arrived, not what
    ///      was asked: fee-on-transfer tokens deliver less.
    function _pull(address from, address account, address token, uint256 amount) internal {
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(from, address(this), amount);
        _creditDeposit(account, token, IERC20(token).balanceOf(address(this)) - before);
    }

    function _creditDeposit(address account, address token, uint256 received) internal {
        if (received == 0) revert ZeroAmount();
        _balances[account][token] += received;
        emit Deposited(account, token, received);
    }

    function _debit(address account, address token, uint256 amount) internal {
        uint256 balance = _balances[account][token];
        if (balance < amount) revert InsufficientLedgerBalance(account, token, balance, amount);
        _balances[account][token] = balance - amount;
    }

    /// @dev Called after the ledger is debited (effects before interactions).
    function _send(address account, address token, uint256 amount, address to) internal {
        if (to == address(0)) revert ZeroAddress();
        emit Withdrawn(account, token, to, amount);
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    // =============================================================================================
    // Policies and devices
    // =============================================================================================

    /// @inheritdoc IMachinePay
    function createPolicy(PolicyParams calldata params) external returns (uint32 policyId) {
        return _createPolicy(msg.sender, params);
    }

    /// @inheritdoc IMachinePay
    function updatePolicy(uint32 policyId, PolicyParams calldata params) external {
        _requirePolicyOwner(msg.sender, policyId);
        _writePolicy(msg.sender, policyId, params, _policies[policyId].paused);
    }

    /// @inheritdoc IMachinePay
    function setPolicyPaused(uint32 policyId, bool paused) external {
        _requirePolicyOwner(msg.sender, policyId);
        _policies[policyId].paused = paused;
        emit PolicyPausedSet(policyId, paused);
    }

    /// @inheritdoc IMachinePay
    function setPayees(uint32 policyId, address[] calldata payees, bool allowed) external {
        _requirePolicyOwner(msg.sender, policyId);
        mapping(address => bool) storage list = _payeeAllowed[policyId];
        for (uint256 i; i < payees.length; ++i) {
            list[payees[i]] = allowed;
        }
        emit PayeesSet(policyId, payees, allowed);
    }

    /// @inheritdoc IMachinePay
    function assignDevices(uint32 policyId, address[] calldata devices, DeviceProof[] calldata proofs) external {
        _requirePolicyOwner(msg.sender, policyId);
        _assignAll(msg.sender, policyId, devices, proofs);
    }

    /// @inheritdoc IMachinePay
    function registerDevice(address device, PolicyParams calldata params, DeviceProof calldata proof)
        external
        returns (uint32 policyId)
    {
        policyId = _createPolicy(msg.sender, params);
        _assign(msg.sender, device, policyId, _enrollmentDigest(msg.sender), proof);
    }

    /// @inheritdoc IMachinePay
    function setDevicePaused(address device, bool paused) external {
        _requireDeviceOwner(msg.sender, device);
        _devices[device].paused = paused;
        emit DevicePausedSet(device, paused);
    }

    /// @inheritdoc IMachinePay
    function revokeDevice(address device) external {
        _revoke(msg.sender, device);
    }

    /// @inheritdoc IMachinePay
    function freezeAll() external {
        uint32 epoch = _owners[msg.sender].epoch + 1;
        _owners[msg.sender].epoch = epoch;
        emit OwnerFrozen(msg.sender, epoch);
    }

    /// @inheritdoc IMachinePay
    function onboardBySignature(
        Onboarding calldata onboarding,
        address[] calldata devices,
        DeviceProof[] calldata proofs,
        bytes calldata signature
    ) external returns (uint32 policyId) {
        address owner = onboarding.owner;
        _useOwnerSignature(
            owner,
            OnboardingHash.hashOnboarding(onboarding, devices),
            onboarding.epoch,
            onboarding.nonce,
            onboarding.deadline,
            signature
        );
        policyId = onboarding.policyId;
        if (policyId == 0) {
            policyId = _createPolicy(owner, onboarding.policy);
        } else {
            _requirePolicyOwner(owner, policyId);
            _writePolicy(owner, policyId, onboarding.policy, _policies[policyId].paused);
        }
        _assignAll(owner, policyId, devices, proofs);
    }

    /// @inheritdoc IMachinePay
    function revokeBySignature(Revocation calldata revocation, address[] calldata devices, bytes calldata signature)
        external
    {
        address owner = revocation.owner;
        _useOwnerSignature(
            owner,
            OnboardingHash.hashRevocation(revocation, devices),
            revocation.epoch,
            revocation.nonce,
            revocation.deadline,
            signature
        );
        for (uint256 i; i < devices.length; ++i) {
            _revoke(owner, devices[i]);
        }
    }

    /// @dev Checks an owner's signature over an onboarding or revocation message (ECDSA for an EOA,
    ///      ERC-1271 for a smart account) and spends its nonce.
    function _useOwnerSignature(
        address owner,
        bytes32 structHash,
        uint256 epoch,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) internal {
        if (block.timestamp >= deadline) revert SignatureExpired(deadline, block.timestamp);
        if (!SignatureChecker.isValidSignatureNowCalldata(owner, _hashTypedDataV4(structHash), signature)) {
            revert InvalidOwnerSignature();
        }
        uint32 current = _owners[owner].epoch;
        if (epoch != current) revert StaleEpoch(owner, epoch, current);
        if (_ownerNonceUsed[owner][nonce]) revert OwnerNonceUsed(owner, nonce);
        _ownerNonceUsed[owner][nonce] = true;
    }

    function _createPolicy(address owner, PolicyParams calldata params) internal returns (uint32 policyId) {
        uint32 count = _policyCount;
        if (count == REVOKED - 1) revert TooManyPolicies();
        policyId = count + 1;
        _policyCount = policyId;
        _owners[owner].hasPolicies = true;
        _writePolicy(owner, policyId, params, false);
    }

    function _writePolicy(address owner, uint32 policyId, PolicyParams calldata params, bool paused) internal {
        if (params.periodLength == 0) revert InvalidPeriodLength(0);
        if (params.validUntil != 0 && params.validUntil <= params.validFrom) {
            revert InvalidValidity(params.validFrom, params.validUntil);
        }
        Policy memory policy = Policy({
            owner: owner,
            epoch: _owners[owner].epoch,
            validFrom: params.validFrom,
            validUntil: params.validUntil,
            token: params.token,
            periodLength: params.periodLength,
            payeesRestricted: params.payeesRestricted,
            paused: paused,
            maxPerPayment: params.maxPerPayment,
            maxPerPeriod: params.maxPerPeriod,
            lifetimeMax: params.lifetimeMax
        });
        _policies[policyId] = policy;
        emit PolicySet(policyId, owner, policy);
    }

    function _assignAll(address owner, uint32 policyId, address[] calldata devices, DeviceProof[] calldata proofs)
        internal
    {
        uint256 n = devices.length;
        if (proofs.length != n) revert LengthMismatch(n, proofs.length);
        // Every proof of this call signs the same Enrollment(owner): hash it once.
        bytes32 digest = _enrollmentDigest(owner);
        for (uint256 i; i < n; ++i) {
            _assign(owner, devices[i], policyId, digest, proofs[i]);
        }
    }

    function _enrollmentDigest(address owner) internal view returns (bytes32) {
        return _hashTypedDataV4(OnboardingHash.hashEnrollment(owner));
    }

    /// @dev Binds a new key to `owner` on its proof (EIP-712 Enrollment signed by the key), or moves
    ///      a key already bound to `owner` between its policies (no proof needed).
    function _assign(address owner, address device, uint32 policyId, bytes32 enrollment, DeviceProof calldata proof)
        internal
    {
        if (device == address(0)) revert ZeroAddress();
        uint256 slot = _deviceSlot(device);
        uint256 d;
        assembly ("memory-safe") {
            d := sload(slot)
        }
        uint32 current = d.policyId();
        if (current == REVOKED) revert DeviceIsRevoked(device);
        if (current == 0) {
            if (CompactSignature.recover(enrollment, proof.r, proof.vs) != device) {
                revert InvalidEnrollment(device, owner);
            }
        } else {
            address holder = _policies[current].owner;
            if (holder != owner) revert DeviceOwnedByAnother(device, holder);
        }
        // Nonces and counters are kept: re-assigning must never make an old signature valid again.
        d = (d & ~uint256(type(uint32).max)) | policyId;
        assembly ("memory-safe") {
            sstore(slot, d)
        }
        emit DeviceAssigned(device, policyId);
    }

    function _revoke(address owner, address device) internal {
        _requireDeviceOwner(owner, device);
        // Counters and nonces stay: the key can never settle again anyway.
        _devices[device].policyId = REVOKED;
        emit DeviceRevokedForever(device, owner);
    }

    function _requirePolicyOwner(address caller, uint32 policyId) internal view {
        address owner = _policies[policyId].owner;
        if (owner == address(0)) revert UnknownPolicy(policyId);
        if (owner != caller) revert NotPolicyOwner(policyId, caller);
    }

    function _requireDeviceOwner(address caller, address device) internal view {
        uint32 policyId = _devices[device].policyId;
        if (policyId == 0) revert DeviceNotRegistered(device);
        if (policyId == REVOKED) revert DeviceIsRevoked(device);
        if (_policies[policyId].owner != caller) revert NotDeviceOwner(device, caller);
    }

    // =============================================================================================
    // Settlement
    // =============================================================================================

    /// @inheritdoc IMachinePay
    function settle(address token, SignedPayment[] calldata payments, address feeRecipient) external {
        _settle(token, payments, feeRecipient == address(0) ? msg.sender : feeRecipient, false);
    }

    /// @inheritdoc IMachinePay
    function preview(address token, SignedPayment[] calldata payments, address feeRecipient)
        external
        returns (Reason[] memory reasons, address[] memory devices)
    {
        // Run the real settlement in a call that always reverts, carrying its results out: the
        // preview can never drift from what settle does, and no state survives it.
        try this.previewAndRevert(token, payments, feeRecipient == address(0) ? msg.sender : feeRecipient) {}
        catch (bytes memory data) {
            return _previewResult(data);
        }
    }

    /// @notice Used by preview only: settles, then reverts with PreviewResult. Always reverts.
    /// @param token As in settle. @param payments As in settle. @param feeRecipient As in settle.
    function previewAndRevert(address token, SignedPayment[] calldata payments, address feeRecipient) external {
        (Reason[] memory reasons, address[] memory devices) = _settle(token, payments, feeRecipient, true);
        revert PreviewResult(reasons, devices);
    }

    /// @inheritdoc IMachinePay
    function settleVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient) external {
        _settleVouchers(token, vouchers, feeRecipient == address(0) ? msg.sender : feeRecipient, false);
    }

    /// @inheritdoc IMachinePay
    function previewVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient)
        external
        returns (Reason[] memory reasons, address[] memory devices)
    {
        try this.previewVouchersAndRevert(token, vouchers, feeRecipient == address(0) ? msg.sender : feeRecipient) {}
        catch (bytes memory data) {
            return _previewResult(data);
        }
    }

    /// @notice Used by previewVouchers only: settles, then reverts with PreviewResult. Always reverts.
    /// @param token As in settleVouchers. @param vouchers As in settleVouchers.
    /// @param feeRecipient As in settleVouchers.
    function previewVouchersAndRevert(address token, SignedVoucher[] calldata vouchers, address feeRecipient)
        external
    {
        (Reason[] memory reasons, address[] memory devices) = _settleVouchers(token, vouchers, feeRecipient, true);
        revert PreviewResult(reasons, devices);
    }

    /// @dev Decodes PreviewResult from a rolled-back settlement; re-raises any other failure.
    function _previewResult(bytes memory data)
        internal
        pure
        returns (Reason[] memory reasons, address[] memory devices)
    {
        if (data.length < 4 || bytes4(data) != PreviewResult.selector) {
            assembly ("memory-safe") {
                revert(add(data, 0x20), mload(data))
            }
        }
        assembly ("memory-safe") {
            // Drop the selector in place: what follows is abi.encode(reasons, devices).
            let len := sub(mload(data), 4)
            data := add(data, 4)
            mstore(data, len)
        }
        (reasons, devices) = abi.decode(data, (Reason[], address[]));
    }

    /// @dev What consecutive items of one batch share, kept in memory: a fleet's devices share a
    ///      policy and an owner, so the policy's slots and the owner's balance are read once per
    ///      run of items instead of once per item. While `owner` is cached, every read and write of
    ///      _balances[owner][token] in this batch goes through `ownerBalance`. Credits to the last
    ///      payee (a relayer sorts a batch by payee) and all fees are summed here and written once.
    ///      Invariants: `payee` != `owner`; `payeeCredit` and `fees` are not yet in storage, and are
    ///      flushed into an account's balance before that balance is loaded as `ownerBalance`.
    struct Batch {
        address token;
        address feeRecipient;
        uint32 policyId; // policy whose words are cached (0: none yet)
        Reason policyStatus; // _policyStatus of that policy, plus WrongToken
        uint256 w1;
        uint256 w2;
        address owner; // that policy's owner
        uint256 ownerBalance; // _balances[owner][token] as this batch has left it so far
        address payee; // the last payee credited that is not `owner`
        uint256 payeeCredit; // what this batch owes `payee` and has not written yet
        uint256 fees; // what this batch owes feeRecipient (while it is not `owner`), not written yet
        bytes32 domain; // the EIP-712 domain separator, read once
        uint256 periodIndex; // block.timestamp / the cached policy's periodLength
    }

    /// @dev `collect`: build the per-item results (preview only; settle's callers read events).
    function _openBatch(address token, address feeRecipient, uint256 n, bool collect)
        internal
        view
        returns (Batch memory b, Reason[] memory reasons, address[] memory devices)
    {
        b.token = token;
        b.feeRecipient = feeRecipient;
        b.domain = _domainSeparatorV4();
        if (collect) {
            reasons = new Reason[](n);
            devices = new address[](n);
        }
    }

    /// @dev Writes the cached owner balance and the summed credits back, and reports the batch.
    function _closeBatch(Batch memory b, uint256 settled, uint256 n) internal {
        if (b.owner != address(0)) _balances[b.owner][b.token] = b.ownerBalance;
        _flushPayee(b);
        _flushFees(b);
        emit BatchSettled(msg.sender, b.feeRecipient, b.token, settled, n - settled);
    }

    function _flushPayee(Batch memory b) internal {
        if (b.payeeCredit != 0) {
            _balances[b.payee][b.token] += b.payeeCredit;
            b.payeeCredit = 0;
        }
    }

    function _flushFees(Batch memory b) internal {
        if (b.fees != 0) {
            _balances[b.feeRecipient][b.token] += b.fees;
            b.fees = 0;
        }
    }

    function _settle(address token, SignedPayment[] calldata payments, address feeRecipient, bool collect)
        internal
        returns (Reason[] memory reasons, address[] memory devices)
    {
        uint256 n = payments.length;
        Batch memory b;
        (b, reasons, devices) = _openBatch(token, feeRecipient, n, collect);
        uint256 settled;
        for (uint256 i; i < n; ++i) {
            (Reason reason, address device) = _settleOne(b, payments[i]);
            if (collect) devices[i] = device;
            if (reason == Reason.None) {
                ++settled;
            } else {
                if (collect) reasons[i] = reason;
                emit PaymentSkipped(i, device, reason);
            }
        }
        _closeBatch(b, settled, n);
    }

    function _settleVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient, bool collect)
        internal
        returns (Reason[] memory reasons, address[] memory devices)
    {
        uint256 n = vouchers.length;
        Batch memory b;
        (b, reasons, devices) = _openBatch(token, feeRecipient, n, collect);
        uint256 settled;
        for (uint256 i; i < n; ++i) {
            (Reason reason, address device) = _settleVoucher(b, vouchers[i]);
            if (collect) devices[i] = device;
            if (reason == Reason.None) {
                ++settled;
            } else {
                if (collect) reasons[i] = reason;
                emit VoucherSkipped(i, device, reason);
            }
        }
        _closeBatch(b, settled, n);
    }

    /// @dev Checks everything, then writes: a skipped item changes nothing. Gas matters here: the
    ///      device slot is read once into a stack word (see PackedState) and written once.
    function _settleOne(Batch memory b, SignedPayment calldata p) internal returns (Reason reason, address device) {
        device = CompactSignature.recover(
            CompactSignature.typedDataHash(b.domain, PaymentHash.hashPacked(b.token, p.payeeAmount, p.terms, p.ref)),
            p.r,
            p.vs
        );
        if (device == address(0)) return (Reason.InvalidSignature, address(0));
        // The device and terms checks are written out here and in _settleVoucher: shared functions
        // are not inlined by via-IR, which costs ~180 gas per item.
        uint256 slot = _deviceSlot(device);
        uint256 d;
        assembly ("memory-safe") {
            d := sload(slot)
        }
        {
            uint32 policyId = d.policyId();
            if (policyId == 0) return (Reason.UnknownDevice, device);
            if (policyId == REVOKED) return (Reason.DeviceRevoked, device);
            if (d.paused()) return (Reason.DevicePaused, device);
            if (policyId != b.policyId) _loadPolicy(b, policyId);
            if (b.policyStatus != Reason.None) return (b.policyStatus, device);
        }
        uint256 terms = p.terms;
        if (block.timestamp >= (terms >> 32) & PackedState.U32) return (Reason.DeadlinePassed, device);
        address payee = address(uint160(p.payeeAmount >> 96));
        if (payee == address(0)) return (Reason.InvalidPayee, device);
        if (b.w1.payeesRestricted() && !_payeeAllowed[b.policyId][payee]) return (Reason.PayeeNotAllowed, device);
        if (uint96(terms >> 64) > terms >> 160) return (Reason.FeeAboveMax, device);
        {
            uint256 nonceCheck = NonceWindow.check(d.nonceTop(), d.nonceWindow(), uint32(terms));
            if (nonceCheck == 1) return (Reason.NonceUsed, device);
            if (nonceCheck == 2) return (Reason.NonceTooOld, device);
        }
        // Unchecked: two uint96 values cannot overflow a uint256.
        uint256 total;
        unchecked {
            total = uint256(uint96(p.payeeAmount)) + uint96(terms >> 64);
        }
        (uint32 top, uint24 window) = NonceWindow.mark(d.nonceTop(), d.nonceWindow(), uint32(terms));
        reason = _spend(b, d, slot, total, PackedState.nonceBits(top, window));
        if (reason != Reason.None) return (reason, device);
        _credit(b, payee, uint96(p.payeeAmount), uint96(terms >> 64));
        // amount and fee are below 2^64 here (their sum passed a uint64 cap): see PaymentSettled.
        emit PaymentSettled(
            device, payee, p.ref, uint96(p.payeeAmount) | (uint256(uint96(terms >> 64)) << 64) | (uint256(uint32(terms)) << 128)
        );
    }

    /// @dev As _settleOne, for a tab voucher: pays the increase of the tab's cumulative amount. The
    ///      device and terms checks are written out as in _settleOne (shared functions are not inlined).
    function _settleVoucher(Batch memory b, SignedVoucher calldata v) internal returns (Reason reason, address device) {
        device = CompactSignature.recover(
            CompactSignature.typedDataHash(
                b.domain, VoucherHash.hashPacked(b.token, v.payeeCumulative, v.terms, v.tabId)
            ),
            v.r,
            v.vs
        );
        if (device == address(0)) return (Reason.InvalidSignature, address(0));
        uint256 deviceSlot = _deviceSlot(device);
        uint256 d;
        assembly ("memory-safe") {
            d := sload(deviceSlot)
        }
        {
            uint32 policyId = d.policyId();
            if (policyId == 0) return (Reason.UnknownDevice, device);
            if (policyId == REVOKED) return (Reason.DeviceRevoked, device);
            if (d.paused()) return (Reason.DevicePaused, device);
            if (policyId != b.policyId) _loadPolicy(b, policyId);
            if (b.policyStatus != Reason.None) return (b.policyStatus, device);
        }
        uint256 terms = v.terms;
        if (block.timestamp >= (terms >> 32) & PackedState.U32) return (Reason.DeadlinePassed, device);
        address payee = address(uint160(v.payeeCumulative >> 96));
        if (payee == address(0)) return (Reason.InvalidPayee, device);
        if (b.w1.payeesRestricted() && !_payeeAllowed[b.policyId][payee]) return (Reason.PayeeNotAllowed, device);
        if (uint96(terms >> 64) > terms >> 160) return (Reason.FeeAboveMax, device);
        return (_payTab(b, v, device, d, deviceSlot, payee), device);
    }

    /// @dev Tab-level checks and effects of a voucher that passed the device and terms checks (split
    ///      from _settleVoucher for the stack; its only caller, so via-IR inlines it).
    function _payTab(
        Batch memory b,
        SignedVoucher calldata v,
        address device,
        uint256 d,
        uint256 deviceSlot,
        address payee
    ) internal returns (Reason reason) {
        // The tab's slot is its key itself (see _tabSlot).
        uint256 slot = _tabSlot(device, payee, b.token, v.tabId);
        uint256 tab;
        assembly ("memory-safe") {
            tab := sload(slot)
        }
        uint256 closesAt = tab >> 96;
        if (closesAt != 0 && block.timestamp >= closesAt) return Reason.TabClosed;
        uint256 cumulative = uint96(v.payeeCumulative);
        // One variable holds what the tab settled, then the increment: the legacy (coverage) pipeline
        // runs out of stack slots with two.
        uint256 increment = uint96(tab);
        if (cumulative <= increment) return Reason.VoucherStale;
        uint256 fee = uint96(v.terms >> 64);
        // Unchecked: cumulative > what the tab settled, and increment + fee < 2^97.
        unchecked {
            increment = cumulative - increment;
            reason = _spend(b, d, deviceSlot, increment + fee, d.nonceBitsOf());
        }
        if (reason != Reason.None) return reason;
        tab = (tab & ~uint256(type(uint96).max)) | cumulative;
        assembly ("memory-safe") {
            sstore(slot, tab)
        }
        _credit(b, payee, increment, fee);
        // increment and fee are below 2^64 here (their sum passed a uint64 cap): see VoucherSettled.
        emit VoucherSettled(device, payee, v.tabId, increment | (fee << 64) | (cumulative << 128));
    }

    /// @dev Caches policy `policyId` in `b`. A new owner's balance replaces the previous owner's,
    ///      which is written back first.
    function _loadPolicy(Batch memory b, uint32 policyId) internal {
        (uint256 w0, uint256 w1, uint256 w2) = _policyWords(policyId);
        b.policyId = policyId;
        b.w1 = w1;
        b.w2 = w2;
        b.periodIndex = block.timestamp / w1.periodLength();
        Reason status = _policyStatus(w0, w1);
        if (status == Reason.None && w1.token() != b.token) status = Reason.WrongToken;
        b.policyStatus = status;
        address owner = w0.owner();
        if (owner != b.owner) {
            if (b.owner != address(0)) _balances[b.owner][b.token] = b.ownerBalance;
            // What this batch owes the new owner joins its balance before it is cached.
            if (owner == b.payee) {
                _flushPayee(b);
                b.payee = address(0);
            }
            if (owner == b.feeRecipient) _flushFees(b);
            b.owner = owner;
            b.ownerBalance = _balances[owner][b.token];
        }
    }

    /// @dev Cap and balance checks for `total` (amount + fee); on success debits the cached owner
    ///      balance and writes the device word at `slot` (counters rolled into the current period,
    ///      nonce fields `nonceBits`).
    function _spend(Batch memory b, uint256 d, uint256 slot, uint256 total, uint256 nonceBits)
        internal
        returns (Reason)
    {
        uint256 w2 = b.w2;
        if (total > w2.maxPerPayment()) return Reason.ExceedsPaymentCap;
        uint256 index = b.periodIndex;
        // Unchecked: total < 2^97 and both counters < 2^64, so no sum can overflow; the
        // subtraction is guarded by the balance check above it.
        unchecked {
            uint256 periodSpent = (index == d.periodIndex() ? d.periodSpent() : 0) + total;
            if (periodSpent > w2.maxPerPeriod()) return Reason.ExceedsPeriodCap;
            uint256 lifetimeSpent = d.lifetimeSpent() + total;
            if (lifetimeSpent > w2.lifetimeMax()) return Reason.ExceedsLifetimeCap;
            if (b.ownerBalance < total) return Reason.InsufficientBalance;
            b.ownerBalance -= total;
            // Both spends were just bounded by uint64 caps, so they fit their 64-bit fields.
            uint256 next = d.withSpend(index, periodSpent, lifetimeSpent, nonceBits);
            assembly ("memory-safe") {
                sstore(slot, next)
            }
        }
        return Reason.None;
    }

    /// @dev Credits payee and fee recipient in memory: to the cached owner's balance, the last
    ///      payee's running credit (a new payee flushes the previous one) or the batch's fees.
    function _credit(Batch memory b, address payee, uint256 amount, uint256 fee) internal {
        if (payee == b.owner) {
            b.ownerBalance += amount;
        } else if (payee == b.payee) {
            b.payeeCredit += amount;
        } else {
            _flushPayee(b);
            b.payee = payee;
            b.payeeCredit = amount;
        }
        if (fee != 0) {
            if (b.feeRecipient == b.owner) b.ownerBalance += fee;
            else b.fees += fee;
        }
    }

    /// @dev Policy-level checks at this block's time (payment-independent; device pause aside).
    function _policyStatus(uint256 w0, uint256 w1) internal view returns (Reason) {
        if (w1.policyPaused()) return Reason.PolicyPaused;
        if (w0.epoch() != _owners[w0.owner()].epoch) return Reason.PolicyFrozen;
        if (block.timestamp < w0.validFrom()) return Reason.NotYetValid;
        uint256 until = w0.validUntil();
        if (until != 0 && block.timestamp >= until) return Reason.PolicyExpired;
        return Reason.None;
    }

    function _deviceWord(address device) internal view returns (uint256 d) {
        uint256 slot = _deviceSlot(device);
        assembly ("memory-safe") {
            d := sload(slot)
        }
    }

    function _deviceSlot(address device) internal view returns (uint256 slot) {
        DeviceState storage s = _devices[device];
        assembly ("memory-safe") {
            slot := s.slot
        }
    }

    function _policyWords(uint32 policyId) internal view returns (uint256 w0, uint256 w1, uint256 w2) {
        Policy storage s = _policies[policyId];
        assembly ("memory-safe") {
            w0 := sload(s.slot)
            w1 := sload(add(s.slot, 1))
            w2 := sload(add(s.slot, 2))
        }
    }

    // =============================================================================================
    // Tabs
    // =============================================================================================

    /// @inheritdoc IMachinePay
    function closeTab(address device, address payee, address token, uint256 tabId) external {
        if (msg.sender == payee) {
            _closeTab(device, payee, token, tabId, block.timestamp, msg.sender);
            return;
        }
        uint32 policyId = _devices[device].policyId;
        if (policyId == 0 || policyId == REVOKED || _policies[policyId].owner != msg.sender) {
            revert NotTabParty(msg.sender);
        }
        _closeTab(device, payee, token, tabId, block.timestamp + NOTICE_PERIOD, msg.sender);
    }

    /// @inheritdoc IMachinePay
    function closeTabBySignature(
        address device,
        address payee,
        address token,
        uint256 tabId,
        uint256 deadline,
        bytes32 r,
        bytes32 vs
    ) external {
        if (block.timestamp >= deadline) revert SignatureExpired(deadline, block.timestamp);
        bytes32 digest = _hashTypedDataV4(VoucherHash.hashClose(payee, token, tabId, deadline));
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, r, vs);
        if (err != ECDSA.RecoverError.NoError || signer != device) revert InvalidDeviceSignature(device);
        _closeTab(device, payee, token, tabId, block.timestamp + NOTICE_PERIOD, device);
    }

    /// @dev Sets when a tab stops settling; only ever moves that time earlier.
    function _closeTab(address device, address payee, address token, uint256 tabId, uint256 closesAt, address by)
        internal
    {
        bytes32 key = _tabKey(device, payee, token, tabId);
        uint256 slot = uint256(key);
        uint256 tab;
        assembly ("memory-safe") {
            tab := sload(slot)
        }
        uint256 current = tab >> 96;
        if (current != 0 && current <= closesAt) revert TabAlreadyClosing(current);
        tab = uint96(tab) | (closesAt << 96);
        assembly ("memory-safe") {
            sstore(slot, tab)
        }
        emit TabClosing(key, device, payee, token, tabId, closesAt, by);
    }

    /// @dev A tab's state (settled(96) | closesAt(40), see IMachinePay.Tab) lives at the storage slot
    ///      numbered by its key, saving the mapping's second hash on every voucher. No other slot can
    ///      be there: mapping and array slots are hashes of 64- and 32-byte inputs, a key hashes 128.
    function _tabSlot(address device, address payee, address token, uint256 tabId) internal pure returns (uint256) {
        return uint256(_tabKey(device, payee, token, tabId));
    }

    function _tabKey(address device, address payee, address token, uint256 tabId) internal pure returns (bytes32 key) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, and(device, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x20), and(payee, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x40), and(token, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x60), tabId)
            key := keccak256(m, 0x80)
        }
    }

    // =============================================================================================
    // Views
    // =============================================================================================

    /// @inheritdoc IMachinePay
    function balanceOf(address account, address token) external view returns (uint256) {
        return _balances[account][token];
    }

    /// @inheritdoc IMachinePay
    function getPolicy(uint32 policyId) external view returns (Policy memory) {
        return _policies[policyId];
    }

    /// @inheritdoc IMachinePay
    function policyCount() external view returns (uint32) {
        return _policyCount;
    }

    /// @inheritdoc IMachinePay
    function getDevice(address device) external view returns (DeviceState memory) {
        return _devices[device];
    }

    /// @inheritdoc IMachinePay
    function headroom(address device) external view returns (Headroom memory h) {
        uint256 d = _deviceWord(device);
        h.policyId = d.policyId();
        h.nonceTop = d.nonceTop();
        h.nonceWindow = d.nonceWindow();
        if (h.policyId == 0) {
            h.status = Reason.UnknownDevice;
            return h;
        }
        if (h.policyId == REVOKED) {
            h.status = Reason.DeviceRevoked;
            return h;
        }
        (uint256 w0, uint256 w1, uint256 w2) = _policyWords(h.policyId);
        h.owner = w0.owner();
        h.token = w1.token();
        h.balance = _balances[h.owner][h.token];
        uint256 index = block.timestamp / w1.periodLength();
        h.periodEndsAt = (index + 1) * w1.periodLength();
        uint256 periodSpent = index == d.periodIndex() ? d.periodSpent() : 0;
        h.perPayment = w2.maxPerPayment();
        h.period = w2.maxPerPeriod() > periodSpent ? w2.maxPerPeriod() - periodSpent : 0;
        h.lifetime = w2.lifetimeMax() > d.lifetimeSpent() ? w2.lifetimeMax() - d.lifetimeSpent() : 0;
        h.status = d.paused() ? Reason.DevicePaused : _policyStatus(w0, w1);
        if (h.status == Reason.None) {
            uint256 most = h.perPayment;
            if (h.period < most) most = h.period;
            if (h.lifetime < most) most = h.lifetime;
            if (h.balance < most) most = h.balance;
            h.spendable = most;
        }
    }

    /// @inheritdoc IMachinePay
    function nonceStatus(address device, uint256 nonce) external view returns (Reason) {
        if (nonce > type(uint32).max) return Reason.NonceTooLarge;
        uint256 d = _deviceWord(device);
        uint256 check = NonceWindow.check(d.nonceTop(), d.nonceWindow(), nonce);
        if (check == 1) return Reason.NonceUsed;
        if (check == 2) return Reason.NonceTooOld;
        return Reason.None;
    }

    /// @inheritdoc IMachinePay
    function isPayeeAllowed(uint32 policyId, address payee) external view returns (bool) {
        return _payeeAllowed[policyId][payee];
    }

    /// @inheritdoc IMachinePay
    function pendingWithdrawal(address owner, address token) external view returns (PendingWithdrawal memory) {
        return _withdrawals[owner][token];
    }

    /// @inheritdoc IMachinePay
    function ownerEpoch(address owner) external view returns (uint32) {
        return _owners[owner].epoch;
    }

    /// @inheritdoc IMachinePay
    function ownerNonceUsed(address owner, uint256 nonce) external view returns (bool) {
        return _ownerNonceUsed[owner][nonce];
    }

    /// @inheritdoc IMachinePay
    function ownsPolicies(address account) external view returns (bool) {
        return _owners[account].hasPolicies;
    }

    /// @inheritdoc IMachinePay
    function getTab(address device, address payee, address token, uint256 tabId) external view returns (Tab memory) {
        uint256 slot = _tabSlot(device, payee, token, tabId);
        uint256 tab;
        assembly ("memory-safe") {
            tab := sload(slot)
        }
        return Tab({settled: uint96(tab), closesAt: uint40(tab >> 96)});
    }

    /// @inheritdoc IMachinePay
    function tabKey(address device, address payee, address token, uint256 tabId) external pure returns (bytes32) {
        return _tabKey(device, payee, token, tabId);
    }

    /// @inheritdoc IMachinePay
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }
}
