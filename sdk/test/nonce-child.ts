// Child process for nonces.test.ts: reserves nonces forever, printing each one once it is
// reserved, until the parent kills it with SIGKILL (a crash at an arbitrary point).

import { FileNonceBackend } from "../src/node";
import { NonceManager } from "../src/nonces";

const manager = new NonceManager({ backend: new FileNonceBackend(process.argv[2]) });
(async () => {
  for (;;) {
    const n = await manager.reserve("0xDevice");
    process.stdout.write(`${n}\n`);
  }
})();
