// A nurse's phone, as a real WatermelonDB app: it syncs with a running Vigil server through
// WatermelonDB's own synchronize(), on a LokiJS database held in memory (Node has no
// IndexedDB, so the adapter falls back to Loki's memory adapter).
//
// tests/backend/sync/test_sync_client.py seeds the server, starts it and runs this file with the
// settings below in the environment; it reads the JSON summary printed on stdout and checks
// the server's database. The phone pulls its schedule, records a whole visit offline (check-in,
// pre-dose, dose, observations, discharge, the witnessed waste of the remainder, check-out,
// each row signed with the phone's Ed25519 key), loses the answer to its first push and pushes
// again, then meets a visit that an admin rescheduled between its pull and its push, and last
// records a witnessed waste without the holders the server sets, which comes back as updated.
// It runs in development mode and keeps everything WatermelonDB logs as a warning or an error
// (such as a record the server sends as created that the phone already holds).

import { createHash, createPrivateKey, randomUUID, sign } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

import canonicalize from 'canonicalize'

// Development mode, as an app under development runs, with WatermelonDB's checks on.
process.env.NODE_ENV ||= 'development'
// WatermelonDB ships CommonJS whose folders ESM cannot import by name.
const require = createRequire(import.meta.url)
const { Database, Model, appSchema, tableSchema } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { synchronize, hasUnsyncedChanges } = require('@nozbe/watermelondb/sync')
const { setGenerator } = require('@nozbe/watermelondb/utils/common/randomId')
const logger = require('@nozbe/watermelondb/utils/common/logger').default

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}
const SERVER = env('VIGIL_URL')
const ORG = env('VIGIL_ORG')
const PASSWORD = env('VIGIL_PASSWORD')
const DEVICE_ID = env('VIGIL_DEVICE_ID')
const DEVICE_KEY = createPrivateKey(env('VIGIL_DEVICE_KEY_PEM'))
const WITNESS_ID = env('VIGIL_WITNESS_ID')
const WITNESS_DEVICE_ID = env('VIGIL_WITNESS_DEVICE_ID')
const WITNESS_KEY = createPrivateKey(env('VIGIL_WITNESS_KEY_PEM'))
const WASTE_UG = Number(env('VIGIL_WASTE_UG'))
const DOSE_UG = Number(env('VIGIL_DOSE_UG'))
const MINUTE = 60_000

// stdout carries only the summary; WatermelonDB's progress notes go to stderr.
logger.log = logger.debug = (...messages) => console.error('[watermelondb]', ...messages)
// Its warnings and errors (sync's complaints about the server among them) go there too, and
// into the summary, where the test reads them.
const logged = []
const keep = (level) => (...messages) => {
  const text = messages.map((m) => (m instanceof Error ? m.message : String(m))).join(' ')
  logged.push({ level, message: text })
  console.error(`[watermelondb ${level}]`, ...messages)
}
logger.warn = keep('warn')
logger.error = keep('error')
// Vigil's ids are UUIDs, so the phone makes its records' ids the same way.
setGenerator(() => randomUUID())

class HttpError extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path} answered ${status}: ${JSON.stringify(body)}`)
    this.status = status
    this.code = body?.error?.code
    this.details = body?.error?.details
  }
}

async function call(method, path, { token, body, headers = {} } = {}) {
  const response = await fetch(`${SERVER}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  })
  const answer = await response.json()
  if (!response.ok) throw new HttpError(method, path, response.status, answer)
  return { answer, status: response.status, headers: response.headers }
}

async function login(username, deviceId) {
  const body = { org: ORG, username, password: PASSWORD }
  if (deviceId) body.device_id = deviceId
  return (await call('POST', '/api/v1/auth/login', { body })).answer.access_token
}

function buildDatabase(description) {
  const schema = appSchema({
    version: description.version,
    tables: description.tables.map((table) => tableSchema(table)),
  })
  const modelClasses = description.tables.map(({ name }) => class extends Model {
    static table = name
  })
  const adapter = new LokiJSAdapter({
    schema,
    useWebWorker: false,
    // The current behaviour, so development mode does not warn; without IndexedDB in Node,
    // Loki keeps the database in memory either way.
    useIncrementalIndexedDB: true,
    // Autosave would keep a timer alive after the run; memory has nothing to save to.
    extraLokiOptions: { autosave: false },
  })
  return new Database({ adapter, modelClasses })
}

