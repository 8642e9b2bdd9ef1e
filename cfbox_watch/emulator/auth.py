"""The OAuth 2.0 JWT bearer grant, checked the way Box checks it, and bearer tokens.

Strict on purpose: a client that signs with the wrong key, forgets `kid`, reuses a
`jti` or sends an `exp` too far ahead fails here as it would against Box."""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs

import jwt

from cfbox_watch.emulator.http import ApiError, OAuthError, Request, Response
from cfbox_watch.emulator.store import Store

AUDIENCE = "https://api.box.com/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _grant_error(msg: str) -> OAuthError:
    return OAuthError(400, "invalid_grant", msg)


def issue_token(store: Store, form: dict[str, str], token_ttl: float, app_authorized: bool = True) -> dict:
    """Validate a token request (form fields) and return Box's AccessToken JSON."""
    if form.get("grant_type") != JWT_GRANT:
        raise OAuthError(400, "unsupported_grant_type", "Grant type is not supported by this emulator")
    if form.get("client_id") != store.meta("client_id") or not secrets.compare_digest(
            form.get("client_secret", ""), store.meta("client_secret") or ""):
        raise OAuthError(400, "invalid_client", "The client credentials are invalid")
    assertion = form.get("assertion") or ""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise _grant_error("Invalid JWT assertion: it cannot be decoded") from None
    if header.get("kid") != store.meta("public_key_id"):
        raise _grant_error('"kid" invalid, unable to lookup correct key')
    if header.get("alg") not in ("RS256", "RS384", "RS512"):
        raise _grant_error("Algorithm not allowed")
    try:
        claims = jwt.decode(
            assertion, store.meta("public_key_pem"), algorithms=["RS256", "RS384", "RS512"],
            audience=AUDIENCE, issuer=store.meta("client_id"),
            options={"require": ["exp", "iss", "aud", "jti", "sub"]}, leeway=0)
    except jwt.ExpiredSignatureError:
        raise _grant_error("Current date time must be before the expiration date time listed in the 'exp' claim.") from None
    except jwt.InvalidAudienceError:
        raise _grant_error("Please check the 'aud' claim. Should be https://api.box.com/oauth2/token.") from None
    except jwt.InvalidIssuerError:
        raise _grant_error("Please check the 'iss' claim.") from None
    except jwt.InvalidSignatureError:
        raise _grant_error("Signature verification error. The public key identified by \"kid\" must correspond to the private key used for signing.") from None
    except jwt.MissingRequiredClaimError as e:
        raise _grant_error(f"Missing required claim '{e.claim}'") from None
    except jwt.PyJWTError:
        raise _grant_error("Invalid JWT assertion") from None
    if claims["exp"] - time.time() > 60:
        raise _grant_error("Please check the 'exp' claim. The 'exp' must be less than 60 seconds from now")
    jti = str(claims["jti"])
    if not 16 <= len(jti) <= 128:
        raise _grant_error("Please check the 'jti' claim. Its length must be between 16 and 128 characters")
    if claims.get("box_sub_type") == "enterprise":
        if str(claims["sub"]) != store.meta("enterprise_id"):
            raise _grant_error("Please check the 'sub' claim. The 'sub' specified is invalid.")
        user_id = store.meta("service_account_id")
    elif claims.get("box_sub_type") == "user":
        if store.user(str(claims["sub"])) is None:
            raise _grant_error("Please check the 'sub' claim. The 'sub' specified is invalid.")
        user_id = str(claims["sub"])
    else:
        raise _grant_error("Please check the 'box_sub_type' claim: 'enterprise' or 'user'")
    if not store.use_jti(jti, float(claims["exp"])):
        raise _grant_error("A unique 'jti' value is required.")
    if not app_authorized:
        raise OAuthError(400, "unauthorized_client", "This app is not authorized by the enterprise admin")
    token = secrets.token_hex(16)
    store.add_token(token, user_id, time.time() + token_ttl)
    return {"access_token": token, "expires_in": int(token_ttl), "token_type": "bearer",
            "restricted_to": [], "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}


def parse_form(req: Request) -> dict[str, str]:
    raw = req.body.read_all(1 << 20).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def bearer_user(store: Store, req: Request) -> str:
    """The user behind the request's bearer token; 401 (empty body, like Box) otherwise."""
    h = req.headers.get("Authorization") or ""
    token = h[7:].strip() if h.lower().startswith("bearer ") else ""
    uid = store.token_user(token) if token else None
    if uid is None:
        raise Unauthorized()
    return uid


class Unauthorized(ApiError):
    def __init__(self):
        super().__init__(401, "unauthorized", "The access token provided is invalid.")

    def response(self) -> Response:
        return Response.empty(401, {"WWW-Authenticate": 'Bearer realm="Service", error="invalid_token",'
                                                        ' error_description="The access token provided is invalid."'})
