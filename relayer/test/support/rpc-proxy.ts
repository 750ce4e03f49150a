/**
 * A fault-injecting JSON-RPC proxy between the relayer and a real node: a small HTTP server that
 * forwards every call, unless told to delay it, drop it, drop its answer after forwarding (the node
 * acted, the caller never heard), answer with an error of our choosing, or be down altogether.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type Fault =
  /** Close the connection without forwarding. */
  | { kind: "drop" }
  /** Forward, then close the connection without answering. */
  | { kind: "dropAnswer" }
  /** Answer with a JSON-RPC error without forwarding. */
  | { kind: "error"; message: string; code?: number }
  /** Forward after a delay. */
  | { kind: "delay"; ms: number };

export type Rule = { method: string | "*"; fault: Fault; times: number };

export class RpcProxy {
  private server: Server | undefined;
  private rules: Rule[] = [];
  /** While true every connection is destroyed at once (the node is "down"). */
  down = false;
  /** Every method the relayer called, in order, with whether a fault hit it. */
  readonly calls: {
    method: string;
    fault?: Fault["kind"];
    /** JSON-RPC calls in the request (a batch counts each). */
    size: number;
    /** Milliseconds the upstream node took to answer, and the answer's bytes (forwarded requests only). */
    ms?: number;
    bytes?: number;
  }[] = [];
  url = "";
  /** While true, every request's body is kept here (what was asked, for tests that look inside calls). */
  recordBodies = false;
  readonly bodies: string[] = [];

  constructor(private readonly upstream: string) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Apply `fault` to the next `times` calls of `method` ("*" for any). */
  inject(method: string, fault: Fault, times = 1): void {
    this.rules.push({ method, fault, times });
  }

  clear(): void {
    this.rules = [];
    this.down = false;
  }

  count(method: string, fault?: Fault["kind"]): number {
    return this.calls.filter((c) => c.method === method && (fault === undefined || c.fault === fault)).length;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private take(method: string): Fault | undefined {
    const rule = this.rules.find((r) => r.times > 0 && (r.method === "*" || r.method === method));
    if (!rule) return undefined;
    rule.times--;
    return rule.fault;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.down) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    let parsed: { id?: unknown; method?: string } | { id?: unknown; method?: string }[];
    try {
      parsed = JSON.parse(body);
    } catch {
      res.writeHead(400).end();
      return;
    }
    // One fault per HTTP request; a JSON-RPC batch takes the fault of its first call.
    const first = Array.isArray(parsed) ? parsed[0] : parsed;
    const method = first?.method ?? "?";
    const fault = this.take(method);
    const call: (typeof this.calls)[number] = {
      method,
      fault: fault?.kind,
      size: Array.isArray(parsed) ? parsed.length : 1,
    };
    this.calls.push(call);
    if (this.recordBodies) this.bodies.push(body);
    if (fault?.kind === "drop") {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === "error") {
      const error = { code: fault.code ?? -32000, message: fault.message };
      const answer = Array.isArray(parsed)
        ? parsed.map((p) => ({ jsonrpc: "2.0", id: p.id, error }))
        : { jsonrpc: "2.0", id: first?.id, error };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
      return;
    }
    if (fault?.kind === "delay") await new Promise((r) => setTimeout(r, fault.ms));
    let upstream: Response;
    const started = performance.now();
    let text: string;
    try {
      upstream = await fetch(this.upstream, { method: "POST", headers: { "content-type": "application/json" }, body });
      text = await upstream.text();
    } catch {
      req.socket.destroy();
      return;
    }
    call.ms = performance.now() - started;
    call.bytes = Buffer.byteLength(text);
    if (fault?.kind === "dropAnswer") {
      req.socket.destroy();
      return;
    }
    res.writeHead(upstream.status, { "content-type": "application/json" }).end(text);
  }
}
