// Drives a real sync client against an example server and prints the client's own counts.
//
//   node drive.mjs <replicache|watermelondb|rxdb|pouchdb> <base URL>
//
// Every request goes through `tap`, which sees what the client sent and received, and can
// lose one response on purpose: the server applies the request, the client sees a network
// error and retries (a duplicate, from the server's point of view). The printed counts are
// the client's side of the wire and the client library's own figures:
//   pushes, pushed (rows/mutations/documents, a retry of a lost push counted once),
//   pushed_deleted, duplicates (requests that resent what a lost push had delivered),
//   conflicts, pulls, pulled, pulled_deleted; and for Replicache and PouchDB, whose normal
//   replication resends (pending mutations until a pull confirms them; revisions offered
//   back to `_revs_diff`), `resent`: what the server already had, never a duplicate.

const [, , client, base] = process.argv;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function makeTap(baseFetch) {
  const log = [];
  let lose = null;
  async function fetch(input, init = {}) {
    const request = input instanceof Request ? input : null;  // Replicache passes a Request
    const url = request ? request.url : (typeof input === 'string' ? input : String(input));
    const path = new URL(url).pathname;
    const method = (request ? request.method : (init.method ?? 'GET')).toUpperCase();
    const text = request ? await request.clone().text() : init.body;
    let body = null;
    if (typeof text === 'string' && text) {
      try { body = JSON.parse(text); } catch { body = null; }
    }
    const response = await baseFetch(input, init);
    const entry = {path, method, body, status: response.status, response: null, lost: false};
    log.push(entry);
    if (lose !== null && method === 'POST' && path.endsWith(lose)) {
      lose = null;
      entry.lost = true;
      await response.text();
      throw new TypeError('fetch failed: the response was lost');
    }
    const answer = await response.clone().text();
    try { entry.response = JSON.parse(answer); } catch { entry.response = null; }
    return response;
  }
  return {fetch, log, loseNext: (suffix) => { lose = suffix; }};
}

function requests(log, method, suffix) {
  return log.filter((e) => e.method === method && e.path.endsWith(suffix));
}

// --- Replicache ---------------------------------------------------------------------------

