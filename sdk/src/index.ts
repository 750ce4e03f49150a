export * from "./types";
export * from "./encode";
