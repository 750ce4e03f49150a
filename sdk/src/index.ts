export * from "./encode";
export * from "./types";
