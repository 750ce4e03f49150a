/** The demo's scenarios, in the order the demo runs them. */
import type { Scenario } from "../context";
import { car } from "./car";
import { energy } from "./energy";
import { fridge } from "./fridge";
import { insurance } from "./insurance";
import { onboarding } from "./onboarding";
import { rental } from "./rental";
import { sensor } from "./sensor";
import { stolen } from "./stolen";

export const SCENARIOS: Scenario<never>[] = [
  fridge,
  car,
  energy,
  sensor,
  rental,
  insurance,
  stolen,
  onboarding,
] as unknown as Scenario<never>[];

export { car, energy, fridge, insurance, onboarding, rental, sensor, stolen };
