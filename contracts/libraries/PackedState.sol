// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title PackedState
/// @notice Field access on the raw storage words of IMachinePay.DeviceState and IMachinePay.Policy,
///         so settle reads each slot once into a stack word and writes the device slot once.
/// @dev The offsets are the ones solc gives the structs (fields packed from the low bits, in
///      declaration order); test/packed-state.test.ts checks them against the typed getters.
///
///      DeviceState, one slot:
///        [  0.. 31] policyId  [32..39] paused  [40..71] periodIndex  [72..135] periodSpent
///        [136..199] lifetimeSpent  [200..231] nonceTop  [232..255] nonceWindow
///      Policy, three slots:
///        w0: [0..159] owner  [160..191] epoch  [192..223] validFrom  [224..255] validUntil
///        w1: [0..159] token  [160..191] periodLength  [192..199] payeesRestricted  [200..207] paused
///        w2: [0..63] maxPerPayment  [64..127] maxPerPeriod  [128..191] lifetimeMax
library PackedState {
    uint256 internal constant U32 = 0xffffffff;
    uint256 internal constant U64 = 0xffffffffffffffff;

    function policyId(uint256 d) internal pure returns (uint32) {
        return uint32(d);
    }

    function paused(uint256 d) internal pure returns (bool) {
        return (d >> 32) & 0xff != 0;
    }

    function periodIndex(uint256 d) internal pure returns (uint256) {
        return (d >> 40) & U32;
    }

    function periodSpent(uint256 d) internal pure returns (uint256) {
        return (d >> 72) & U64;
    }

    function lifetimeSpent(uint256 d) internal pure returns (uint256) {
        return (d >> 136) & U64;
    }

    function nonceTop(uint256 d) internal pure returns (uint32) {
        return uint32(d >> 200);
    }

    function nonceWindow(uint256 d) internal pure returns (uint24) {
        return uint24(d >> 232);
    }

    /// @notice The nonce fields (top, window) in their place in the device word.
    function nonceBits(uint32 top, uint24 window) internal pure returns (uint256) {
        return (uint256(top) << 200) | (uint256(window) << 232);
    }

    /// @notice The device word's own nonce fields, in place.
    function nonceBitsOf(uint256 d) internal pure returns (uint256) {
        return d & (type(uint256).max << 200);
    }

    /// @notice The device word after a spend of the counters in period `index`, with the nonce
    ///         fields `bits` (see nonceBits); policyId and paused are kept. Callers bound the
    ///         spends to uint64.
    function withSpend(uint256 d, uint256 index, uint256 newPeriodSpent, uint256 newLifetimeSpent, uint256 bits)
        internal
        pure
        returns (uint256)
    {
        return (d & 0xffffffffff) | (index << 40) | (newPeriodSpent << 72) | (newLifetimeSpent << 136) | bits;
    }

    // Policy word 0
    function owner(uint256 w0) internal pure returns (address) {
        return address(uint160(w0));
    }

    function epoch(uint256 w0) internal pure returns (uint32) {
        return uint32(w0 >> 160);
    }

    function validFrom(uint256 w0) internal pure returns (uint256) {
        return (w0 >> 192) & U32;
    }

    function validUntil(uint256 w0) internal pure returns (uint256) {
        return w0 >> 224;
    }

    // Policy word 1
    function token(uint256 w1) internal pure returns (address) {
        return address(uint160(w1));
    }

    function periodLength(uint256 w1) internal pure returns (uint256) {
        return (w1 >> 160) & U32;
    }

    function payeesRestricted(uint256 w1) internal pure returns (bool) {
        return (w1 >> 192) & 0xff != 0;
    }

    function policyPaused(uint256 w1) internal pure returns (bool) {
        return (w1 >> 200) & 0xff != 0;
    }

    // Policy word 2
    function maxPerPayment(uint256 w2) internal pure returns (uint256) {
        return w2 & U64;
    }

    function maxPerPeriod(uint256 w2) internal pure returns (uint256) {
        return (w2 >> 64) & U64;
    }

    function lifetimeMax(uint256 w2) internal pure returns (uint256) {
        return (w2 >> 128) & U64;
    }
}
