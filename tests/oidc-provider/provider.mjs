// A real OpenID provider (npm `oidc-provider`) for interlock's integration tests, started by
// the Rust harness (tests/src/oidc.rs) on a loopback address.
//
//   node provider.mjs CONFIG.json
//
// CONFIG (JSON):
//   host, port            where to listen (port 0: any; the chosen one is printed)
//   issuer                the `iss` to claim (default http://host:port); a second instance
//                         claiming another's issuer with its own keys forges "foreign" tokens
//   kid_prefix            key ids are `<prefix>-rsa-<n>` / `<prefix>-ec-<n>` (n counts rotations)
//   clients               oidc-provider client metadata, plus for job clients:
//                           job_claims  claims added to every token issued to the client
//                           ttl         token lifetime in seconds (default 600)
//   resources             resource indicator -> { audience, alg } (JWT access tokens)
//   accounts              account id -> claims, for interactive logins (authorization code
//                         flow with PKCE; used by the approvals page's tests). A user signs in
//                         on the provider's own login form with the account id as login name
//                         (any password); consent is given at once, and the ID token carries
//                         the claims of the granted scopes (email, email_verified, name,
//                         preferred_username, groups).
//
// Job tokens: `POST /token` with grant_type=client_credentials&resource=<indicator> and the
// client's credentials returns a signed JWT access token whose `sub` is the client id and
// whose `aud`/`alg` come from the resource: a CI job token in all but name.
//
// `POST /admin/rotate` generates new signing keys (new key ids) that sign from then on; the
// old ones stay published, as a provider rotating its keys does. Once listening, one JSON line
// goes to stdout: {"issuer": ..., "port": ...}.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const host = config.host ?? '127.0.0.1';
const kidPrefix = config.kid_prefix ?? 'k';

function keyPair(kind, n) {
  const { privateKey } = kind === 'rsa'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    ...jwk, kid: `${kidPrefix}-${kind}-${n}`, use: 'sig', alg: kind === 'rsa' ? 'RS256' : 'ES256',
  };
}

let generation = 0;
let keys = [keyPair('rsa', 0), keyPair('ec', 0)];
let current;

function build(issuer) {
  const clients = (config.clients ?? []).map((c) => {
    const { job_claims: _claims, ttl: _ttl, ...metadata } = c;
    return metadata;
  });
  const byId = Object.fromEntries((config.clients ?? []).map((c) => [c.client_id, c]));
  const resources = config.resources ?? {};
  const accounts = config.accounts ?? {};
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(_ctx, indicator) {
          const r = resources[indicator];
          if (!r) throw new Error(`unknown resource ${indicator}`);
          return {
            scope: r.scope ?? 'job',
            audience: r.audience,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: r.alg ?? 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims(_ctx, token) {
      const client = byId[token.clientId];
      return client?.job_claims ?? undefined;
    },
    ttl: {
      ClientCredentials(_ctx, _token, client) {
        return byId[client.clientId]?.ttl ?? 600;
      },
    },
    findAccount(_ctx, id) {
      const claims = accounts[id];
      if (!claims) return undefined;
      return { accountId: id, claims: () => ({ sub: id, ...claims }) };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    // Scope claims in the ID token itself, as identity providers configured for a web app do.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    // Consent is implied: the tests' users only sign in.
    async loadExistingGrant(ctx) {
      const { client, session } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      if (grantId) {
        const found = await ctx.oidc.provider.Grant.find(grantId);
        if (found) return found;
      }
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
  });
  // The tests run on loopback over http.
  provider.proxy = true;
  return provider;
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/admin/rotate') {
    generation += 1;
    keys = [keyPair('rsa', generation), keyPair('ec', generation), ...keys];
    current = build(current.issuer);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kids: keys.map((k) => k.kid) }));
    return;
  }
  current.callback()(req, res);
});

server.listen(config.port ?? 0, host, () => {
  const { port } = server.address();
  const issuer = config.issuer ?? `http://${host}:${port}`;
  current = build(issuer);
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});
