"""Authentication and access control (issue 5), plugged into the core through `registry.access`.

The `auth:` section of the configuration is part of `registry.settings` (its schema); this
package's `__init__` stays empty of imports: nothing heavy loads until auth is turned on.

- `scopes`: the Docker token-spec scope grammar (`repository:team/app:pull,push`).
- `rules`: the access-control list (users, groups, repository patterns, actions, anonymous pull).
- `users`: the htpasswd (bcrypt) user database with constant-time checks.
- `keys` and `tokens`: signing keys (ES256/RS256) and where a generated one lives, libtrust key ids,
  JWT issue and verification.
- `ratelimit`: failed logins per client address and per user.
- `service`: the assembled pieces (`AuthService`) shared by the authorizer and the token endpoint.
- `authorizer`: the `Authorizer` the routes call; `endpoint`: `/auth/token` and `/auth/jwks`.
"""
