/** GET /v1/tabs/:device/:payee/:token/:tabId */
import { tabParams, tabSchema } from "../schemas";
import type { ApiApp, RouteContext } from "../server";
import { errorAnswers, readChain } from "./common";

export function tabRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  app.get(
    "/v1/tabs/:device/:payee/:token/:tabId",
    {
      schema: {
        summary: "A tab: settled on chain, the newest accepted cumulative, and what is pending between them",
        tags: ["vouchers"],
        params: tabParams,
        response: { 200: tabSchema, ...errorAnswers(400, 503) },
      },
    },
    async (request) => {
      const { device, payee, token, tabId } = request.params;
      const [chain, row] = await Promise.all([
        readChain("the tab", () => deps.chain.tab(device, payee, token, tabId)),
        deps.store.getTab({ device, payee, token, tabId }),
      ]);
      const stored = row?.newestCumulative ?? 0n;
      const newest = stored > chain.settled ? stored : chain.settled;
      return {
        device,
        payee,
        token,
        tabId: tabId.toString(),
        settled: chain.settled.toString(),
        newest: newest.toString(),
        newestId: row && stored > chain.settled ? row.newestId : null,
        pending: (newest - chain.settled).toString(),
        closesAt: chain.closesAt === 0n ? null : Number(chain.closesAt),
      };
    },
  );
}
