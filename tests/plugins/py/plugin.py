"""`pydemo`: a tiny fictional platform for the outreach test suite, written in
Python against `outreach:platform/plugin@0.2.0` and built with componentize-py
(see build.sh).

An API key sent as a bearer token; a post is `POST {api}/posts` with
`{"text": ..., "visibility": ...}`, answered with `{"id": ..., "url": ...}`;
the profile is `GET {api}/me`, answered with `{"id", "name", "handle"}`.

WIT -> Python (componentize-py conventions):
  record       -> dataclass, snake_case fields (`class` -> `class_`, and
                  post-field's `%type` -> `kind`)
  enum         -> enum.Enum (AuthKind.API_KEY)
  variant      -> one dataclass per case (TextPart_Text("..."));
                  a case named like a keyword gets a `_` (RefreshStyle_None_)
  option<T>    -> None or the value
  result<T, E> -> export: return T, or `raise Err(E)`;
                  import: returns T, or raises `Err` whose .value is E
Any other exception escaping an export traps the instance, so every export
catches everything.
"""

import json
from typing import List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.host import (
    Body_Bytes,
    Body_Empty,
    HttpError_Denied,
    HttpError_NotSent,
    HttpError_TooLarge,
    Request,
    Response,
)
from wit_world.imports.types import (
    Account,
    AuthInfo,
    AuthKind,
    Identity,
    CallError_NeedsReconnect,
    CallError_OutcomeUnknown,
    CallError_RateLimited,
    CallError_Rejected,
    CallError_Transient,
    ClientAuth,
    ContentRules,
    Context,
    CountRule,
    CredentialPlacement_Bearer,
    Endpoint,
    ExpiryFormat,
    Field,
    FieldType,
    HttpMethod,
    Manifest,
    PkceMethod,
    Post,
    PostField,
    Problem,
    Profile,
    RateLimited,
    Receipt,
    ReceiptState,
    RefreshStyle_None_,
    TextPart_Text,
    TokenShape,
)

MAX_LENGTH = 500


