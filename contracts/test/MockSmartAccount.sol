// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title MockSmartAccount
/// @notice Test-only smart account (a 1-of-1 stand-in for a Safe): ERC-1271 accepts its signer's
///         ECDSA signatures; `execute` lets the signer act as the account. Never deploy for value.
contract MockSmartAccount is IERC1271 {
    error NotSigner(address caller);
    error CallFailed(bytes data);

    address public immutable signer;

    /// @param signer_ The EOA whose signatures this account accepts and who may execute through it.
    constructor(address signer_) {
        signer = signer_;
    }

    /// @notice ERC-1271: the magic value if `signature` is the signer's over `hash`.
    /// @param hash The digest signed. @param signature 65-byte ECDSA signature.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(hash, signature);
        return err == ECDSA.RecoverError.NoError && recovered == signer ? IERC1271.isValidSignature.selector : bytes4(0);
    }

    /// @notice Call `target` as this account (the signer only).
    /// @param target Contract to call. @param data Calldata.
    function execute(address target, bytes calldata data) external returns (bytes memory result) {
        if (msg.sender != signer) revert NotSigner(msg.sender);
        bool ok;
        (ok, result) = target.call(data);
        if (!ok) revert CallFailed(result);
    }
}
