// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title RejectEther
/// @notice Test receiver that refuses the native coin, to exercise failed withdrawals.
contract RejectEther {
    error NoEther();

    receive() external payable {
        revert NoEther();
    }
}
