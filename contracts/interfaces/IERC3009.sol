// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IERC3009
/// @notice The part of EIP-3009 (transfer with authorization, as USDC implements it) MachinePay uses.
interface IERC3009 {
    /// @notice Move `value` from `from` to the caller, who must be `to`, on `from`'s signed authorization.
    /// @param from Payer. @param to Payee, must be msg.sender. @param value Token units.
    /// @param validAfter Valid after this timestamp. @param validBefore Valid before this timestamp.
    /// @param nonce Unique 32-byte nonce. @param v Signature v. @param r Signature r. @param s Signature s.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}
