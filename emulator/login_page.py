"""Runs in the emulator: the HTTP server on --httpPort — login pages and the OAuth callback.

Browser path (lingma-protocol.md §5.1, emulated on one host):
  GET  /lingma/login?nonce=..&port=..&state=2-<nonce>&...  → 302 /login/login.htm?oauth_callback=..
  GET  /login/login.htm     → the form (#fm-login-id, #fm-login-password, #fm-login-submit)
  POST /login/login.htm     → wrong password: the form again with `.login-error`;
                              right: 302 http://127.0.0.1:<port>/auth/callback?state=2-<nonce>&auth=..&token=..
  GET  /auth/callback       → checks and consumes the nonce, writes cache/user, HTML result page.
V1 callbacks (`state=<nonce>&uid=..&name=..`) log in without a browser, for tests.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import parse_qs, urlencode, urlparse

from aiohttp import web

from emulator.auth import decode_callback, encode_callback
from emulator.runtime import Runtime
from emulator.user_cache import UserRecord, new_user

log = logging.getLogger("lingma-emulator.http")

RUNTIME_KEY = web.AppKey("runtime", Runtime)
LOGIN_FORM_PATH = "/login/login.htm"
INVALID_NONCE = "Invalid login nonce or consumed, ignore"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:sans-serif;background:#f5f6f7;margin:0}}
.banner{{background:#ff6a00;color:#fff;padding:12px 24px;font-weight:bold}}
.box{{width:360px;margin:60px auto;background:#fff;padding:28px;border-radius:4px;
box-shadow:0 2px 8px rgba(0,0,0,.1)}}
input{{display:block;width:100%;box-sizing:border-box;margin:8px 0 16px;padding:10px}}
button{{width:100%;padding:10px;background:#ff6a00;color:#fff;border:0;font-size:16px}}
.login-error{{color:#d93026;margin-bottom:12px}}
</style></head>
<body><div class="banner">Alibaba Cloud — lingma-emulator (EMULATOR, not a real Alibaba page)</div>
<div class="box">{body}</div></body></html>
"""

_FORM = """<h2>Sign in</h2>{error}
<form id="login-form" method="post" action="{action}">
<input type="hidden" name="oauth_callback" value="{callback}">
<label for="fm-login-id">Account</label>
<input id="fm-login-id" name="fm-login-id" type="text" autocomplete="username">
<label for="fm-login-password">Password</label>
<input id="fm-login-password" name="fm-login-password" type="password"
 autocomplete="current-password">
<button id="fm-login-submit" type="submit">Sign In</button>
</form>"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(text=text, status=status, content_type="text/html")


def _form(callback: str, error: str = "") -> web.Response:
    error_html = f'<div class="login-error">{html.escape(error)}</div>' if error else ""
    body = _FORM.format(error=error_html, action=LOGIN_FORM_PATH, callback=html.escape(callback))
    return _page("Sign in - Alibaba Cloud (EMULATOR)", body)


def _message(title: str, text: str, status: int = 200) -> web.Response:
    body = f'<h2 id="result-title">{html.escape(title)}</h2><p id="result">{html.escape(text)}</p>'
    return _page(title, body, status)


async def lingma_login(request: web.Request) -> web.StreamResponse:
    """First hop: the Lingma login URL bounces to the account login page."""
    if not request.query.get("state"):
        return _message("Login failed", "missing state", 400)
    target = f"{LOGIN_FORM_PATH}?{urlencode({'oauth_callback': str(request.url)})}"
    raise web.HTTPFound(target)


async def login_form(request: web.Request) -> web.StreamResponse:
    callback = request.query.get("oauth_callback", "")
    if not callback:
        return _message("Login failed", "missing oauth_callback", 400)
    return _form(callback)


async def login_submit(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME_KEY]
    form = await request.post()
    callback = str(form.get("oauth_callback", ""))
    login_id = str(form.get("fm-login-id", "")).strip()
    password = str(form.get("fm-login-password", ""))
    if not callback:
        return _message("Login failed", "missing oauth_callback", 400)
    expected = rt.knobs.users.get(login_id)
    if expected is None or expected != password:
        log.info("EMULATOR login form: rejected credentials")
        return _form(callback, "Incorrect account or password.")
    query = parse_qs(urlparse(callback).query)
    state = query.get("state", [""])[0]
    port = query.get("port", [str(rt.http_port)])[0]
    values = {"state": state, **encode_callback(new_user(login_id))}
    log.info("EMULATOR login form: accepted, redirecting to the runtime callback")
    raise web.HTTPFound(f"http://127.0.0.1:{port}/auth/callback?{urlencode(values)}")


async def auth_callback(request: web.Request) -> web.StreamResponse:
    """V2 (`state=2-<nonce>&auth&token`) or V1 (`state=<nonce>&uid&aid&name`)."""
    rt = request.app[RUNTIME_KEY]
    query = request.query
    state = query.get("state", "")
    nonce = state[2:] if state.startswith("2-") else state
    if not nonce or not rt.login.consume(nonce):
        log.warning("EMULATOR %s", INVALID_NONCE)
        return _message("Login failed", INVALID_NONCE, 400)
    try:
        if state.startswith("2-"):
            user = decode_callback(query.get("auth", ""), query.get("token", ""))
        else:
            user = _v1_user(query.get("uid", ""), query.get("aid", ""), query.get("name", ""))
    except ValueError as exc:
        return _message("Login failed", str(exc), 400)
    rt.login.complete(user)
    log.info("EMULATOR login completed through /auth/callback")
    return _message(
        "Login successful", "You are logged in to Lingma (EMULATOR). You can close this page."
    )


def _v1_user(uid: str, aid: str, name: str) -> UserRecord:
    if not (uid or name):
        raise ValueError("missing uid and name in the V1 callback")
    return new_user(name or uid, uid=uid, aid=aid)


async def profile(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME_KEY]
    user = rt.user()
    who = user.name if user else "not logged in"
    return _message("Profile (EMULATOR)", f"Lingma emulator profile: {who}")


async def index(request: web.Request) -> web.StreamResponse:
    return web.Response(text="lingma-emulator HTTP server (EMULATOR of the Lingma runtime)\n")


def build_http_app(rt: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME_KEY] = rt
    app.router.add_get("/", index)
    app.router.add_get("/lingma/login", lingma_login)
    app.router.add_get(LOGIN_FORM_PATH, login_form)
    app.router.add_post(LOGIN_FORM_PATH, login_submit)
    app.router.add_get("/auth/callback", auth_callback)
    app.router.add_get("/profile", profile)
    return app
