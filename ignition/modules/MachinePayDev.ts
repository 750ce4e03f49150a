/**
 * A local dev chain: MachinePay (see MachinePay.ts) plus MockUSDC, a test stablecoin anyone can mint,
 * with `mint` token units (default 1,000,000 USDC) minted to the deployer so it can fund the escrow
 * at once. Never deploy this module to a chain where anything has value.
 */
import { buildModule } from "@nomicfoundation/hardhat-ignition/modules";
import MachinePayModule from "./MachinePay";

export default buildModule("MachinePayDev", (m) => {
  const { machinePay } = m.useModule(MachinePayModule);
  const usdc = m.contract("MockUSDC", []);
  m.call(usdc, "mint", [m.getAccount(0), m.getParameter("mint", 1_000_000n * 10n ** 6n)]);
  return { machinePay, usdc };
});
