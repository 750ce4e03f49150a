/**
 * `machinepay` command line: wires the command groups together. Owner commands (owner.ts) sign
 * transactions with the owner's key; device commands (device.ts) sign payments and vouchers and
 * talk to the relayer; operator commands (operator.ts) read and drive the relayer; deploy.ts runs
 * the Ignition module; relayer.ts starts the service. Keys come from files or keystores, never from
 * flags (keys.ts). Usage and configuration errors exit 2, runtime failures 1 (output.ts).
 */
import { Command } from "commander";
import { deployCommand } from "./deploy";
import { deviceCommands } from "./device";
import { operatorCommands } from "./operator";
import { example } from "./options";
import { ownerCommands } from "./owner";
import { relayerCommands } from "./relayer";

export function program(): Command {
  const cli = new Command("machinepay")
    .description("MachinePay: machines pay machines.")
    .showHelpAfterError("(add --help for usage)")
    // Commander's own errors (unknown option, missing argument) are usage errors: exit 2, not 1.
    .exitOverride((e) => process.exit(e.exitCode === 0 ? 0 : 2));
  cli.addHelpText(
    "after",
    "\nExample:\n  machinepay deploy --rpc http://127.0.0.1:8545 --dev && machinepay fund --rpc http://127.0.0.1:8545 --dev --amount 1000000000\n",
  );
  deployCommand(cli);
  relayerCommands(cli);
  const device = cli.command("device").description("device keys: new, enroll, register, pause, resume, revoke, show");
  example(
    device,
    "machinepay device new --out meter-1.key && machinepay device register --dev --policy 1 --device-key meter-1.key",
  );
  ownerCommands(cli, device);
  deviceCommands(cli, device);
  operatorCommands(cli);
  return cli;
}

if (require.main === module) {
  program()
    .parseAsync(process.argv)
    .catch((e) => {
      process.stderr.write(`machinepay: ${(e as Error).stack ?? e}\n`);
      process.exitCode = 1;
    });
}
