// The repo's package.json points at src/*.ts (ts-node, no build step); only pnpm swaps in
// publishConfig's dist/ entries when packing. npm would pack a package that plain Node cannot load.
const agent = process.env.npm_config_user_agent ?? "";
if (!agent.startsWith("pnpm/")) {
  console.error("@machinepay/sdk: pack and publish it with pnpm (npx -y pnpm@10 pack), not npm or yarn");
  process.exit(1);
}
