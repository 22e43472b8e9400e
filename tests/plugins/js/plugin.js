// `jsdemo`: a tiny fictional platform for the outreach test suite, written
// in JavaScript against `outreach:platform/plugin@0.2.0` and built with the
// SpiderMonkey-based componentize-js (see build.sh).
//
// An API key sent as a bearer token; a post is `POST {api}/posts` with
// `{"text": ..., "visibility": ...}`, answered with `{"id": ..., "url": ...}`;
// the profile is `GET {api}/me`, answered with `{"id", "name", "handle"}`.
//
// WIT -> JS (componentize-js / jco conventions):
//   record       -> object with camelCase fields
//   enum         -> kebab-case string ('api-key', 'chars')
//   variant      -> { tag: 'kebab-name', val: payload }, or { tag } alone
//   option<T>    -> T or undefined
//   u64          -> a Number is accepted (keep values small)
//   list<u8>     -> Uint8Array
//   result<T, E> -> export: return T, or throw E itself ({ tag, val });
//                   import: returns T, or throws an Error whose .payload is E
// Throwing anything else from an export (an Error, a string) traps the
// instance, so every export catches everything.

import { send } from 'outreach:platform/host@0.2.0';

const MAX_LENGTH = 500;
const CALL_ERRORS = ['auth-expired', 'needs-reconnect', 'rate-limited', 'rejected', 'transient', 'outcome-unknown'];

export function describe() {
  return {
    id: 'jsdemo',
    name: 'JS demo',
    version: '0.1.0',
    auth: {
      kind: 'api-key',
      scopes: [],
      scopeSeparator: ' ',
      clientAuth: 'none',
      authorizeParams: [],
      tokenParams: [],
      tokenResponse: {
        accessToken: 'access_token',
        refreshToken: '',
        expiry: '',
        expiryFormat: 'never',
        refreshExpiry: '',
        scope: '',
        error: '',
      },
      refresh: { tag: 'none' },
      pkce: 's256',
      accessTokenLifetime: 0,
      refreshTokenLifetime: 0,
      refreshMinAge: 0,
      placement: [{ tag: 'bearer' }],
      dynamicRegistration: false,
      login: undefined,
      afterConnect: [],
      identities: undefined,
    },
    endpoints: [{ name: 'api', url: 'https://demo.invalid' }],
    hosts: [],
    rateLimits: [],
    rateLimitHeaders: undefined,
    content: {
      maxLength: MAX_LENGTH,
      counting: 'chars',
      maxLengthSetting: undefined,
      titleRequired: false,
      maxTitleLength: 0,
      mediaRequired: false,
      media: [],
      threads: false,
    },
    settings: [],
    postFields: [{
      name: 'visibility',
      description: 'Who can see the post',
      kind: 'choice', // WIT `kind` (a field-type)
      required: false,
      allowed: ['public', 'unlisted'],
      defaultValue: 'public',
    }],
    idempotentPublish: false,
  };
}

export function validate(post, account) {
  try {
    const n = [...post.text].length; // Unicode scalar values (`chars`)
    if (n === 0) return [{ field: 'text', message: 'the text is empty' }];
    if (n > MAX_LENGTH) {
      return [{ field: 'text', message: `the text has ${n} characters; at most ${MAX_LENGTH}` }];
    }
    return [];
  } catch (e) {
    return [{ field: 'text', message: `could not check the post: ${describeError(e)}` }];
  }
}

export function publish(ctx, post) {
  return guard(() => {
    const visibility = post.extra.find((p) => p.name === 'visibility')?.value ?? 'public';
    const res = call({
      method: 'post',
      url: [text(`${api(ctx)}/posts`)],
      headers: [{ name: 'content-type', value: [text('application/json')] }],
      body: { tag: 'bytes', val: utf8(JSON.stringify({ text: post.text, visibility })) },
      credential: true,
      class: 'publish',
      followRedirects: false,
    });
    let v;
    try {
      v = JSON.parse(fromUtf8(res.body));
    } catch (e) {
      // The platform said 2xx: the post is probably out, so do not retry.
      throw { tag: 'outcome-unknown', val: `HTTP ${res.status} without a JSON body` };
    }
    if (v === null || typeof v !== 'object' || v.id === undefined || v.id === null) {
      throw { tag: 'outcome-unknown', val: `HTTP ${res.status} without an id` };
    }
    return {
      id: String(v.id),
      url: typeof v.url === 'string' ? v.url : undefined,
      state: 'published',
    };
  });
}

