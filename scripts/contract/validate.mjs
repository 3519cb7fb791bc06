// Validates the generated contract with validators nobody on the team wrote:
// ajv (JSON Schema draft 2020-12, with ajv-formats) for schemas/*.schema.json
// and the golden examples, @asyncapi/parser for schemas/asyncapi.yaml, and
// @seriousme/openapi-schema-validator (OpenAPI 3.1) for schemas/openapi.json.
// Prints one line per failure and ends with "N passed, N failed".
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import Ajv07 from 'ajv';
import addFormats from 'ajv-formats';
import { Parser } from '@asyncapi/parser';
import { Validator as OpenApiValidator } from '@seriousme/openapi-schema-validator';

const schemas = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'schemas');
const read = (...parts) => readFileSync(join(schemas, ...parts), 'utf8');
const list = (...parts) => readdirSync(join(schemas, ...parts)).filter((f) => f.endsWith('.json')).sort();

let passed = 0;
let failed = 0;
function check(ok, what, detail = '') {
  if (ok) {
    passed += 1;
  } else {
    failed += 1;
    console.log(`FAIL ${what}${detail ? `: ${detail}` : ''}`);
  }
}

// schemars writes the Rust integer width as a format; check it for real.
function addIntegerFormats(ajv) {
  ajv.addFormat('uint32', { type: 'number', validate: (n) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff });
  ajv.addFormat('uint64', { type: 'number', validate: (n) => Number.isInteger(n) && n >= 0 });
}

// --- JSON Schemas ------------------------------------------------------------
const ajv = new Ajv2020({ strict: true, allErrors: false });
addFormats(ajv);
addIntegerFormats(ajv);

const perMessage = { client: new Map(), server: new Map() };
for (const direction of ['client', 'server']) {
  for (const file of list(direction)) {
    const schema = JSON.parse(read(direction, file));
    check(ajv.validateSchema(schema), `${direction}/${file} is a valid draft 2020-12 schema`, ajv.errorsText());
    perMessage[direction].set(file.replace(/\.schema\.json$/, ''), ajv.compile(schema));
  }
}
const union = {
  client: ajv.compile(JSON.parse(read('client-message.schema.json'))),
  server: ajv.compile(JSON.parse(read('server-message.schema.json'))),
};

const gapsDoc = JSON.parse(read('examples', 'schema-gaps.json'));
const gaps = new Set(Object.keys(gapsDoc).filter((k) => !k.startsWith('$')));

const seenTypes = { client: new Set(), server: new Set() };
for (const file of list('examples', 'valid')) {
  const [, direction, type] = file.match(/^(client|server)\.(.+?)(?:--.+)?\.json$/) ?? [];
  if (!direction) {
    check(false, `examples/valid/${file}`, 'name must be <client|server>.<type>[--<variant>].json');
    continue;
  }
  const frame = JSON.parse(read('examples', 'valid', file));
  check(frame.type === type, `examples/valid/${file} has type ${type}`, `it has ${frame.type}`);
  check(union[direction](frame), `examples/valid/${file} matches ${direction}-message.schema.json`, ajv.errorsText(union[direction].errors));
  const single = perMessage[direction].get(type);
  check(Boolean(single), `examples/valid/${file} has a schema ${direction}/${type}.schema.json`);
  if (single) check(single(frame), `examples/valid/${file} matches ${direction}/${type}.schema.json`, ajv.errorsText(single.errors));
  seenTypes[direction].add(type);
}
for (const direction of ['client', 'server']) {
  for (const type of perMessage[direction].keys()) {
    check(seenTypes[direction].has(type), `${direction} ${type} has a valid golden example`);
  }
}

// An invalid example is rejected when JSON.parse throws or the client union
// refuses it; the ones listed in schema-gaps.json must be accepted instead, so
// that the list stays true.
for (const file of list('examples', 'invalid')) {
  const text = read('examples', 'invalid', file);
  let rejected = false;
  let why = 'accepted';
  try {
    const frame = JSON.parse(text);
    rejected = !union.client(frame);
    if (rejected) why = ajv.errorsText(union.client.errors);
  } catch (e) {
    rejected = true;
    why = `JSON.parse: ${e.message}`;
  }
  if (gaps.has(file)) {
    check(!rejected, `examples/invalid/${file} is a listed schema gap, so ajv accepts it`, why);
  } else {
    check(rejected, `examples/invalid/${file} is rejected by ajv`, why);
  }
}
for (const file of gaps) {
  check(list('examples', 'invalid').includes(file), `schema-gaps.json names an existing example ${file}`);
}

