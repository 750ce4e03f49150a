// Browser-safe entry: no Node imports. File-backed nonces are in "@machinepay/sdk/node".
export * from "./abi";
export * from "./client";
export * from "./device";
export * from "./digest";
export * from "./encode";
export * from "./events";
export * from "./nonces";
export * from "./sign";
export * from "./tab";
export * from "./types";
