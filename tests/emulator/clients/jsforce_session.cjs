// One session of jsforce, unchanged, against the emulator: what test_third_party_clients.py checks.
// Input: a JSON object in argv[2] (instance URL, an expired access token, a refresh token, the connected app).
// Output: one JSON object on stdout, each step's outcome under its name; a step that throws records its error.
const jsforce = require("jsforce");

async function step(out, name, run) {
  try {
    out[name] = await run();
  } catch (err) {
    out[name] = { error: err.errorCode || err.name, message: err.message };
  }
}

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  // jsforce refreshes the stale token by itself on the first 401, posting its form as a stream (chunked).
  const conn = new jsforce.Connection({
    oauth2: { clientId: cfg.clientId, clientSecret: cfg.clientSecret, loginUrl: cfg.instanceUrl },
    instanceUrl: cfg.instanceUrl,
    accessToken: cfg.staleToken,
    refreshToken: cfg.refreshToken,
    version: "59.0",
  });
  const out = {};
  await step(out, "refreshed", async () => {
    const res = await conn.query("SELECT Id FROM Lead LIMIT 1");
    return res.totalSize === 1 && conn.accessToken !== cfg.staleToken;
  });
  await step(out, "longText", async () => {
    const res = await conn.query("SELECT Id, Notes__c, Profile__c FROM Lead", { autoFetch: true, maxFetch: 100000 });
    return { totalSize: res.totalSize, fetched: res.records.length, ids: new Set(res.records.map((r) => r.Id)).size };
  });
  await step(out, "queryAll", async () => {
    const res = await conn.query("SELECT Id, IsDeleted, Notes__c, Profile__c FROM Lead",
      { autoFetch: true, maxFetch: 100000, scanAll: true });
    return { fetched: res.records.length, deleted: res.records.filter((r) => r.IsDeleted).length };
  });
  await step(out, "count", async () => {
    const res = await conn.query("SELECT COUNT() FROM Lead WHERE IsDeleted = false");
    return { totalSize: res.totalSize, records: res.records.length };
  });
  await step(out, "releasedCursor", async () => {
    const soql = "SELECT Id, Notes__c, Profile__c FROM Lead";
    const first = await conn.query(soql);
    await conn.query(soql);  // past the limit of one cursor, the first is released
    return conn.queryMore(first.nextRecordsUrl);
  });
  await step(out, "identity", async () => {
    const id = await conn.identity();
    return { userId: id.user_id, organizationId: id.organization_id, username: id.username };
  });
  await step(out, "limits", async () => {
    const limits = await conn.limits();
    return { keys: Object.keys(limits).length, api: limits.DailyApiRequests };
  });
  await step(out, "retrieve", async () => {
    const ids = (await conn.query("SELECT Id FROM Account LIMIT 2")).records.map((r) => r.Id);
    const got = await conn.sobject("Account").retrieve([ids[0], "001000000000000AAA", ids[1]],
      { fields: ["Id", "Name"] });
    return got.map((r) => (r ? r.Id : null));
  });
  await step(out, "upsert", async () => {
    const lead = (ext, title) => ({ External_Id__c: ext, LastName: "Js", Company: "C", Title: title });
    const res = await conn.sobject("Lead").upsert([lead("JS-1", "a"), lead("JS-2", "b"), lead("JS-1", "c")],
      "External_Id__c", { allOrNone: false });
    return res.map((r) => (r.success ? "ok" : r.errors.map((e) => e.errorCode || e.statusCode).join(",")));
  });
  out.limitInfo = conn.limitInfo;
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
