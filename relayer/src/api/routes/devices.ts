/** GET /v1/devices/:address */
import { deviceHeadroom } from "../headroom";
import { deviceParams, headroomSchema } from "../schemas";
import type { ApiApp, RouteContext } from "../server";
import { errorAnswers, readChain } from "./common";

export function deviceRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  const margin = BigInt(deps.config.deadlineMarginSeconds);
  app.get(
    "/v1/devices/:address",
    {
      schema: {
        summary: "What a device can still spend: chain state minus the relayer's pending items",
        tags: ["devices"],
        params: deviceParams,
        response: { 200: headroomSchema, ...errorAnswers(400, 503) },
      },
    },
    async (request) => {
      const h = await readChain("the device's policy and balance", () =>
        deviceHeadroom(request.params.address, {
          chain: deps.chain,
          pending: deps.ledger,
          now: deps.clock.now(),
          margin,
        }),
      );
      return {
        device: h.device,
        status: h.status,
        policyId: h.policyId,
        owner: h.owner,
        token: h.token,
        perPayment: h.perPayment.toString(),
        period: h.period.toString(),
        lifetime: h.lifetime.toString(),
        balance: h.balance.toString(),
        spendable: h.spendable.toString(),
        pending: h.pending.toString(),
        periodEndsAt: h.periodEndsAt,
        nonceTop: h.nonceTop,
      };
    },
  );
}
