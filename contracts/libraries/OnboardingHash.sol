// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IMachinePay} from "../interfaces/IMachinePay.sol";

/// @title OnboardingHash
/// @notice EIP-712 types an owner signs so that anyone can onboard or revoke its devices (a fleet
///         is set up in a few transactions with no owner transaction per device), and the one a
///         device key signs to prove it consents to its owner. The SDK signs exactly these strings;
///         test/onboarding.test.ts and test/abi-freeze.test.ts pin them.
library OnboardingHash {
    string internal constant POLICY_PARAMS_TYPE = "PolicyParams(address token,uint64 maxPerPayment,uint64 maxPerPeriod,"
        "uint32 periodLength,uint64 lifetimeMax,uint32 validFrom,uint32 validUntil,bool payeesRestricted)";
    bytes32 internal constant POLICY_PARAMS_TYPEHASH = keccak256(bytes(POLICY_PARAMS_TYPE));

    /// @dev EIP-712 appends referenced struct types to the primary type, in alphabetical order.
    string internal constant ONBOARDING_TYPE =
        "Onboarding(address owner,uint32 policyId,PolicyParams policy,address[] devices,"
        "uint32 epoch,uint256 nonce,uint256 deadline)"
        "PolicyParams(address token,uint64 maxPerPayment,uint64 maxPerPeriod,"
        "uint32 periodLength,uint64 lifetimeMax,uint32 validFrom,uint32 validUntil,bool payeesRestricted)";
    bytes32 internal constant ONBOARDING_TYPEHASH = keccak256(bytes(ONBOARDING_TYPE));

    string internal constant REVOCATION_TYPE =
        "Revocation(address owner,address[] devices,uint32 epoch,uint256 nonce,uint256 deadline)";
    bytes32 internal constant REVOCATION_TYPEHASH = keccak256(bytes(REVOCATION_TYPE));

    /// @dev A device key binds itself to one owner, once: keys are never unbound (only revoked for
    ///      good), so the owner is all a proof must cover; chain and contract are in the domain.
    string internal constant ENROLLMENT_TYPE = "Enrollment(address owner)";
    bytes32 internal constant ENROLLMENT_TYPEHASH = keccak256(bytes(ENROLLMENT_TYPE));

    /// @notice hashStruct(Enrollment) for `owner`.
    function hashEnrollment(address owner) internal pure returns (bytes32) {
        return keccak256(abi.encode(ENROLLMENT_TYPEHASH, owner));
    }

    /// @notice hashStruct(Onboarding) for `onboarding` with `devices`.
    function hashOnboarding(IMachinePay.Onboarding calldata onboarding, address[] calldata devices)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(
                ONBOARDING_TYPEHASH,
                onboarding.owner,
                onboarding.policyId,
                hashPolicy(onboarding.policy),
                hashAddresses(devices),
                onboarding.epoch,
                onboarding.nonce,
                onboarding.deadline
            )
        );
    }

    /// @notice hashStruct(Revocation) for `revocation` with `devices`.
    function hashRevocation(IMachinePay.Revocation calldata revocation, address[] calldata devices)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(
                REVOCATION_TYPEHASH,
                revocation.owner,
                hashAddresses(devices),
                revocation.epoch,
                revocation.nonce,
                revocation.deadline
            )
        );
    }

    /// @notice hashStruct(PolicyParams).
    function hashPolicy(IMachinePay.PolicyParams calldata p) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                POLICY_PARAMS_TYPEHASH,
                p.token,
                p.maxPerPayment,
                p.maxPerPeriod,
                p.periodLength,
                p.lifetimeMax,
                p.validFrom,
                p.validUntil,
                p.payeesRestricted
            )
        );
    }

    /// @notice EIP-712 encoding of address[]: keccak256 of the addresses, each as a 32-byte word.
    function hashAddresses(address[] calldata list) internal pure returns (bytes32 digest) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            let bytesLen := shl(5, list.length)
            // Calldata address[] elements are already 32-byte words (ABI-encoded).
            calldatacopy(m, list.offset, bytesLen)
            digest := keccak256(m, bytesLen)
        }
    }
}
