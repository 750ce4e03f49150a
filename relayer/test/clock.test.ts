import { expect } from "chai";
import { ChainClock } from "../src/chain/clock";

describe("relayer chain clock", () => {
  it("runs on from the newest block while no new block comes, however often that block is seen again", () => {
    let wall = 1_000_000;
    const clock = new ChainClock(() => wall);
    clock.observe(5_000n);
    expect(clock.now()).to.equal(5_000n);
    for (let i = 0; i < 10; i++) {
      wall += 30_000;
      clock.observe(5_000n); // the batcher polls `latest` and sees the same block
    }
    expect(clock.now()).to.equal(5_300n);
    clock.observe(4_000n); // an older block (a lagging node behind a load balancer) changes nothing
    expect(clock.now()).to.equal(5_300n);
    clock.observe(5_400n);
    expect(clock.now()).to.equal(5_400n);
  });

  it("uses the wall clock until a block was seen", () => {
    const clock = new ChainClock(() => 7_000_500);
    expect(clock.now()).to.equal(7_000n);
  });
});
