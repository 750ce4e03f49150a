// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title VoucherHash
/// @notice EIP-712 type strings and struct hashes for tabs: the Voucher a device signs for the
///         cumulative amount it owes on a tab, and the TabClose it signs to close one. The SDK
///         signs exactly these strings; test/eip712-tab-types.test.ts pins them.
library VoucherHash {
    string internal constant VOUCHER_TYPE =
        "Voucher(address payee,address token,uint256 tabId,uint256 cumulative,uint256 deadline,uint256 maxFee)";
    bytes32 internal constant VOUCHER_TYPEHASH = keccak256(bytes(VOUCHER_TYPE));

    string internal constant TAB_CLOSE_TYPE = "TabClose(address payee,address token,uint256 tabId,uint256 deadline)";
    bytes32 internal constant TAB_CLOSE_TYPEHASH = keccak256(bytes(TAB_CLOSE_TYPE));

    /// @notice hashStruct(Voucher) from the packed calldata words (see IMachinePay.SignedVoucher),
    ///         without allocating memory.
    /// @dev Writes 7 words at the free memory pointer and leaves the pointer where it was.
    function hashPacked(address token, uint256 payeeCumulative, uint256 terms, uint256 tabId)
        internal
        pure
        returns (bytes32 digest)
    {
        bytes32 typehash = VOUCHER_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), shr(96, payeeCumulative)) // payee
            mstore(add(m, 0x40), and(token, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x60), tabId)
            mstore(add(m, 0x80), and(payeeCumulative, 0xffffffffffffffffffffffff)) // cumulative: low 96 bits
            mstore(add(m, 0xa0), and(shr(32, terms), 0xffffffff)) // deadline: bits 32..63
            mstore(add(m, 0xc0), shr(160, terms)) // maxFee: bits 160..255 (fee, 64..159, is not signed)
            digest := keccak256(m, 0xe0)
        }
    }

    /// @notice hashStruct(TabClose).
    function hashClose(address payee, address token, uint256 tabId, uint256 deadline) internal pure returns (bytes32) {
        return keccak256(abi.encode(TAB_CLOSE_TYPEHASH, payee, token, tabId, deadline));
    }
}