async function replicache() {
  const tap = makeTap(globalThis.fetch.bind(globalThis));
  globalThis.fetch = tap.fetch;  // before the import: Replicache may keep a reference
  const {Replicache, TEST_LICENSE_KEY} = await import('replicache');
  const mutators = {
    async createTodo(tx, {id, text}) { await tx.set(`todo/${id}`, {id, text, done: false}); },
    async updateTodo(tx, {id, ...fields}) {
      const todo = await tx.get(`todo/${id}`);
      if (todo !== undefined) await tx.set(`todo/${id}`, {...todo, ...fields});
    },
    async deleteTodo(tx, {id}) { await tx.del(`todo/${id}`); },
  };
  const open = (name, schemaVersion = '') => new Replicache({
    name, licenseKey: TEST_LICENSE_KEY, kvStore: 'mem', mutators, logLevel: 'error',
    pushURL: `${base}/replicache/push`, pullURL: `${base}/replicache/pull`,
    pullInterval: null, pushDelay: 0, schemaVersion,
  });
  async function settle(rep) {
    for (let i = 0; i < 200; i++) {
      await sleep(30);
      await rep.pull();
      await sleep(30);
      if ((await rep.experimentalPendingMutations()).length === 0) return;
    }
    throw new Error('replicache did not settle');
  }
  const a = open('a');
  const b = open('b');
  for (let i = 0; i < 5; i++) await a.mutate.createTodo({id: `t${i}`, text: `todo ${i}`});
  await settle(a);
  tap.loseNext('/replicache/push');  // the next push is applied, its response lost
  await a.mutate.createTodo({id: 't5', text: 'todo 5'});
  await a.mutate.createTodo({id: 't6', text: 'todo 6'});
  await settle(a);
  await settle(b);
  await b.mutate.deleteTodo({id: 't0'});
  await b.mutate.deleteTodo({id: 't1'});
  await settle(b);
  // A has not pulled since: it edits t0 and t1 (deleted by B meanwhile) and t2
  const edited = ['t0', 't1', 't2'];
  for (const id of edited) await a.mutate.updateTodo({id, done: true});
  await settle(a);
  const lostOnes = await a.query(async (tx) => {
    let n = 0;
    for (const id of edited) if ((await tx.get(`todo/${id}`)) === undefined) n++;
    return n;
  });
  // A client of a schema the server does not support: every push and pull is refused
  // (200 {error: 'VersionNotSupported'}) and nothing it sends is applied
  const old = open('old', '0');
  let updateNeeded = 0;
  old.onUpdateNeeded = () => { updateNeeded++; };
  for (let i = 0; i < 2; i++) { await old.mutate.createTodo({id: `old${i}`, text: 'x'}); await sleep(100); }
  await old.pull().catch(() => {});
  await sleep(100);
  await old.close();
  await a.close();
  await b.close();
  if (updateNeeded === 0) throw new Error('the old client was never told to update');

  // Replicache resends every pending mutation with each push until a pull confirms it, and
  // does not read a push's answer: a resend, the lost push's included, is no duplicate
  const pushes = requests(tap.log, 'POST', '/replicache/push');
  const seen = new Set();
  const kinds = {};
  let resent = 0;
  for (const push of pushes) {
    if (push.response?.error) continue;  // refused: nothing applied, nothing to count
    for (const m of push.body.mutations) {
      const key = `${m.clientID}/${m.id}`;
      if (seen.has(key)) { resent++; continue; }
      seen.add(key);
      kinds[m.name] = (kinds[m.name] ?? 0) + 1;
    }
  }
  const pulls = requests(tap.log, 'POST', '/replicache/pull');
  const refused = [...pushes, ...pulls].filter((r) => r.response?.error).length;
  const ops = pulls.flatMap((p) => p.response.patch ?? []).filter((op) => op.op !== 'clear');
  return {
    pushes: pushes.length,
    pushed: seen.size,
    pushed_deleted: kinds.deleteTodo ?? 0,
    duplicates: 0,
    resent,
    refused,
    conflicts: lostOnes,
    pulls: pulls.length,
    pulled: ops.length,
    pulled_deleted: ops.filter((op) => op.op === 'del').length,
    lost: tap.log.filter((e) => e.lost).length,
  };
}

// --- WatermelonDB -------------------------------------------------------------------------

