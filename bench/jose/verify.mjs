// What an in-provider Node.js implementation pays per hint: jose's jwtVerify with a local JWKS
// (key picked by kid, imported once and cached by jose), RS256 only, issuer and audience checked,
// iat/exp with a tolerance so that Microsoft's pre-expired hint (exp = iat - 1) is accepted.
// It checks less than filters' HintValidator (no tid GUID/MSA/tenant rules, no per-key issuer
// template), so the comparison favours jose.
//
// usage: node verify.mjs HINT_FILE JWKS_FILE ISSUER AUDIENCE [ITERATIONS] [BATCHES]
// prints one JSON object: {"jose_version", "node_version", "us_per_verify_median" (CPU), "wall_us_median", "batches_us"}
import { readFileSync } from "node:fs";
import { createLocalJWKSet, jwtVerify, decodeJwt } from "jose";

const [hintFile, jwksFile, issuer, audience, iterArg, batchArg] = process.argv.slice(2);
if (!audience) {
  console.error("usage: node verify.mjs HINT_FILE JWKS_FILE ISSUER AUDIENCE [ITERATIONS] [BATCHES]");
  process.exit(2);
}
const iterations = Number(iterArg ?? 5000);
const batches = Number(batchArg ?? 7);
const token = readFileSync(hintFile, "utf8").trim();
const jwks = createLocalJWKSet(JSON.parse(readFileSync(jwksFile, "utf8")));
const { iat } = decodeJwt(token);
const options = {
  algorithms: ["RS256"],
  issuer,
  audience,
  requiredClaims: ["iat", "exp", "sub", "oid", "tid"],
  currentDate: new Date((iat + 1) * 1000),
  clockTolerance: 3600,
};

const once = async () => {
  const { payload } = await jwtVerify(token, jwks, options);
  if (payload.tid === undefined) throw new Error("no tid");
};

// Refuse to report a figure for a token jose does not accept.
await once();
for (let i = 0; i < Math.min(iterations, 2000); i++) await once(); // warm-up (JIT, key cache)

// CPU time of the process (user + system, all its threads: GC and libuv included), like the
// criterion bench's thread CPU time and `openssl speed`'s user-time divisor; wall time beside it.
const perBatch = [];
const wallPerBatch = [];
for (let b = 0; b < batches; b++) {
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await once();
  const ns = Number(process.hrtime.bigint() - start);
  const cpu = process.cpuUsage(cpu0);
  perBatch.push((cpu.user + cpu.system) / iterations);
  wallPerBatch.push(ns / iterations / 1000);
}
const sorted = [...perBatch].sort((a, b) => a - b);
const joseVersion = JSON.parse(
  readFileSync(new URL("./node_modules/jose/package.json", import.meta.url), "utf8"),
).version;
console.log(
  JSON.stringify({
    jose_version: joseVersion,
    node_version: process.version,
    iterations,
    clock: "process CPU time",
    us_per_verify_median: sorted[Math.floor(sorted.length / 2)],
    batches_us: perBatch,
    wall_us_median: [...wallPerBatch].sort((a, b) => a - b)[Math.floor(wallPerBatch.length / 2)],
  }),
);
