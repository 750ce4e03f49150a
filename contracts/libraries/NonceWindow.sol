// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title NonceWindow
/// @notice Replay protection that tolerates out-of-order delivery and fits in 56 bits of the
///         device's storage slot: the highest settled nonce (`top`) and a bitmap of the
///         WINDOW nonces at and below it. A nonce above `top` always settles (and slides the
///         window up); one within the window settles once; one below the window is refused.
/// @dev Why not a Permit2 bitmap: a separate bitmap slot costs a cold read and a write (~5,000
///      gas, 22,100 for a fresh word) per payment, a third of the whole budget. The price is
///      that a payment delayed by more than WINDOW later nonces of its device can no longer settle.
library NonceWindow {
    /// @notice How many nonces at and below the highest settled one are tracked.
    uint256 internal constant WINDOW = 24;
    uint256 private constant MASK = (1 << WINDOW) - 1;

    /// @notice 0 if `nonce` can settle, 1 if it already settled, 2 if it is below the window.
    function check(uint32 top, uint24 window, uint256 nonce) internal pure returns (uint256) {
        if (nonce > top) return 0;
        uint256 distance;
        unchecked {
            distance = uint256(top) - nonce; // nonce <= top here
        }
        if (distance >= WINDOW) return 2;
        return (uint256(window) >> distance) & 1;
    }

    /// @notice The window after settling `nonce`, which `check` must have accepted.
    function mark(uint32 top, uint24 window, uint32 nonce) internal pure returns (uint32, uint24) {
        unchecked {
            // Only differences of two uint32 values, taken in the order that keeps them positive.
            if (nonce > top) {
                uint256 shift = uint256(nonce) - top;
                uint256 shifted = shift >= WINDOW ? 0 : (uint256(window) << shift);
                return (nonce, uint24((shifted | 1) & MASK));
            }
            return (top, uint24(window | (1 << (top - nonce))));
        }
    }
}
