import "@nomicfoundation/hardhat-toolbox";
import { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } from "hardhat/builtin-tasks/task-names";
import type { HardhatUserConfig } from "hardhat/config";
import { subtask } from "hardhat/config";

const SOLC_VERSION = "0.8.28";

// Hardhat downloads solc from the compiler site, which these machines cannot reach.
// Use the solc-js build from the `solc` npm package pinned at the same version instead.
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args: { solcVersion: string }, _hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) return runSuper(args);
  const solc = require("solc");
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: solc.version(),
  };
});

const config: HardhatUserConfig = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      // runs 2,000 keeps MachinePay within EIP-170's 24,576 bytes (runs 3,500: 25,177)
      // at 24,076. The hot loop is written so that inlining matters little: at runs 1e6 (28.9 KB,
      // not deployable) payments cost ~300 gas less (measured on an earlier revision).
      optimizer: { enabled: true, runs: 2000 },
      evmVersion: "cancun",
      // via-IR saves ~1,900 gas per settled payment; coverage instruments without it (and without the optimizer).
      viaIR: process.env.MACHINEPAY_COVERAGE !== "1",
    },
  },
  networks: {
    hardhat: {
      // Coverage compiles without the optimizer, which makes MachinePay larger than EIP-170 allows.
      allowUnlimitedContractSize: process.env.MACHINEPAY_COVERAGE === "1",
    },
    localhost: { url: process.env.MACHINEPAY_RPC_URL ?? "http://127.0.0.1:8545" },
    // `machinepay deploy` runs Ignition on this network, setting both variables for that child process
    // only: the key never appears in a flag, a file or a log.
    machinepay: {
      url: process.env.MACHINEPAY_DEPLOY_RPC_URL ?? "http://127.0.0.1:8545",
      accounts: process.env.MACHINEPAY_DEPLOY_KEY ? [process.env.MACHINEPAY_DEPLOY_KEY] : [],
    },
  },
  ignition: {
    // CreateX salt: zero sender bytes and 0x00 (no sender or chain protection), then "MachinePay1":
    // the same bytecode and constructor arguments land at the same address on every chain.
    strategyConfig: { create2: { salt: "0x0000000000000000000000000000000000000000004d616368696e6550617931" } },
  },
  gasReporter: { enabled: false, offline: true },
  mocha: { timeout: 120_000 },
  typechain: { outDir: "typechain-types", target: "ethers-v6" },
};

export default config;
