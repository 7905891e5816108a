"""Auth building blocks without a server: scopes, rules, users, the failed-login limiter, keys, and
the JWT issue/verify path with every way a token must be refused."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import bcrypt
import pytest

from registry.access import Access
from registry.auth import keys, tokens
from registry.auth.ratelimit import FailureLimiter
from registry.auth.rules import RulesError, parse_rules, robot_rule_document
from registry.auth.scopes import covers, format_scope, from_claim, parse_scope, parse_scopes, to_claim
from registry.auth.tokens import TokenError, TrustStore, issue, verify
from registry.auth.users import UsersError, VerifiedCache, parse_htpasswd, remove_user, set_password


# -- scopes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("repository:team/app:pull,push", Access("repository", "team/app", ("pull", "push"))),
    ("repository:app:pull", Access("repository", "app", ("pull",))),
    ("repository(plugin):team/app:pull", Access("repository", "team/app", ("pull",))),
    ("repository:localhost:5000/app:pull", Access("repository", "localhost:5000/app", ("pull",))),
    ("registry:catalog:*", Access("registry", "catalog", ("*",))),
    ("repository:app:pull,pull,,push", Access("repository", "app", ("pull", "push"))),
    ("repository:app:", Access("repository", "app", ())),
])
def test_scope_parsing(text: str, expected: Access) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize("text", ["", "repository", "repository:app", ":app:pull", "repository::pull",
                                  "Repository:app:pull", "repository:app:pu/ll", "repository:app:pull;rm"])
def test_malformed_scopes_are_ignored(text: str) -> None:
    assert parse_scope(text) is None
    assert parse_scopes([text]) == []


def test_scopes_merge_across_parameters_and_spaces() -> None:
    merged = parse_scopes(["repository:a:pull", "repository:b:push repository:a:push", "junk"])
    assert merged == [Access("repository", "a", ("pull", "push")), Access("repository", "b", ("push",))]
    assert format_scope(merged) == "repository:a:pull,push repository:b:push"


def test_covers_and_claims_round_trip() -> None:
    granted = [Access("repository", "a", ("pull",)), Access("repository", "a", ("push",)),
               Access("registry", "catalog", ("*",))]
    assert covers(granted, Access("repository", "a", ("pull", "push")))
    assert not covers(granted, Access("repository", "a", ("delete",)))
    assert not covers(granted, Access("repository", "b", ("pull",)))
    assert covers(granted, Access("registry", "catalog", ("*",)))
    assert covers([Access("repository", "a", ("*",))], Access("repository", "a", ("delete",)))
    assert from_claim(to_claim(granted)) == [Access("repository", "a", ("pull", "push")),
                                             Access("registry", "catalog", ("*",))]
    for bad in ({"type": "repository"}, [{"type": 1, "name": "a", "actions": []}], ["x"],
                [{"type": "repository", "name": "a", "actions": "pull"}]):
        with pytest.raises(ValueError):
            from_claim(bad)


# -- rules ---------------------------------------------------------------------------------------
RULES = """
groups:
  ci: [robot-build]
  admins: [root]
anonymous_pull: ["public/*"]
rules:
  - users: [alice]
    repositories: ["team-a/*", "shared"]
    actions: [pull, push]
  - groups: [ci]
    repositories: ["team-?/app"]
    actions: [pull]
  - users: ["*"]
    repositories: ["common/*"]
    actions: [pull]
  - groups: [admins]
    repositories: ["*"]
    actions: ["*"]
    catalog: true
---
rules:
  - users: [bob]
    repositories: [team-b/tool]
    actions: [delete]
