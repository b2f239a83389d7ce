// A real OpenID provider for runway's sign-in tests: npm's oidc-provider (an OpenID
// Certified implementation) with one client (runway, client_secret_basic, PKCE), two
// people and a group:
//   rita  rita@example.com  groups [dev]
//   walt  walt@example.com  groups []
//   eve   walt@example.com, not verified (she is named eve, not walt)
// Any password signs them in (the provider's development login form); anyone else is
// not an account. Userinfo gives email and groups (the ID token carries sub only, as
// the provider does by default when an access token is issued).
//
// node provider.mjs MODULES_DIR REDIRECT_URL CLIENT_SECRET
// prints "issuer http://127.0.0.1:PORT" once listening on a free loopback port.
//
// Hostile tests set a mode with GET /__tamper?mode=M (off: none): the token answers carry an
// ID token changed as M says (re-signed with the provider's own key unless M is about
// the key): aud, iss, expired, otherkey, none (alg none), replay (the ID token of an earlier
// sign-in, nonce and all). This is the network between runway and a real issuer
// turned hostile, not a fake issuer: everything else is the provider's own.
import http from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, redirect, secret] = process.argv.slice(2);
const load = (p) => import(pathToFileURL(join(modules, p)).href);
const { default: Provider } = await load('oidc-provider/lib/index.js');
const jose = await load('jose/dist/webapi/index.js');

const own = await jose.generateKeyPair('RS256', { extractable: true });
const other = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(own.privateKey)), kid: 'k1', alg: 'RS256', use: 'sig' };

const people = {
  rita: { email: 'rita@example.com', groups: ['dev'] },
  walt: { email: 'walt@example.com', groups: [] },
  // Someone who claims walt's address without having verified it.
  eve: { email: 'walt@example.com', verified: false, groups: [] },
};

const server = http.createServer();
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'runway',
    client_secret: secret,
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username'],
    groups: ['groups'],
  },
  cookies: { keys: ['runway-tests-only'] },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const p = people[id];
    if (!p) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: p.email, email_verified: p.verified ?? true, preferred_username: id, groups: p.groups };
      },
    };
  },
  // A first-party client: no consent screen (the documented way to skip it).
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;

let mode = 'off';
let earlier = null;
const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

async function tampered(idToken) {
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  const resign = (c, key = own.privateKey) =>
    new jose.SignJWT(c).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(key);
  switch (mode) {
    case 'aud': return resign({ ...claims, aud: 'someone-else' });
    case 'iss': return resign({ ...claims, iss: 'http://127.0.0.1:1' });
    case 'expired': return resign({ ...claims, iat: now - 7200, exp: now - 3600 });
    case 'otherkey': return resign(claims, other.privateKey);
    case 'none': return `${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.`;
    case 'replay': return earlier ?? idToken;
    default: return idToken;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__tamper') {
    mode = ctx.query.mode || 'off';
    ctx.body = `mode ${mode}\n`;
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.id_token) {
    const issued = ctx.body.id_token;
    if (mode !== 'off') ctx.body = { ...ctx.body, id_token: await tampered(issued) };
    if (mode !== 'replay') earlier = issued;
  }
});

server.on('request', provider.callback());
console.log(`issuer ${issuer}`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