async function watermelondb() {
  const {Database, Model, appSchema, tableSchema} = await import('@nozbe/watermelondb');
  const loki = await import('@nozbe/watermelondb/adapters/lokijs/index.js');
  const sync = await import('@nozbe/watermelondb/sync/index.js');
  const logger = await import('@nozbe/watermelondb/utils/common/logger/index.js');
  (logger.default?.default ?? logger.default).silence();
  const LokiJSAdapter = loki.default?.default ?? loki.default;
  const synchronize = sync.synchronize ?? sync.default.synchronize;
  const tap = makeTap(globalThis.fetch.bind(globalThis));

  class Task extends Model { static table = 'tasks'; }
  const schema = appSchema({version: 1, tables: [
    tableSchema({name: 'tasks', columns: [{name: 'name', type: 'string'}]}),
  ]});
  const open = (name) => new Database({
    adapter: new LokiJSAdapter({schema, useWebWorker: false, useIncrementalIndexedDB: false,
                                dbName: name, extraLokiOptions: {autosave: false}}),
    modelClasses: [Task],
  });
  let beforePush = null;  // runs between a device's pull and its push (a concurrent device)
  const rejectedSeen = [];
  // The client's own health on every push (the Sync-Client header), and each pull's
  // checkpoint with the client's clock before and after the request (staleness bounds).
  const checkpoints = [];
  let reportedPending = 0;
  async function syncDevice(db) {
    await synchronize({
      database: db,
      pullChanges: async ({lastPulledAt, schemaVersion}) => {
        const since = lastPulledAt ? `last_pulled_at=${lastPulledAt}&` : '';
        const before = Date.now();
        const r = await tap.fetch(`${base}/sync/pull?${since}schema_version=${schemaVersion}`);
        if (lastPulledAt) checkpoints.push({last_pulled_at: lastPulledAt, before, after: Date.now()});
        if (!r.ok) throw new Error(`pull failed: ${r.status}`);
        return await r.json();
      },
      pushChanges: async ({changes, lastPulledAt}) => {
        if (beforePush) { const run = beforePush; beforePush = null; await run(); }
        const pending = Object.values(changes).reduce(
          (n, kinds) => n + kinds.created.length + kinds.updated.length + kinds.deleted.length, 0);
        reportedPending += pending;
        const r = await tap.fetch(`${base}/sync/push?last_pulled_at=${lastPulledAt}`, {
          method: 'POST',
          headers: {'content-type': 'application/json',
                    'sync-client': `pending=${pending}, app="0.28.0"`},
          body: JSON.stringify(changes),
        });
        if (!r.ok) throw new Error(`push failed: ${r.status}`);
        const answer = await r.json();
        if (answer.experimentalRejectedIds) rejectedSeen.push(answer.experimentalRejectedIds);
        return answer;
      },
      sendCreatedAsUpdated: false,
    });
  }
  const tasks = (db) => db.get('tasks');
  const a = open('a');
  const b = open('b');
  await a.write(async () => {
    for (let i = 0; i < 5; i++) await tasks(a).create((t) => { t._raw.name = `task ${i}`; });
  });
  await syncDevice(a);
  await a.write(async () => {
    for (let i = 5; i < 7; i++) await tasks(a).create((t) => { t._raw.name = `task ${i}`; });
  });
  tap.loseNext('/sync/push');
  await syncDevice(a).catch(() => {});  // the push was applied; the client saw an error
  await syncDevice(a);  // resends those created records
  await syncDevice(b);
  const shared = (await tasks(a).query().fetch()).slice(0, 2).map((t) => t.id);
  // A edits two tasks; B edits the same two between A's pull and A's push
  await a.write(async () => {
    for (const id of shared) await (await tasks(a).find(id)).update((t) => { t._setRaw('name', `${t._raw.name} (A)`); });
  });
  beforePush = async () => {
    await b.write(async () => {
      for (const id of shared) await (await tasks(b).find(id)).update((t) => { t._setRaw('name', `${t._raw.name} (B)`); });
    });
    await syncDevice(b);
  };
  await syncDevice(a);
  const victim = (await tasks(a).query().fetch()).find((t) => !shared.includes(t.id));
  await a.write(async () => { await victim.markAsDeleted(); });
  await syncDevice(a);
  await syncDevice(b);

  const pushes = requests(tap.log, 'POST', '/sync/push');
  const seen = new Set();
  let duplicates = 0;
  let pushed = 0;
  let pushedDeleted = 0;
  let afterLoss = false;
  for (const push of pushes) {
    let resent = false;
    for (const [table, kinds] of Object.entries(push.body)) {
      for (const kind of ['created', 'updated', 'deleted']) {
        for (const record of kinds[kind] ?? []) {
          const key = `${table}/${kind}/${typeof record === 'string' ? record : record.id}`;
          if (afterLoss && kind === 'created' && seen.has(key)) { resent = true; continue; }
          seen.add(key);
          pushed++;
          if (kind === 'deleted') pushedDeleted++;
        }
      }
    }
    if (resent) duplicates++;
    afterLoss = push.lost;
  }
  const pulls = requests(tap.log, 'GET', '/sync/pull');
  let pulled = 0;
  let pulledDeleted = 0;
  for (const pull of pulls) {
    for (const kinds of Object.values(pull.response.changes)) {
      pulled += kinds.created.length + kinds.updated.length + kinds.deleted.length;
      pulledDeleted += kinds.deleted.length;
    }
  }
  const conflicts = rejectedSeen.reduce(
    (n, rejected) => n + Object.values(rejected).reduce((m, ids) => m + ids.length, 0), 0);
  return {
    pushes: pushes.length, pushed, pushed_deleted: pushedDeleted, duplicates, conflicts,
    pulls: pulls.length, pulled, pulled_deleted: pulledDeleted,
    lost: tap.log.filter((e) => e.lost).length,
    checkpoints, reported_pending: reportedPending,
  };
}

// --- RxDB ---------------------------------------------------------------------------------