// The phone's side of the protocol: pull and push over HTTP, and the push's Idempotency-Key.
class Phone {
  constructor(database, schemaVersion, token) {
    this.database = database
    this.schemaVersion = schemaVersion
    this.token = token
    this.pushes = []
    this.pulls = []
  }

  async sync({ dropAnswer = false, beforePush = null } = {}) {
    await synchronize({
      database: this.database,
      pullChanges: (request) => this.pull(request),
      pushChanges: async ({ changes, lastPulledAt }) => {
        if (beforePush) await beforePush()
        await this.push(changes, lastPulledAt, dropAnswer)
      },
    })
  }

  async pull({ lastPulledAt, schemaVersion, migration }) {
    const query = new URLSearchParams({
      last_pulled_at: String(lastPulledAt ?? 0),
      schema_version: String(schemaVersion),
    })
    if (migration) query.set('migration', JSON.stringify(migration))
    const { answer } = await call('GET', `/api/v1/sync?${query}`, {
      token: this.token,
      headers: { 'X-Device-Time': new Date().toISOString() },
    })
    // Without a page size the server answers in one page; a second page would need a merge.
    if (answer.has_more) throw new Error('the server paged a pull the phone did not page')
    this.pulls.push({
      last_pulled_at: lastPulledAt ?? 0,
      created: idsOf(answer.changes, 'created'),
      updated: idsOf(answer.changes, 'updated'),
    })
    return { changes: answer.changes, timestamp: answer.timestamp }
  }

  async push(changes, lastPulledAt, dropAnswer) {
    const body = canonicalize({ changes: ownChanges(changes) })
    const key = await this.idempotencyKey(body)
    const attempt = { key, last_pulled_at: lastPulledAt }
    this.pushes.push(attempt)
    const query = new URLSearchParams({
      last_pulled_at: String(lastPulledAt),
      schema_version: String(this.schemaVersion),
    })
    let response
    try {
      response = await call('POST', `/api/v1/sync?${query}`, {
        token: this.token,
        body,
        headers: { 'Idempotency-Key': key, 'X-Device-Time': new Date().toISOString() },
      })
    } catch (error) {
      attempt.status = error.status
      attempt.code = error.code
      // An answer, even a refusal, settles the key: changed records get a new one.
      if (error.status) await this.database.localStorage.remove('pending_push')
      throw error
    }
    attempt.status = response.status
    attempt.replayed = response.headers.get('Idempotent-Replayed') === 'true'
    attempt.answer = response.answer
    if (dropAnswer) {
      // The server applied the push; the phone never hears so, and keeps the key.
      attempt.dropped = true
      throw new Error('connection dropped before the answer arrived')
    }
    await this.database.localStorage.remove('pending_push')
  }

  // The same pending changes keep their key until an answer arrives, so a retry after a lost
  // answer is recognised by the server; any other body gets a fresh key.
  async idempotencyKey(body) {
    const digest = createHash('sha256').update(body).digest('hex')
    const pending = await this.database.localStorage.get('pending_push')
    if (pending?.digest === digest) return pending.key
    const key = randomUUID()
    await this.database.localStorage.set('pending_push', { digest, key })
    return key
  }
}

// The ids a pull brought, by table, for one action.
function idsOf(changes, action) {
  return Object.fromEntries(Object.entries(changes)
    .map(([table, actions]) => [table, actions[action].map((record) => record.id)])
    .filter(([, ids]) => ids.length))
}

// The push body is a function of the phone's own changes, so a retry repeats it byte for byte.
// WatermelonDB lists records in no set order: they go in the order they happened (a check-out
// after its check-in), then by id. An updated record carries only the columns the phone
// changed: the rest is the server's, and a pull before the retry may have refreshed it.
const happened = (a, b) =>
  (a.occurred_at ?? '').localeCompare(b.occurred_at ?? '') || a.id.localeCompare(b.id)

function ownColumns(raw) {
  const own = ['id', '_status', '_changed', ...raw._changed.split(',')]
  return Object.fromEntries(Object.entries(raw).filter(([column]) => own.includes(column)))
}

function ownChanges(changes) {
  const tables = Object.entries(changes).map(([table, { created, updated, deleted }]) => [table, {
    created: [...created].sort(happened),
    updated: updated.map(ownColumns).sort(happened),
    deleted: [...deleted].sort(),
  }])
  return Object.fromEntries(tables)
}

// Sign the row exactly as WatermelonDB will push it: its raw record, defaults included.
function signRow(record) {
  const { _status, _changed, signature, ...signed } = record._raw
  const bytes = Buffer.from(canonicalize(signed), 'utf8')
  record._setRaw('signature', sign(null, bytes, DEVICE_KEY).toString('base64'))
}