export function profile(ctx) {
  return guard(() => {
    const res = call({
      method: 'get',
      url: [text(`${api(ctx)}/me`)],
      headers: [],
      body: { tag: 'empty' },
      credential: true,
      class: 'profile',
      followRedirects: false,
    });
    const v = JSON.parse(fromUtf8(res.body)); // a SyntaxError becomes transient
    if (v === null || typeof v !== 'object' || v.id === undefined || v.id === null) {
      throw { tag: 'transient', val: `HTTP ${res.status}: no id in the profile` };
    }
    return {
      id: String(v.id),
      name: typeof v.name === 'string' ? v.name : String(v.id),
      handle: typeof v.handle === 'string' ? v.handle : undefined,
      picture: undefined,
      url: undefined,
    };
  });
}

export function findPost(ctx, post) {
  return undefined; // ok(none): this platform cannot tell
}

export function checkReceipt(ctx, receipt) {
  return receipt;
}

export function listIdentities(ctx) {
  return []; // acts only as the user
}

// --- helpers -----------------------------------------------------------------

function text(s) {
  return { tag: 'text', val: s };
}

// The effective `api` endpoint (the tests point it at a local fake server).
function api(ctx) {
  const ep = ctx.endpoints.find((e) => e.name === 'api');
  if (!ep) throw { tag: 'rejected', val: 'no endpoint named api' };
  return ep.url.replace(/\/+$/, '');
}

// One request through the host; non-2xx answers and transport failures
// become call-errors.
function call(req) {
  let res;
  try {
    res = send(req);
  } catch (e) {
    const err = e && e.payload;
    if (!err || typeof err.tag !== 'string') throw { tag: 'transient', val: `send failed: ${describeError(e)}` };
    const msg = `${err.tag}: ${err.val}`;
    switch (err.tag) {
      case 'denied':
      case 'not-sent':
        throw { tag: 'transient', val: msg };
      case 'too-large':
        throw { tag: 'rejected', val: msg };
      default: // unknown-outcome, timeout
        throw { tag: 'outcome-unknown', val: msg };
    }
  }
  const s = res.status;
  if (s >= 200 && s < 300) return res;
  const detail = `HTTP ${s}: ${fromUtf8(res.body).slice(0, 200)}`;
  if (s === 401) throw { tag: 'needs-reconnect', val: detail };
  if (s === 429) {
    throw { tag: 'rate-limited', val: { retryAfterSeconds: retryAfter(res.headers), message: detail } };
  }
  if (s >= 500) throw { tag: 'transient', val: detail };
  throw { tag: 'rejected', val: detail }; // other 4xx (and 1xx/3xx, not expected)
}

// `Retry-After: <seconds>`; the HTTP-date form is not used by this platform.
function retryAfter(headers) {
  const h = headers.find((p) => p.name.toLowerCase() === 'retry-after');
  if (!h || !/^\s*\d{1,9}\s*$/.test(h.value)) return undefined;
  return Number(h.value.trim());
}

// Runs an export body; a call-error passes through, anything else thrown
// becomes `transient` instead of trapping.
function guard(f) {
  try {
    return f();
  } catch (e) {
    if (e && typeof e === 'object' && CALL_ERRORS.includes(e.tag) && !(e instanceof Error)) throw e;
    throw { tag: 'transient', val: `plugin error: ${describeError(e)}` };
  }
}

function describeError(e) {
  try {
    return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } catch {
    return 'unknown error';
  }
}

function utf8(s) {
  return new TextEncoder().encode(s);
}

function fromUtf8(bytes) {
  return new TextDecoder().decode(bytes);
}