// --- AsyncAPI ----------------------------------------------------------------
const yaml = read('asyncapi.yaml');
const parser = new Parser();
const { document, diagnostics } = await parser.parse(yaml);
const errors = diagnostics.filter((d) => d.severity === 0);
check(errors.length === 0 && document !== undefined, 'asyncapi.yaml has no errors (@asyncapi/parser)',
  errors.map((d) => `${d.path.join('.')}: ${d.message}`).join('; '));

if (document) {
  check(document.version() === '3.0.0', 'asyncapi.yaml is AsyncAPI 3.0.0', document.version());
  const channel = document.channels().all().find((c) => c.address() === '/v1/ws/chat');
  check(Boolean(channel), 'asyncapi.yaml has the /v1/ws/chat channel');
  const ws = channel?.bindings().get('ws')?.value() ?? {};
  check(Boolean(ws.query?.properties?.token), 'the ws binding documents the token query parameter');
  check(Boolean(ws.headers?.properties?.['Sec-WebSocket-Protocol']), 'the ws binding documents the subprotocol header');
  const ops = document.operations().all();
  for (const [action, direction] of [['receive', 'client'], ['send', 'server']]) {
    const op = ops.find((o) => o.action() === action);
    check(Boolean(op), `asyncapi.yaml has a ${action} operation`);
    const names = new Set((op?.messages().all() ?? []).map((m) => m.name()));
    for (const type of perMessage[direction].keys()) {
      check(names.has(type), `the ${action} operation carries ${type}`);
    }
    for (const message of op?.messages().all() ?? []) {
      check(message.examples().all().length > 0, `asyncapi message ${message.id()} has an example`);
    }
  }
  const json = document.json();
  const closeCodes = (json.channels?.chat?.['x-close-codes'] ?? []).map((c) => c.code);
  for (const code of [1000, 1001, 1003, 1008, 1009, 1011, 1012, 1013, 4000, 4001, 4002, 4500, 4501, 4503, 4505]) {
    check(closeCodes.includes(code), `asyncapi.yaml describes close code ${code}`);
  }

  // The AsyncAPI payloads (draft-07 flavoured) must agree with the golden examples too.
  const ajv07 = new Ajv07({ strict: false });
  addFormats(ajv07);
  addIntegerFormats(ajv07);
  const raw = { ...json };
  raw.$id = 'urn:petchat:asyncapi';
  ajv07.addSchema(raw);
  for (const [key, message] of Object.entries(json.components.messages)) {
    const validate = ajv07.compile({ $ref: `urn:petchat:asyncapi#/components/messages/${key}/payload` });
    for (const example of message.examples ?? []) {
      check(validate(example.payload), `asyncapi payload of ${key} accepts example ${example.name}`, ajv07.errorsText(validate.errors));
    }
  }
}

// --- OpenAPI 3.1 --------------------------------------------------------------
const openapi = JSON.parse(read('openapi.json'));
const openapiResult = await new OpenApiValidator().validate(openapi);
check(openapiResult.valid, 'openapi.json is a valid OpenAPI 3.1 document (@seriousme/openapi-schema-validator)',
  JSON.stringify(openapiResult.errors ?? []).slice(0, 2000));
check(openapi.openapi === '3.1.0', 'openapi.json is OpenAPI 3.1.0', openapi.openapi);
for (const [path, method] of [['/v1/api/publish', 'post'], ['/v1/api/notify', 'post'], ['/v1/api/presence/{userId}', 'get'],
  ['/v1/api/stats', 'get'], ['/v1/sse/tickets', 'post'], ['/v1/sse', 'get'],
  ['/v1/conversations/{id}/attachments', 'post'], ['/v1/conversations/{id}/attachments/{attachment}', 'get'],
  ['/v1/conversations/{id}/attachments/{attachment}/thumbnail', 'get']]) {
  check(Boolean(openapi.paths?.[path]?.[method]), `openapi.json has ${method.toUpperCase()} ${path}`);
}
// Every component schema compiles as draft 2020-12 (the document's dialect), strictly.
const ajvOpenApi = new Ajv2020({ strict: true });
addFormats(ajvOpenApi);
addIntegerFormats(ajvOpenApi);
// The document is the schemas' root; `components` is where they live, not a keyword.
ajvOpenApi.addKeyword('components');
ajvOpenApi.addSchema({ $id: 'urn:petchat:openapi', components: openapi.components });
for (const name of Object.keys(openapi.components.schemas)) {
  let ok = true;
  let detail = '';
  try {
    ajvOpenApi.compile({ $ref: `urn:petchat:openapi#/components/schemas/${name}` });
  } catch (e) {
    ok = false;
    detail = String(e);
  }
  check(ok, `openapi.json component ${name} compiles (ajv, draft 2020-12)`, detail);
}

console.log(`contract: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
