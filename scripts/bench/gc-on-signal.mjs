// Loaded into a system counted by `npm run instructions -- --gc` (node --expose-gc --import): SIGUSR2 runs a full GC, so
// that the count starts on a collected heap rather than with a collection the start-up still owes.
process.on("SIGUSR2", () => globalThis.gc?.())
