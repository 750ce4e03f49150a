// The relayer lands with its own issue. Its pipeline stages will live in src/api, src/ingest,
// src/store, src/batcher and src/chain; the wire format it serves is specified in sdk/README.md.
export const RELAYER_API_VERSION = "v1";
