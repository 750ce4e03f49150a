/**
 * MachinePay on any chain: the escrow and settlement contract, with its withdrawal notice period
 * (seconds) as the module parameter `noticePeriod`. `machinepay deploy` runs this module (or
 * MachinePayDev on a local chain) through `hardhat ignition deploy`, with the create2 strategy
 * where CreateX exists, so the address depends only on the bytecode, the notice period and the salt.
 */
import { buildModule } from "@nomicfoundation/hardhat-ignition/modules";

/** Two days, as scripts/lib/deploy-local.ts and the tests use. */
export const DEFAULT_NOTICE_PERIOD = 2 * 86_400;

export default buildModule("MachinePay", (m) => {
  const noticePeriod = m.getParameter("noticePeriod", DEFAULT_NOTICE_PERIOD);
  const machinePay = m.contract("MachinePay", [noticePeriod]);
  return { machinePay };
});
