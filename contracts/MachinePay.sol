// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IMachinePay} from "./interfaces/IMachinePay.sol";
import {PaymentHash} from "./libraries/PaymentHash.sol";
import {VoucherHash} from "./libraries/VoucherHash.sol";
import {OnboardingHash} from "./libraries/OnboardingHash.sol";
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
    /// @dev Tab state by tabKey: settled(96) | closesAt(40), see IMachinePay.Tab.
    mapping(bytes32 tabKey => uint256) internal _tabs;
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
        if (amount == 0) revert ZeroAmount();
        uint256 received;
        if (token == address(0)) {
            if (msg.value != amount) revert NativeAmountMismatch(msg.value, amount);
            received = amount;
        } else {
            if (msg.value != 0) revert UnexpectedNativeValue(msg.value);
            // Credit what arrived, not what was asked: fee-on-transfer tokens deliver less.
            uint256 before = IERC20(token).balanceOf(address(this));
            IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
            received = IERC20(token).balanceOf(address(this)) - before;
            if (received == 0) revert ZeroAmount();
        }
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
    function assignDevices(uint32 policyId, address[] calldata devices) external {
        _requirePolicyOwner(msg.sender, policyId);
        for (uint256 i; i < devices.length; ++i) {
            _assign(msg.sender, devices[i], policyId);
        }
    }

    /// @inheritdoc IMachinePay
    function registerDevice(address device, PolicyParams calldata params) external returns (uint32 policyId) {
        policyId = _createPolicy(msg.sender, params);
        _assign(msg.sender, device, policyId);
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
    function onboardBySignature(Onboarding calldata onboarding, address[] calldata devices, bytes32 r, bytes32 vs)
        external
        returns (uint32 policyId)
    {
        bytes32 structHash = OnboardingHash.hashOnboarding(onboarding, devices);
        address owner = _useOwnerSignature(structHash, onboarding.epoch, onboarding.nonce, onboarding.deadline, r, vs);
        policyId = onboarding.policyId;
        if (policyId == 0) {
            policyId = _createPolicy(owner, onboarding.policy);
        } else {
            _requirePolicyOwner(owner, policyId);
            _writePolicy(owner, policyId, onboarding.policy, _policies[policyId].paused);
        }
        for (uint256 i; i < devices.length; ++i) {
            _assign(owner, devices[i], policyId);
        }
    }

    /// @inheritdoc IMachinePay
    function revokeBySignature(Revocation calldata revocation, address[] calldata devices, bytes32 r, bytes32 vs)
        external
    {
        bytes32 structHash = OnboardingHash.hashRevocation(revocation, devices);
        address owner = _useOwnerSignature(structHash, revocation.epoch, revocation.nonce, revocation.deadline, r, vs);
        for (uint256 i; i < devices.length; ++i) {
            _revoke(owner, devices[i]);
        }
    }

    /// @dev Recovers the owner of an onboarding or revocation message and spends its nonce.
    function _useOwnerSignature(bytes32 structHash, uint256 epoch, uint256 nonce, uint256 deadline, bytes32 r, bytes32 vs)
        internal
        returns (address owner)
    {
        if (block.timestamp >= deadline) revert SignatureExpired(deadline, block.timestamp);
        ECDSA.RecoverError err;
        (owner, err,) = ECDSA.tryRecover(_hashTypedDataV4(structHash), r, vs);
        if (err != ECDSA.RecoverError.NoError) revert InvalidOwnerSignature();
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

    function _assign(address owner, address device, uint32 policyId) internal {
        if (device == address(0)) revert ZeroAddress();
        DeviceState storage state = _devices[device];
        uint32 current = state.policyId;
        if (current == REVOKED) revert DeviceIsRevoked(device);
        if (current != 0) {
            address holder = _policies[current].owner;
            if (holder != owner) revert DeviceOwnedByAnother(device, holder);
        }
        // Nonces and counters are kept: re-assigning must never make an old signature valid again.
        state.policyId = policyId;
        emit DeviceAssigned(device, policyId, owner);
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
    function settle(address token, SignedPayment[] calldata payments, address feeRecipient)
        external
        returns (Reason[] memory reasons, address[] memory devices)
    {
        return _settle(token, payments, feeRecipient == address(0) ? msg.sender : feeRecipient);
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
        (Reason[] memory reasons, address[] memory devices) = _settle(token, payments, feeRecipient);
        revert PreviewResult(reasons, devices);
    }

    /// @inheritdoc IMachinePay
    function settleVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient)
        external
        returns (Reason[] memory reasons, address[] memory devices)
    {
        return _settleVouchers(token, vouchers, feeRecipient == address(0) ? msg.sender : feeRecipient);
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
        (Reason[] memory reasons, address[] memory devices) = _settleVouchers(token, vouchers, feeRecipient);
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
    ///      _balances[owner][token] in this batch goes through `ownerBalance`.
    struct Batch {
        address token;
        address feeRecipient;
        uint32 policyId; // policy whose words are cached (0: none yet)
        Reason policyStatus; // _policyStatus of that policy, plus WrongToken
        uint256 w1;
        uint256 w2;
        address owner; // that policy's owner
        uint256 ownerBalance; // _balances[owner][token] as this batch has left it so far
    }

    function _openBatch(address token, address feeRecipient, uint256 n)
        internal
        pure
        returns (Batch memory b, Reason[] memory reasons, address[] memory devices)
    {
        b.token = token;
        b.feeRecipient = feeRecipient;
        reasons = new Reason[](n);
        devices = new address[](n);
    }

    /// @dev Writes the cached owner balance back and reports the batch.
    function _closeBatch(Batch memory b, uint256 settled, uint256 n) internal {
        if (b.owner != address(0)) _balances[b.owner][b.token] = b.ownerBalance;
        emit BatchSettled(msg.sender, b.feeRecipient, b.token, settled, n - settled);
    }

    function _settle(address token, SignedPayment[] calldata payments, address feeRecipient)
        internal
        returns (Reason[] memory reasons, address[] memory devices)
    {
        uint256 n = payments.length;
        Batch memory b;
        (b, reasons, devices) = _openBatch(token, feeRecipient, n);
        uint256 settled;
        for (uint256 i; i < n; ++i) {
            (Reason reason, address device) = _settleOne(b, payments[i]);
            devices[i] = device;
            if (reason == Reason.None) {
                ++settled;
            } else {
                reasons[i] = reason;
                emit PaymentSkipped(i, device, reason);
            }
        }
        _closeBatch(b, settled, n);
    }

    function _settleVouchers(address token, SignedVoucher[] calldata vouchers, address feeRecipient)
        internal
        returns (Reason[] memory reasons, address[] memory devices)
    {
        uint256 n = vouchers.length;
        Batch memory b;
        (b, reasons, devices) = _openBatch(token, feeRecipient, n);
        uint256 settled;
        for (uint256 i; i < n; ++i) {
            (Reason reason, address device) = _settleVoucher(b, vouchers[i]);
            devices[i] = device;
            if (reason == Reason.None) {
                ++settled;
            } else {
                reasons[i] = reason;
                emit VoucherSkipped(i, device, reason);
            }
        }
        _closeBatch(b, settled, n);
    }

    /// @dev Checks everything, then writes: a skipped item changes nothing. Gas matters here: the
    ///      device slot is read once into a stack word (see PackedState) and written once.
    function _settleOne(Batch memory b, SignedPayment calldata p) internal returns (Reason reason, address device) {
        {
            bytes32 digest = _hashTypedDataV4(PaymentHash.hashPacked(b.token, p.payeeAmount, p.terms, p.ref));
            ECDSA.RecoverError err;
            (device, err,) = ECDSA.tryRecover(digest, p.r, p.vs);
            if (err != ECDSA.RecoverError.NoError) return (Reason.InvalidSignature, address(0));
        }
        // The device and terms checks below are _admit and _checkTerms written out: with a second
        // caller (_settleVoucher) via-IR stops inlining them, which costs ~180 gas per payment.
        uint256 d = _deviceWord(device);
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
        reason = _spend(b, d, device, total, PackedState.nonceBits(top, window));
        if (reason != Reason.None) return (reason, device);
        _credit(b, payee, uint96(p.payeeAmount), uint96(terms >> 64));
        emit PaymentSettled(device, payee, b.token, uint96(p.payeeAmount), uint32(terms), p.ref, uint96(terms >> 64));
    }

    /// @dev As _settleOne, for a tab voucher: pays the increase of the tab's cumulative amount.
    function _settleVoucher(Batch memory b, SignedVoucher calldata v) internal returns (Reason reason, address device) {
        {
            bytes32 digest = _hashTypedDataV4(VoucherHash.hashPacked(b.token, v.payeeCumulative, v.terms, v.tabId));
            ECDSA.RecoverError err;
            (device, err,) = ECDSA.tryRecover(digest, v.r, v.vs);
            if (err != ECDSA.RecoverError.NoError) return (Reason.InvalidSignature, address(0));
        }
        uint256 d;
        (reason, d) = _admit(b, device);
        if (reason != Reason.None) return (reason, device);
        address payee = address(uint160(v.payeeCumulative >> 96));
        reason = _checkTerms(b, payee, v.terms);
        if (reason != Reason.None) return (reason, device);
        return (_payTab(b, v, device, d, payee), device);
    }

    /// @dev Tab-level checks and effects of a voucher that passed the device and terms checks.
    function _payTab(Batch memory b, SignedVoucher calldata v, address device, uint256 d, address payee)
        internal
        returns (Reason reason)
    {
        bytes32 key = _tabKey(device, payee, b.token, v.tabId);
        uint256 tab = _tabs[key];
        uint256 closesAt = tab >> 96;
        if (closesAt != 0 && block.timestamp >= closesAt) return Reason.TabClosed;
        uint256 cumulative = uint96(v.payeeCumulative);
        uint256 settled = uint96(tab);
        if (cumulative <= settled) return Reason.VoucherStale;
        uint256 fee = uint96(v.terms >> 64);
        // Unchecked: cumulative > settled, and increment + fee < 2^97.
        unchecked {
            reason = _spend(b, d, device, cumulative - settled + fee, d.nonceBitsOf());
        }
        if (reason != Reason.None) return reason;
        _tabs[key] = (tab & ~uint256(type(uint96).max)) | cumulative;
        unchecked {
            _credit(b, payee, cumulative - settled, fee);
            emit VoucherSettled(device, payee, b.token, v.tabId, cumulative - settled, cumulative, fee);
        }
    }

    /// @dev Device- and policy-level checks (loads the policy into the batch cache on a change).
    function _admit(Batch memory b, address device) internal returns (Reason, uint256 d) {
        d = _deviceWord(device);
        uint32 policyId = d.policyId();
        if (policyId == 0) return (Reason.UnknownDevice, d);
        if (policyId == REVOKED) return (Reason.DeviceRevoked, d);
        if (d.paused()) return (Reason.DevicePaused, d);
        if (policyId != b.policyId) _loadPolicy(b, policyId);
        return (b.policyStatus, d);
    }

    /// @dev Checks on the signed terms shared by payments and vouchers: deadline, payee, fee.
    function _checkTerms(Batch memory b, address payee, uint256 terms) internal view returns (Reason) {
        if (block.timestamp >= (terms >> 32) & PackedState.U32) return Reason.DeadlinePassed;
        if (payee == address(0)) return Reason.InvalidPayee;
        if (b.w1.payeesRestricted() && !_payeeAllowed[b.policyId][payee]) return Reason.PayeeNotAllowed;
        if (uint96(terms >> 64) > terms >> 160) return Reason.FeeAboveMax;
        return Reason.None;
    }

    /// @dev Caches policy `policyId` in `b`. A new owner's balance replaces the previous owner's,
    ///      which is written back first.
    function _loadPolicy(Batch memory b, uint32 policyId) internal {
        (uint256 w0, uint256 w1, uint256 w2) = _policyWords(policyId);
        b.policyId = policyId;
        b.w1 = w1;
        b.w2 = w2;
        Reason status = _policyStatus(w0, w1);
        if (status == Reason.None && w1.token() != b.token) status = Reason.WrongToken;
        b.policyStatus = status;
        address owner = w0.owner();
        if (owner != b.owner) {
            if (b.owner != address(0)) _balances[b.owner][b.token] = b.ownerBalance;
            b.owner = owner;
            b.ownerBalance = _balances[owner][b.token];
        }
    }

    /// @dev Cap and balance checks for `total` (amount + fee); on success debits the cached owner
    ///      balance and writes the device word (counters rolled into the current period, nonce marked).
    function _spend(Batch memory b, uint256 d, address device, uint256 total, uint256 nonceBits)
        internal
        returns (Reason)
    {
        uint256 w2 = b.w2;
        if (total > w2.maxPerPayment()) return Reason.ExceedsPaymentCap;
        uint256 index = block.timestamp / b.w1.periodLength();
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
            _writeDevice(device, d, index, periodSpent, lifetimeSpent, nonceBits);
        }
        return Reason.None;
    }

    /// @dev Writes the device word once: counters in period `index`, `nonce` marked in the window.
    function _writeDevice(
        address device,
        uint256 d,
        uint256 index,
        uint256 periodSpent,
        uint256 lifetimeSpent,
        uint256 nonceBits
    ) internal {
        uint256 next = d.withSpend(index, periodSpent, lifetimeSpent, nonceBits);
        DeviceState storage slot = _devices[device];
        assembly ("memory-safe") {
            sstore(slot.slot, next)
        }
    }

    /// @dev Credits payee and fee recipient, through the cache when either is the cached owner.
    function _credit(Batch memory b, address payee, uint256 amount, uint256 fee) internal {
        address token = b.token;
        if (payee == b.owner) b.ownerBalance += amount;
        else _balances[payee][token] += amount;
        if (fee != 0) {
            address recipient = b.feeRecipient;
            if (recipient == b.owner) b.ownerBalance += fee;
            else _balances[recipient][token] += fee;
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
        DeviceState storage s = _devices[device];
        assembly ("memory-safe") {
            d := sload(s.slot)
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
        uint256 tab = _tabs[key];
        uint256 current = tab >> 96;
        if (current != 0 && current <= closesAt) revert TabAlreadyClosing(current);
        _tabs[key] = uint96(tab) | (closesAt << 96);
        emit TabClosing(key, device, payee, token, tabId, closesAt, by);
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
        uint256 tab = _tabs[_tabKey(device, payee, token, tabId)];
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
