// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title PaymentHash
/// @notice EIP-712 type strings and struct hashes for what devices sign. The SDK signs exactly
///         these strings; test/eip712-types.test.ts pins both the strings and the hashes.
library PaymentHash {
    string internal constant PAYMENT_TYPE =
        "Payment(address payee,address token,uint256 amount,uint256 nonce,uint256 deadline,uint256 maxFee,bytes32 ref)";
    bytes32 internal constant PAYMENT_TYPEHASH = keccak256(bytes(PAYMENT_TYPE));

    /// @notice hashStruct(Payment) from the packed calldata words (see IMachinePay.SignedPayment),
    ///         without allocating memory: settle calls it once per item.
    /// @dev Writes 8 words at the free memory pointer and leaves the pointer where it was.
    function hashPacked(address token, uint256 payeeAmount, uint256 terms, bytes32 ref)
        internal
        pure
        returns (bytes32 digest)
    {
        bytes32 typehash = PAYMENT_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), shr(96, payeeAmount)) // payee
            mstore(add(m, 0x40), and(token, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x60), and(payeeAmount, 0xffffffffffffffffffffffff)) // amount: low 96 bits
            mstore(add(m, 0x80), and(terms, 0xffffffff)) // nonce: bits 0..31
            mstore(add(m, 0xa0), and(shr(32, terms), 0xffffffff)) // deadline: bits 32..63
            mstore(add(m, 0xc0), shr(160, terms)) // maxFee: bits 160..255 (fee, 64..159, is not signed)
            mstore(add(m, 0xe0), ref)
            digest := keccak256(m, 0x100)
        }
    }
}
