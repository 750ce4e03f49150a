import { ethers } from "hardhat";
import { DAY, USDC } from "./helpers";

export const NOTICE_PERIOD = 2 * DAY;

/** MachinePay + MockUSDC; owner funded with 10,000 USDC in escrow. Signers: owner, relayer, payees, stranger. */
export async function deployFixture() {
  const [owner, relayer, payee, payee2, stranger] = await ethers.getSigners();
  const usdc = await ethers.deployContract("MockUSDC");
  const pay = await ethers.deployContract("MachinePay", [NOTICE_PERIOD]);
  await usdc.mint(owner.address, USDC(1_000_000));
  await usdc.connect(owner).approve(await pay.getAddress(), ethers.MaxUint256);
  await pay.connect(owner).deposit(await usdc.getAddress(), USDC(10_000));
  return {
    pay,
    usdc,
    usdcAddress: (await usdc.getAddress()) as `0x${string}`,
    owner,
    relayer,
    payee,
    payee2,
    stranger,
  };
}