// Every record the phone made, by table: none of them may come back to it as created.
const made = {}

async function append(database, table, columns, signer = signRow) {
  const record = await database.get(table).create((draft) => {
    for (const [column, value] of Object.entries(columns)) draft._setRaw(column, value)
    signer(draft)
  })
  made[table] = [...(made[table] ?? []), record.id]
  return record
}

// A custody entry is signed over its ledger movement, by the phone and by each witness's
// phone: the columns the server reads, with the holders it derives and its notation of time.
function movement(raw, nurseId) {
  return {
    id: raw.id, kind: raw.kind, product_id: raw.product_id, lot: raw.lot, expiry: raw.expiry,
    quantity_ug: raw.quantity_ug, from_holder: `bag:${nurseId}`, to_holder: 'waste',
    visit_id: raw.visit_id, details: JSON.parse(raw.details),
    occurred_at: raw.occurred_at.replace(/Z$/, '000+00:00'),
  }
}

function signWaste(nurseId) {
  return (record) => {
    const bytes = Buffer.from(canonicalize(movement(record._raw, nurseId)), 'utf8')
    const witness = {
      user_id: WITNESS_ID,
      device_id: WITNESS_DEVICE_ID,
      signature: sign(null, bytes, WITNESS_KEY).toString('base64'),
    }
    record._setRaw('witnesses', JSON.stringify([witness]))
    record._setRaw('signature', sign(null, bytes, DEVICE_KEY).toString('base64'))
  }
}

// The remainder of the bag's lot wasted before a witness, who confirms it on her own phone.
// `holders` fills in what the server would set; without it the server's version comes back.
async function waste(database, bag, visitId, occurredAt, { holders }) {
  const nurseId = bag._raw.to_holder.replace(/^bag:/, '')
  return append(database, 'custody_entries', {
    kind: 'waste', product_id: bag._raw.product_id, lot: bag._raw.lot,
    expiry: bag._raw.expiry, quantity_ug: WASTE_UG, occurred_at: occurredAt,
    visit_id: visitId, details: '{}',
    ...(holders ? { from_holder: `bag:${nurseId}`, to_holder: 'waste' } : {}),
  }, signWaste(nurseId))
}

async function setStatus(database, visitId, status) {
  const visit = await database.get('visits').find(visitId)
  await visit.update((record) => record._setRaw('status', status))
}

const at = (start, minutes) => new Date(start.getTime() + minutes * MINUTE).toISOString()
const vitals = { systolic: 128, diastolic: 82, heart_rate: 74, spo2: 98, respiratory_rate: 14 }
// The CADSS short form (items 1, 2, 6, 7, 15, 22), scored 0 to 4: no dissociation.
const CADSS_SHORT = JSON.stringify({ 1: 0, 2: 0, 6: 0, 7: 0, 15: 0, 22: 0 })

// At the home: a 5 m GPS fix beside the address the phone pulled.
function position(patient, kind, visitId, occurredAt) {
  return {
    visit_id: visitId,
    kind,
    latitude: patient._raw.home_latitude + 0.00003,
    longitude: patient._raw.home_longitude + 0.00003,
    accuracy_m: 8,
    occurred_at: occurredAt,
  }
}

// The whole visit, offline: ids, times and values as the nurse's app records them.
async function recordVisit(database, visit, patient, bag) {
  const start = new Date(new Date(visit._raw.scheduled_start).getTime() - 2 * MINUTE)
  const visitId = visit.id
  const dosedAt = new Date(start.getTime() + 10 * MINUTE)
  await database.write(async () => {
    await append(database, 'evv_events', position(patient, 'check_in', visitId, at(start, 0)))
    await setStatus(database, visitId, 'checked_in')
    await append(database, 'pre_doses', {
      visit_id: visitId, occurred_at: at(start, 5), ...vitals, moaas: 5,
      cadss_items: CADSS_SHORT, co_medications: '[]', decision: 'go',
    })
    await append(database, 'doses', {
      visit_id: visitId, occurred_at: at(dosedAt, 0), product_id: bag._raw.product_id,
      lot: bag._raw.lot, expiry: bag._raw.expiry, quantity_ug: DOSE_UG, route: 'IV',
      infusion_started_at: at(dosedAt, 0), infusion_ended_at: at(dosedAt, 40),
    })
    for (let minutes = 15; minutes <= 120; minutes += 15) {
      await append(database, 'observations', {
        visit_id: visitId, occurred_at: at(dosedAt, minutes), ...vitals,
        systolic: minutes <= 45 ? 136 : 126, moaas: minutes <= 30 ? 4 : 5,
        cadss_items: CADSS_SHORT,
      })
    }
    await append(database, 'discharges', {
      visit_id: visitId, occurred_at: at(dosedAt, 125), ...vitals, moaas: 5,
      cadss_items: CADSS_SHORT, state: 'baseline', adverse_event_category: 'none',
    })
    await waste(database, bag, visitId, at(dosedAt, 127), { holders: true })
    await append(database, 'evv_events',
      position(patient, 'check_out', visitId, at(dosedAt, 130)))
    await setStatus(database, visitId, 'completed')
  })
}

