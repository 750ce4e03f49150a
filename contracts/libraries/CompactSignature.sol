// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title CompactSignature
/// @notice ecrecover of an EIP-2098 compact signature (r, vs = s | (v - 27) << 255) for settle's hot
///         loop: the rules of OpenZeppelin's ECDSA.tryRecover, without its error plumbing (~100 gas
///         per item). test/settle.test.ts checks high-s, bad and zero signatures against it.
library CompactSignature {
    /// @dev secp256k1n / 2: a larger s has a low-s twin, and EIP-2098 cannot express it (the top bit is v).
    uint256 internal constant S_MAX = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice The signer of `digest`, or address(0) if s is above S_MAX or nothing recovers.
    function recover(bytes32 digest, bytes32 r, bytes32 vs) internal view returns (address signer) {
        assembly ("memory-safe") {
            let s := and(vs, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)
            if iszero(gt(s, S_MAX)) {
                // Scratch space above the free memory pointer; nothing is allocated.
                let m := mload(0x40)
                mstore(m, digest)
                mstore(add(m, 0x20), add(shr(255, vs), 27))
                mstore(add(m, 0x40), r)
                mstore(add(m, 0x60), s)
                // The precompile returns no data for a signature that does not recover.
                if staticcall(gas(), 1, m, 0x80, m, 0x20) {
                    if returndatasize() { signer := mload(m) }
                }
            }
        }
    }

    /// @notice keccak256("\x19\x01" ‖ domainSeparator ‖ structHash): the EIP-712 digest.
    function typedDataHash(bytes32 domainSeparator, bytes32 structHash) internal pure returns (bytes32 digest) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, hex"1901")
            mstore(add(m, 0x02), domainSeparator)
            mstore(add(m, 0x22), structHash)
            digest := keccak256(m, 0x42)
        }
    }
}
