// Browser-safe entry: no Node imports. File-backed nonces are in "@machinepay/sdk/node".
export * from "./client";
export * from "./device";
export * from "./encode";
export * from "./nonces";
export * from "./sign";
export * from "./tab";
export * from "./types";