async function rows(database, table) {
  return (await database.get(table).query().fetch()).map((record) => ({ ...record._raw }))
}

async function snapshot(database) {
  const tables = ['products', 'patients', 'plan_versions', 'visits', 'evv_events', 'pre_doses',
    'doses', 'observations', 'discharges', 'custody_entries']
  const out = {}
  for (const table of tables) {
    out[table] = (await rows(database, table)).map(({ id, _status, status, kind, visit_id }) => ({
      id, _status, ...(status === undefined ? {} : { status }),
      ...(kind === undefined ? {} : { kind }), ...(visit_id === undefined ? {} : { visit_id }),
    }))
  }
  out.unsynced = await hasUnsyncedChanges({ database })
  return out
}

async function expectFailure(promise) {
  try {
    await promise
  } catch (error) {
    return {
      message: error.message,
      status: error.status ?? null,
      code: error.code ?? null,
      details: error.details ?? null,
    }
  }
  throw new Error('synchronize() succeeded where it had to fail')
}

async function main() {
  const description = JSON.parse(readFileSync(env('VIGIL_SCHEMA_FILE'), 'utf8'))
  const database = buildDatabase(description)
  const nurseToken = await login(env('VIGIL_NURSE'), DEVICE_ID)
  const phone = new Phone(database, description.version, nurseToken)
  const adminToken = await login(env('VIGIL_ADMIN'))
  const summary = {}

  await phone.sync()
  summary.first_pull = await snapshot(database)
  const visits = (await database.get('visits').query().fetch())
    .sort((a, b) => a._raw.scheduled_start.localeCompare(b._raw.scheduled_start))
  const [first, second] = visits
  const patient = await database.get('patients').find(first._raw.patient_id)
  const bag = (await database.get('custody_entries').query().fetch())
    .find((entry) => entry._raw.kind === 'dispense')

  await recordVisit(database, first, patient, bag)
  summary.dropped = await expectFailure(phone.sync({ dropAnswer: true }))
  summary.unsynced_after_drop = await hasUnsyncedChanges({ database })
  await phone.sync()
  summary.after_retry = await snapshot(database)

  // The phone checks in to its second visit; an admin moves that visit on the server after
  // the phone's pull and before its push.
  await database.write(async () => {
    const now = new Date().toISOString()
    await append(database, 'evv_events', position(patient, 'check_in', second.id, now))
    await setStatus(database, second.id, 'checked_in')
  })
  let moved = null
  const reschedule = async () => {
    const start = new Date(new Date(second._raw.scheduled_start).getTime() + 24 * 60 * MINUTE)
    moved = (await call('POST', `/api/v1/visits/${second.id}/reschedule`, {
      token: adminToken, body: { scheduled_start: start.toISOString() },
    })).answer
  }
  summary.conflict = await expectFailure(phone.sync({ beforePush: reschedule }))
  summary.rescheduled_as = moved.id
  // The retry pulls the moved visit and pushes again; the next sync only pulls.
  await phone.sync()
  await phone.sync()
  summary.final = await snapshot(database)

  // A waste recorded without the holders the server sets: the next pull sends it back, and
  // the phone's copy must keep its witness's signature.
  let bare = null
  await database.write(async () => {
    bare = await waste(database, bag, first.id, new Date().toISOString(), { holders: false })
  })
  await phone.sync()
  await phone.sync()
  summary.custody = {
    bare: bare.id,
    rows: (await rows(database, 'custody_entries')).filter((row) => row.kind === 'waste'),
  }
  summary.pushes = phone.pushes
  summary.pulls = phone.pulls
  summary.made = made
  summary.logged = logged
  summary.node_env = process.env.NODE_ENV
  summary.visits = { first: first.id, second: second.id }
  process.stdout.write(`${JSON.stringify(summary)}\n`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