async function rxdb() {
  const {createRxDatabase, deepEqual} = await import('rxdb');
  const {getRxStorageMemory} = await import('rxdb/plugins/storage-memory');
  const {replicateRxCollection} = await import('rxdb/plugins/replication');
  const tap = makeTap(globalThis.fetch.bind(globalThis));
  let resolved = 0;  // conflicts the client's conflict handler had to resolve
  const conflictHandler = {
    isEqual(a, b) {
      const strip = ({_meta, _rev, _attachments, updatedAt, ...rest}) => rest;
      return deepEqual(strip(a), strip(b));
    },
    async resolve(input) {  // the server wins; a master equal to the push is a late ack
      if (!conflictHandler.isEqual(input.realMasterState, input.newDocumentState)) resolved++;
      return input.realMasterState;
    },
  };
  const schema = {
    version: 0, primaryKey: 'id', type: 'object',
    properties: {id: {type: 'string', maxLength: 40}, title: {type: 'string'},
                 updatedAt: {type: 'number'}},
    required: ['id', 'title'],
  };
  async function open(name) {
    const db = await createRxDatabase({name, storage: getRxStorageMemory()});
    await db.addCollections({todos: {schema, conflictHandler}});
    return db;
  }
  async function replicate(db) {
    const state = replicateRxCollection({
      collection: db.todos, replicationIdentifier: `http-todos-${base}`, live: false,
      retryTime: 50, waitForLeadership: false, autoStart: true,
      push: {batchSize: 20, handler: async (rows) => {
        const r = await tap.fetch(`${base}/todos/push`, {
          method: 'POST', headers: {'content-type': 'application/json'},
          body: JSON.stringify(rows),
        });
        if (!r.ok) throw new Error(`push failed: ${r.status}`);
        return await r.json();
      }},
      pull: {batchSize: 20, handler: async (checkpoint, batchSize) => {
        const id = checkpoint ? checkpoint.id : '';
        const at = checkpoint ? checkpoint.updatedAt : 0;
        const r = await tap.fetch(`${base}/todos/pull?id=${id}&updatedAt=${at}&batchSize=${batchSize}`);
        if (!r.ok) throw new Error(`pull failed: ${r.status}`);
        return await r.json();
      }},
    });
    state.error$.subscribe(() => {});  // a lost response: RxDB retries after retryTime
    await state.awaitInitialReplication();
    await state.awaitInSync();
    await state.cancel();
  }
  const a = await open('a');
  const b = await open('b');
  for (let i = 0; i < 5; i++) await a.todos.insert({id: `t${i}`, title: `todo ${i}`});
  await replicate(a);
  await (await a.todos.findOne('t0').exec()).incrementalPatch({title: 'todo 0 edited'});
  tap.loseNext('/todos/push');
  await replicate(a);  // the push is applied, its response lost, then retried
  await replicate(b);
  for (const id of ['t1', 't2']) {
    await (await b.todos.findOne(id).exec()).incrementalPatch({title: `${id} by B`});
    await (await a.todos.findOne(id).exec()).incrementalPatch({title: `${id} by A`});
  }
  await replicate(b);
  await replicate(a);  // A's edits of t1 and t2 conflict with B's
  await (await a.todos.findOne('t4').exec()).remove();
  await replicate(a);
  await replicate(b);
  await a.close();
  await b.close();

  const pushes = requests(tap.log, 'POST', '/todos/push');
  let pushed = 0;
  let pushedDeleted = 0;
  let duplicates = 0;
  let lostRows = null;
  for (const push of pushes) {
    let resent = 0;
    for (const row of push.body) {
      const key = JSON.stringify(row.newDocumentState);
      if (lostRows !== null && lostRows.has(key)) { resent++; continue; }
      pushed++;
      if (row.newDocumentState._deleted) pushedDeleted++;
    }
    if (resent) duplicates++;
    lostRows = push.lost ? new Set(push.body.map((row) => JSON.stringify(row.newDocumentState))) : null;
  }
  const pulls = requests(tap.log, 'GET', '/todos/pull');
  const docs = pulls.flatMap((p) => p.response.documents);
  return {
    pushes: pushes.length, pushed, pushed_deleted: pushedDeleted, duplicates,
    conflicts: resolved, pulls: pulls.length, pulled: docs.length,
    pulled_deleted: docs.filter((d) => d._deleted).length,
    lost: tap.log.filter((e) => e.lost).length,
  };
}

