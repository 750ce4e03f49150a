// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ReentrantToken
/// @notice Test token that, once armed, calls `target` with `data` from inside every transfer and
///         bubbles up its revert: it exercises the escrow's reentrancy guards.
contract ReentrantToken is ERC20 {
    address public callbackTarget;
    bytes public data;

    constructor() ERC20("Reentrant", "REE") {}

    /// @notice Mint test tokens to anyone. @param amount Token units (18 decimals).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arm the callback. @param target_ Contract to call. @param data_ Calldata to send.
    function arm(address target_, bytes calldata data_) external {
        callbackTarget = target_;
        data = data_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        address t = callbackTarget;
        if (t != address(0) && from != address(0)) {
            callbackTarget = address(0); // once
            (bool ok, bytes memory ret) = t.call(data);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
        }
    }
}