"""


def test_rules_grant_by_user_group_pattern_and_anonymous() -> None:
    rules = parse_rules(RULES)
    assert rules.actions("alice", "repository", "team-a/app") == {"pull", "push"}
    assert rules.actions("alice", "repository", "team-a/deep/er") == {"pull", "push"}  # * crosses "/"
    assert rules.actions("alice", "repository", "team-ab") == frozenset()
    assert rules.actions("alice", "repository", "shared") == {"pull", "push"}
    assert rules.actions("robot-build", "repository", "team-x/app") == {"pull"}
    assert rules.actions("robot-build", "repository", "team-xy/app") == frozenset()  # ? is one character
    assert rules.actions("robot-build", "repository", "team-x/app/sub") == frozenset()
    assert rules.actions("anyone-logged-in", "repository", "common/base") == {"pull"}
    assert rules.actions(None, "repository", "common/base") == frozenset()  # "*" users: authenticated only
    assert rules.actions(None, "repository", "public/x") == {"pull"}
    assert rules.actions("alice", "repository", "public/x") == {"pull"}  # logging in never loses rights
    assert rules.actions("bob", "repository", "team-b/tool") == {"delete"}  # from the second document
    assert rules.actions("root", "registry", "catalog") == {"*"}
    assert rules.actions("alice", "registry", "catalog") == frozenset()
    assert rules.actions(None, "registry", "catalog") == frozenset()


def test_rules_grant_intersects_with_what_was_asked() -> None:
    rules = parse_rules(RULES)
    asked = [Access("repository", "team-a/app", ("pull", "push", "delete")),
             Access("repository", "team-b/x", ("pull",)), Access("registry", "catalog", ("*",))]
    assert rules.grant("alice", asked) == [Access("repository", "team-a/app", ("pull", "push"))]
    assert rules.grant("root", asked) == asked
    assert rules.grant(None, asked) == []
    assert rules.allows("alice", [Access("repository", "team-a/app", ("pull", "push"))])
    assert not rules.allows("alice", [Access("repository", "team-a/app", ("pull", "delete"))])


@pytest.mark.parametrize("text,message", [
    ("rules:\n  - users: [a]\n    repositories: [x]\n    actions: [read]\n", "'read' is not one of"),
    ("rules:\n  - repositories: [x]\n    actions: [pull]\n", "names no users and no groups"),
    ("rules:\n  - users: [a]\n    repositories: [X/Y]\n    actions: [pull]\n", "may hold only"),
    ("rules:\n  - users: [a]\n    repos: [x]\n", "unknown key 'repos'"),
    ("rule: []\n", "unknown key 'rule'"),
    ("anonymous_pull: ['[abc]']\n", "anonymous_pull"),
    ("rules: {a: 1}\n", "rules must be a list"),
    ("rules: [\n", "not valid YAML"),
])
def test_bad_rules_files_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_robot_rule_document_appends_as_its_own_yaml_document() -> None:
    text = RULES + robot_rule_document("robot-x", ["only/this"], ["pull", "push"], "robot account robot-x")
    rules = parse_rules(text)
    assert rules.actions("robot-x", "repository", "only/this") == {"pull", "push"}
    assert rules.actions("robot-x", "repository", "only/that") == frozenset()
    assert rules.actions("alice", "repository", "team-a/app") == {"pull", "push"}


# -- users ---------------------------------------------------------------------------------------
def _entry(name: str, password: str, prefix: str = "$2b$") -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return f"{name}:{prefix}{hashed[4:]}"


def test_htpasswd_bcrypt_including_apache_2y_prefix() -> None:
    users = parse_htpasswd("\n".join(["# comment", _entry("alice", "wonder"), _entry("bob", "builder", "$2y$"),
                                      "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", ""]))
    assert users.verify("alice", "wonder") and users.verify("bob", "builder")
    assert not users.verify("alice", "Wonder") and not users.verify("nobody", "wonder")
    assert not users.verify("carol", "password")  # not bcrypt: cannot log in
    assert users.fingerprint("alice") and users.fingerprint("nobody") == ""
    with pytest.raises(UsersError):
        parse_htpasswd("no-colon-here")


def test_every_check_costs_one_bcrypt_comparison_whether_or_not_the_user_exists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    users = parse_htpasswd(_entry("alice", "wonder") + "\n" + "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    calls: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, hashed: calls.append(hashed) or real(pw, hashed))
    for name in ("alice", "nobody", "carol"):
        users.verify(name, "guess")
    assert len(calls) == 3
    assert calls[1] == calls[2] and calls[1] != calls[0]  # unknown users compare against the dummy hash
    assert calls[1].startswith(b"$2b$04$")  # ... of the same cost as the real ones


def test_passwords_are_cut_at_72_bytes_like_htpasswd() -> None:
    long = "x" * 100
    users = parse_htpasswd(f"alice:{bcrypt.hashpw(long[:72].encode(), bcrypt.gensalt(4)).decode()}\n")
    assert users.verify("alice", long) and users.verify("alice", long[:72])


def test_set_and_remove_users_in_place(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(_entry("keep", "me") + "\n")
    set_password(path, "alice", "one", cost=4)
    with pytest.raises(UsersError):
        set_password(path, "alice", "two", cost=4)
    set_password(path, "alice", "two", cost=4, replace=True)
    users = parse_htpasswd(path.read_text())
    assert users.verify("alice", "two") and users.verify("keep", "me") and path.stat().st_mode & 0o077 == 0
    remove_user(path, "alice")
    assert parse_htpasswd(path.read_text()).names() == ["keep"]
    with pytest.raises(UsersError):
        set_password(path, "bad:name", "x", cost=4)


def test_verified_cache_misses_on_another_password_or_a_changed_hash() -> None:
    cache = VerifiedCache(ttl=60)
    cache.add("alice", "pw", "fp1")
    assert cache.hit("alice", "pw", "fp1")
    assert not cache.hit("alice", "pw2", "fp1") and not cache.hit("alice", "pw", "fp2")
    assert not cache.hit("alice", "pw", "")  # a user that no longer exists


# -- the failed-login limiter --------------------------------------------------------------------
def test_limiter_per_address_and_per_user_with_a_sliding_window() -> None:
    now = [1000.0]
    limiter = FailureLimiter(address_limit=3, user_limit=5, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", "alice") is None
        limiter.failed("10.0.0.1", "alice")
    assert limiter.retry_after("10.0.0.1", "bob") == 60  # the address is blocked, whatever the user
    assert limiter.retry_after("10.0.0.2", "alice") is None  # alice is not, from elsewhere
    limiter.failed("10.0.0.2", "alice")
    limiter.failed("10.0.0.3", "alice")
    assert limiter.retry_after("10.0.0.4", "alice") == 60  # now alice is, from everywhere
    assert limiter.retry_after("10.0.0.4", "bob") is None
    now[0] += 61
    assert limiter.retry_after("10.0.0.1", "alice") is None



def test_limiter_counts_checks_still_in_flight() -> None:
    limiter = FailureLimiter(address_limit=3, user_limit=100, window=60)
    started = [limiter.begin("10.0.0.9", f"guess{i}") for i in range(10)]  # ten concurrent guesses
    assert started[:3] == [None, None, None]
    assert all(retry is not None and retry >= 1 for retry in started[3:])  # only three get checked
    for i in range(3):
        limiter.end("10.0.0.9", f"guess{i}", failed=True)
    assert limiter.retry_after("10.0.0.9", "alice") == 60
    ok = FailureLimiter(address_limit=3, user_limit=100, window=60)
    for _ in range(5):  # successful logins never pile up
        assert ok.begin("10.0.0.8", "alice") is None
        ok.end("10.0.0.8", "alice", failed=False)


# -- keys ----------------------------------------------------------------------------------------
def test_libtrust_key_id_format_and_jwk_round_trip() -> None:
    for alg in ("ES256", "RS256"):
        key = keys.generate_private_key(alg)
        kid = keys.libtrust_kid(key.public_key())
        assert re.match(r"^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$", kid), kid  # 240 bits, base32, 12 groups
        jwk = keys.to_jwk(key.public_key(), kid)
        assert keys.libtrust_kid(keys.from_jwk(jwk)) == kid and jwk["alg"] == alg


def test_generated_key_pair_is_written_once(tmp_path: Path) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    assert keys.write_key_pair(key, cert, "ES256", "issuer")
    first = key.read_bytes()
    assert not keys.write_key_pair(key, cert, "ES256", "issuer") and key.read_bytes() == first
    signing = keys.load_signing_key(key, cert)
    assert signing.algorithm == "ES256" and key.stat().st_mode & 0o077 == 0
    other = tmp_path / "other.pem"
    keys.write_key_pair(other, tmp_path / "oc.pem", "ES256", "issuer")
    with pytest.raises(keys.KeyFileError):
        keys.load_signing_key(other, cert)  # a certificate of another key


# -- JWT issue and verify ------------------------------------------------------------------------
ISSUER, AUDIENCE = "cargobay-test", "registry.test"
GRANT = [Access("repository", "team/app", ("pull", "push"))]


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def signing(request: pytest.FixtureRequest) -> keys.SigningKey:
    key = keys.generate_private_key(request.param)
    return keys.SigningKey(key, request.param, keys.libtrust_kid(key.public_key()))


@pytest.fixture(scope="module")
def trust(signing: keys.SigningKey) -> TrustStore:
    store = TrustStore()
    store.add_key(signing.public_key, ISSUER)
    return store


def _parts(token: str) -> tuple[dict, dict, str]:
    header, claims, sig = token.split(".")
    return json.loads(base64.urlsafe_b64decode(header + "==")), json.loads(base64.urlsafe_b64decode(claims + "==")), sig


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def test_issued_token_carries_the_standard_claims_and_verifies(signing: keys.SigningKey, trust: TrustStore) -> None:
    token, claims = issue(signing, issuer=ISSUER, audience=AUDIENCE, subject="alice", access=GRANT, lifetime=300)
    header, body, _ = _parts(token)
    assert body == claims  # what issue() says it signed is what the token carries
    assert header == {"typ": "JWT", "alg": signing.algorithm, "kid": signing.kid}
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= set(body)
    assert body["exp"] - body["iat"] == 300 and body["nbf"] == body["iat"] and body["aud"] == AUDIENCE
    verified = verify(token, trust, [AUDIENCE])
    assert verified.subject == "alice" and verified.access == GRANT and verified.issuer == ISSUER
    other, _ = issue(signing, issuer=ISSUER, audience=AUDIENCE, subject="alice", access=GRANT, lifetime=300)
    assert _parts(other)[1]["jti"] != body["jti"]


def test_refusals(signing: keys.SigningKey, trust: TrustStore) -> None:
    now = time.time()

    def refused(token: str, reason: str, audiences: tuple[str, ...] = (AUDIENCE,), store: TrustStore = trust) -> None:
        with pytest.raises(TokenError) as info:
            verify(token, store, audiences, now=now)
        assert reason in str(info.value)

    def make(**changes: object) -> str:
        base = {"issuer": ISSUER, "audience": AUDIENCE, "subject": "alice", "access": GRANT, "lifetime": 300,
                "now": now}
        return issue(signing, **{**base, **changes})[0]  # type: ignore[arg-type]

    refused(make(now=now - 3600), "expired")
    refused(make(audience="elsewhere"), "another audience")
    refused(make(issuer="someone-else"), "untrusted issuer")
    header, claims, _ = _parts(make())
    refused(tokens.encode(header, {**claims, "nbf": now + 3600}, signing), "not valid yet")
    refused(tokens.encode(header, {**claims, "iat": now + 3600}, signing), "in the future")
    refused(tokens.encode(header, {k: v for k, v in claims.items() if k != "exp"}, signing), "no exp")

    # wrong key: same kid, different key; and a kid nobody trusts
    stranger = keys.generate_private_key(signing.algorithm)
    impostor = keys.SigningKey(stranger, signing.algorithm, signing.kid)
    refused(issue(impostor, issuer=ISSUER, audience=AUDIENCE, subject="alice", access=GRANT, lifetime=300, now=now)[0],
            "bad token signature")
    unknown = keys.SigningKey(stranger, signing.algorithm, keys.libtrust_kid(stranger.public_key()))
    refused(issue(unknown, issuer=ISSUER, audience=AUDIENCE, subject="alice", access=GRANT, lifetime=300, now=now)[0],
            "untrusted key")

    # alg none (with and without a signature), HS256 keyed with the public key, and an alg/key mismatch
    token = make()
    h, c, s = token.split(".")
    refused(f"{_b64({**header, 'alg': 'none'})}.{c}.", "not accepted")
    refused(f"{_b64({**header, 'alg': 'none'})}.{c}.{s}", "not accepted")
    refused(f"{_b64({**header, 'alg': 'HS256'})}.{c}.{s}", "not accepted")
    other_alg = "RS256" if signing.algorithm == "ES256" else "ES256"
    refused(f"{_b64({**header, 'alg': other_alg})}.{c}.{s}", "does not match its key")

    # tampered claims: more access, another subject, a later expiry; and a tampered header
    for change in ({"access": to_claim([Access("repository", "team/app", ("pull", "push", "delete"))])},
                   {"sub": "root"}, {"exp": claims["exp"] + 3600}):
        refused(f"{h}.{_b64({**claims, **change})}.{s}", "bad token signature")
    refused(f"{_b64({**header, 'typ': 'JOSE'})}.{c}.{s}", "bad token signature")

    # garbage and smuggling
    refused("a.b", "malformed")
    refused(f"{h}.{c}.{s}.x", "malformed")
    refused(f"{h}.{c}.{s}!", "malformed")
    dup = base64.urlsafe_b64encode(b'{"alg":"none","alg":"' + signing.algorithm.encode() + b'"}').decode().rstrip("=")
    refused(f"{dup}.{c}.{s}", "duplicate")
    refused(f"{_b64({**header, 'crit': ['exp']})}.{c}.{s}", "critical")
    refused("x" * 20000, "too large")
    refused(tokens.encode(header, {**claims, "access": "everything"}, signing), "malformed access")


def test_x5c_chain_to_a_trusted_certificate(signing: keys.SigningKey) -> None:
    cert = keys.self_signed_certificate(signing.private_key, "issuer")
    store = TrustStore()
    store.add_certificates([cert], ISSUER)
    token, claims = issue(signing, issuer=ISSUER, audience=AUDIENCE, subject="ci", access=GRANT, lifetime=60)
    der = base64.b64encode(cert.public_bytes(keys.serialization.Encoding.DER)).decode()
    header = {"typ": "JWT", "alg": signing.algorithm, "x5c": [der]}
    assert verify(tokens.encode(header, claims, signing), store, [AUDIENCE]).subject == "ci"
    assert verify(token, store, [AUDIENCE]).subject == "ci"  # by libtrust kid too
    stranger = keys.generate_private_key(signing.algorithm)
    foreign = keys.self_signed_certificate(stranger, "issuer")
    fder = base64.b64encode(foreign.public_bytes(keys.serialization.Encoding.DER)).decode()
    forged = keys.SigningKey(stranger, signing.algorithm, "")
    with pytest.raises(TokenError, match="trusted certificate"):
        verify(tokens.encode({**header, "x5c": [fder]}, claims, forged), store, [AUDIENCE])


def test_deeply_nested_token_json_is_malformed_not_a_crash(trust: TrustStore) -> None:
    import base64

    segment = base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="malformed"):
        verify(f"{segment}.e30.AAAA", trust, [AUDIENCE])