// --- PouchDB ------------------------------------------------------------------------------

async function pouchdb() {
  const PouchDB = (await import('pouchdb-core')).default;
  const memory = (await import('pouchdb-adapter-memory')).default;
  const http = (await import('pouchdb-adapter-http')).default;
  const replication = (await import('pouchdb-replication')).default;
  PouchDB.plugin(memory).plugin(http).plugin(replication);
  const tap = makeTap(globalThis.fetch.bind(globalThis));
  const remote = new PouchDB(`${base}/todos`, {fetch: tap.fetch});
  const a = new PouchDB('a', {adapter: 'memory'});
  const b = new PouchDB('b', {adapter: 'memory'});
  let written = 0;
  let read = 0;
  const push = async (db) => { written += (await db.replicate.to(remote)).docs_written; };
  const pull = async (db) => { read += (await db.replicate.from(remote)).docs_read; };
  for (let i = 0; i < 5; i++) await a.put({_id: `todo:${i}`, type: 'todo', title: `todo ${i}`});
  await push(a);
  await pull(b);
  for (const [db, who] of [[a, 'A'], [b, 'B']]) {
    for (const id of ['todo:0', 'todo:1']) {
      const doc = await db.get(id);
      await db.put({...doc, title: `${doc.title} by ${who}`});
    }
  }
  await push(a);
  await push(b);  // todo:0 and todo:1 now have two leaf revisions on the server
  await a.remove(await a.get('todo:2'));
  tap.loseNext('/_bulk_docs');
  await push(a).catch(() => {});  // stored by the server; the client saw an error
  await push(a);  // offers the revisions again: the server already has them
  await pull(a);
  await pull(b);
  let conflicts = 0;
  for (const row of (await a.allDocs({include_docs: true, conflicts: true})).rows) {
    conflicts += (row.doc._conflicts ?? []).length;
  }
  const bulkDocs = requests(tap.log, 'POST', '/_bulk_docs');
  const sent = bulkDocs.flatMap((r) => r.body.docs);
  const lostDocs = bulkDocs.filter((r) => r.lost).reduce((n, r) => n + r.body.docs.length, 0);
  if (written + lostDocs !== sent.length) {
    throw new Error(`docs_written ${written} + lost ${lostDocs} != sent ${sent.length}`);
  }
  // Revisions offered to _revs_diff that the server has (the lost push's, those a device
  // just pulled) are never sent again: PouchDB pushes no duplicate, it resends offers
  const revsDiffs = requests(tap.log, 'POST', '/_revs_diff');
  let resent = 0;
  for (const r of revsDiffs) {
    const offered = Object.values(r.body).reduce((n, revs) => n + revs.length, 0);
    resent += offered - Object.values(r.response).reduce((n, d) => n + d.missing.length, 0);
  }
  const changes = requests(tap.log, 'GET', '/_changes');
  const bulkGets = requests(tap.log, 'POST', '/_bulk_get');
  const got = bulkGets.flatMap((r) => r.response.results.flatMap((x) => x.docs))
    .filter((d) => d.ok).map((d) => d.ok);
  if (got.length !== read) throw new Error(`docs_read ${read} != documents fetched ${got.length}`);
  return {
    pushes: bulkDocs.length, pushed: sent.length,
    pushed_deleted: sent.filter((d) => d._deleted).length,
    duplicates: 0, resent, conflicts, pulls: changes.length + bulkGets.length, pulled: read,
    pulled_deleted: got.filter((d) => d._deleted).length,
    revs_diffs: revsDiffs.length, lost: tap.log.filter((e) => e.lost).length,
  };
}

const clients = {replicache, watermelondb, rxdb, pouchdb};
if (!clients[client] || !base) {
  console.error('usage: node drive.mjs <replicache|watermelondb|rxdb|pouchdb> <base URL>');
  process.exit(2);
}
const counts = await clients[client]();
console.log(JSON.stringify(counts));
process.exit(0);
