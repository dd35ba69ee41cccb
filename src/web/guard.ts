/**
 * Who may talk to a loopback web server of ours. Listening on 127.0.0.1 is not enough: any web page
 * the user opens can send requests there (a cross-site form or `fetch` with a "simple" content
 * type), and a DNS-rebinding page can even read the answers, because to the browser it is the
 * attacker's own origin. So every request must name our address in `Host` (a rebound page sends its
 * own name), come from our own origin when a browser says where it comes from, and change state
 * only with a JSON body (a content type no cross-site form can send without a CORS preflight, which
 * we never grant).
 */

export interface GuardedRequest {
  method?: string;
  headers: { host?: string; origin?: string; 'content-type'?: string };
}

/** Methods that only read: everything else changes state and needs a JSON body. */
const SAFE_METHODS = new Set(['GET', 'HEAD']);

/**
 * The reason to refuse `req`, or `undefined` when it may be served.
 *
 * @param allowedHosts the `host:port` pairs the server is reached at, e.g. `127.0.0.1:4000`
 * @param site how the reason names the server
 * @default site 'this server'
 */
export function refusal(allowedHosts: readonly string[], req: GuardedRequest, site = 'this server'): string | undefined {
  const hosts = allowedHosts.map((host) => host.toLowerCase());
  const host = req.headers.host?.toLowerCase();
  if (!host || !hosts.includes(host)) {
    return `Forbidden: Host ${shown(req.headers.host)} is not ${site} (expected ${hosts.join(' or ')})`;
  }
  // A browser sends Origin on cross-origin requests and on every POST; tools like curl send none.
  const origins = hosts.map((allowed) => `http://${allowed}`);
  const origin = req.headers.origin;
  if (origin !== undefined && !origins.includes(origin.toLowerCase())) {
    return `Forbidden: Origin ${shown(origin)} is not ${site} (expected ${origins.join(' or ')})`;
  }
  const method = (req.method ?? 'GET').toUpperCase();
  const type = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  if (!SAFE_METHODS.has(method) && type !== 'application/json') {
    return `Forbidden: ${method.slice(0, 10)} needs Content-Type \`application/json\`, got ${shown(req.headers['content-type'])}`;
  }
  return undefined;
}

/** A header value as the reason quotes it: short and on one line, whatever the sender put there. */
function shown(value: string | undefined): string {
  if (value === undefined || value === '') return 'none';
  // eslint-disable-next-line no-control-regex -- control characters are exactly what this replaces
  const clean = value.replace(/[\u0000-\u001f\u007f`]/g, '?');
  return `\`${clean.length > 80 ? `${clean.slice(0, 80)}…` : clean}\``;
}

/**
 * The Content-Security-Policy of our pages (the playground, the review page): they load only their own
 * script, style, images and API; nothing inline, no frames, no base or plugin tricks.
 */
export function pagePolicy(formAction: "'self'" | "'none'"): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    `form-action ${formAction}`,
    "frame-ancestors 'none'",
  ].join('; ');
}