class WitWorld(wit_world.WitWorld):
    def describe(self) -> Manifest:
        return Manifest(
            id="pydemo",
            name="Python demo",
            version="0.1.0",
            auth=AuthInfo(
                kind=AuthKind.API_KEY,
                scopes=[],
                scope_separator=" ",
                client_auth=ClientAuth.NONE,
                authorize_params=[],
                token_params=[],
                token_response=TokenShape(
                    access_token="access_token",
                    refresh_token="",
                    expiry="",
                    expiry_format=ExpiryFormat.NEVER,
                    refresh_expiry="",
                    scope="",
                    error="",
                ),
                refresh=RefreshStyle_None_(),
                pkce=PkceMethod.S256,
                access_token_lifetime=0,
                refresh_token_lifetime=0,
                refresh_min_age=0,
                placement=[CredentialPlacement_Bearer()],
                dynamic_registration=False,
                login=None,
                after_connect=[],
                identities=None,
            ),
            endpoints=[Endpoint(name="api", url="https://demo.invalid")],
            hosts=[],
            rate_limits=[],
            rate_limit_headers=None,
            content=ContentRules(
                max_length=MAX_LENGTH,
                counting=CountRule.CHARS,
                max_length_setting=None,
                title_required=False,
                max_title_length=0,
                media_required=False,
                media=[],
                threads=False,
            ),
            settings=[],
            post_fields=[
                PostField(
                    name="visibility",
                    description="Who can see the post",
                    kind=FieldType.CHOICE,  # WIT `%type`
                    required=False,
                    allowed=["public", "unlisted"],
                    default_value="public",
                )
            ],
            idempotent_publish=False,
        )

    def validate(self, post: Post, account: Optional[Account]) -> List[Problem]:
        try:
            n = len(post.text)  # code points = Unicode scalar values (`chars`)
            if n == 0:
                return [Problem(field="text", message="the text is empty")]
            if n > MAX_LENGTH:
                return [Problem(field="text", message=f"the text has {n} characters; at most {MAX_LENGTH}")]
            return []
        except Exception as e:
            return [Problem(field="text", message=f"could not check the post: {describe_error(e)}")]

    def publish(self, ctx: Context, post: Post) -> Receipt:
        try:
            visibility = next((p.value for p in post.extra if p.name == "visibility"), "public")
            body = json.dumps({"text": post.text, "visibility": visibility}).encode("utf-8")
            res = call(
                Request(
                    method=HttpMethod.POST,
                    url=[TextPart_Text(api(ctx) + "/posts")],
                    headers=[Field(name="content-type", value=[TextPart_Text("application/json")])],
                    body=Body_Bytes(body),
                    credential=True,
                    class_="publish",
                    follow_redirects=False,
                )
            )
            try:
                v = json.loads(bytes(res.body).decode("utf-8"))
            except ValueError:
                # The platform said 2xx: the post is probably out, so do not retry.
                raise Err(CallError_OutcomeUnknown(f"HTTP {res.status} without a JSON body"))
            if not isinstance(v, dict) or v.get("id") is None:
                raise Err(CallError_OutcomeUnknown(f"HTTP {res.status} without an id"))
            url = v.get("url")
            return Receipt(
                id=str(v["id"]),
                url=url if isinstance(url, str) else None,
                state=ReceiptState.PUBLISHED,
            )
        except Err:
            raise
        except Exception as e:
            raise Err(CallError_Transient(f"plugin error: {describe_error(e)}"))

    def profile(self, ctx: Context) -> Profile:
        try:
            res = call(
                Request(
                    method=HttpMethod.GET,
                    url=[TextPart_Text(api(ctx) + "/me")],
                    headers=[],
                    body=Body_Empty(),
                    credential=True,
                    class_="profile",
                    follow_redirects=False,
                )
            )
            v = json.loads(bytes(res.body).decode("utf-8"))  # errors become transient
            name, handle = v.get("name"), v.get("handle")
            return Profile(
                id=str(v["id"]),
                name=name if isinstance(name, str) else str(v["id"]),
                handle=handle if isinstance(handle, str) else None,
                picture=None,
                url=None,
            )
        except Err:
            raise
        except Exception as e:
            raise Err(CallError_Transient(f"plugin error: {describe_error(e)}"))

    def find_post(self, ctx: Context, post: Post) -> Optional[Receipt]:
        return None  # this platform cannot tell

    def check_receipt(self, ctx: Context, receipt: Receipt) -> Receipt:
        return receipt

    def list_identities(self, ctx: Context) -> List[Identity]:
        return []  # acts only as the user


def api(ctx: Context) -> str:
    """The effective `api` endpoint (the tests point it at a local fake server)."""
    url = next((e.url for e in ctx.endpoints if e.name == "api"), None)
    if url is None:
        raise Err(CallError_Rejected("no endpoint named api"))
    return url.rstrip("/")


def call(req: Request) -> Response:
    """One request through the host; non-2xx answers and transport failures
    become call-errors."""
    try:
        res = host.send(req)
    except Err as e:
        err = e.value
        msg = f"{type(err).__name__.removeprefix('HttpError_')}: {getattr(err, 'value', '')}"
        if isinstance(err, (HttpError_Denied, HttpError_NotSent)):
            raise Err(CallError_Transient(msg))
        if isinstance(err, HttpError_TooLarge):
            raise Err(CallError_Rejected(msg))
        raise Err(CallError_OutcomeUnknown(msg))  # unknown-outcome, timeout
    s = res.status
    if 200 <= s < 300:
        return res
    detail = f"HTTP {s}: {bytes(res.body)[:200].decode('utf-8', 'replace')}"
    if s == 401:
        raise Err(CallError_NeedsReconnect(detail))
    if s == 429:
        raise Err(CallError_RateLimited(RateLimited(retry_after_seconds=retry_after(res), message=detail)))
    if s >= 500:
        raise Err(CallError_Transient(detail))
    raise Err(CallError_Rejected(detail))  # other 4xx (and 1xx/3xx, not expected)


def retry_after(res: Response) -> Optional[int]:
    """`Retry-After: <seconds>`; the HTTP-date form is not used by this platform."""
    for p in res.headers:
        if p.name.lower() == "retry-after":
            v = p.value.strip()
            return int(v) if v.isascii() and v.isdigit() and len(v) <= 9 else None
    return None


def describe_error(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {e}"
    except Exception:
        return "unknown error"
