"""Runs in the emulator: auth/* and login/* methods (status, login URL, logout, device login)."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from emulator.auth import logged_in_status, logged_out_status
from emulator.connection import INVALID_PARAMS, ClientConnection, MethodError
from emulator.runtime import Method, Runtime, param_str
from emulator.user_cache import fresh_tokens, new_user

log = logging.getLogger("lingma-emulator")


async def auth_status(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    user = rt.user()
    return logged_in_status(user) if user is not None else logged_out_status()


async def auth_login(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """`{url, success}`; optional loginType/regionEnv/... params are accepted and ignored."""
    attempt = rt.login.begin()
    log.info("EMULATOR login started (nonce issued)")
    return {"url": rt.login.login_url(attempt, rt.login_base(), rt.http_port), "success": True}


async def generate_url(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    attempt = rt.login.begin()
    return {
        "loginUrl": rt.login.login_url(attempt, rt.login_base(), rt.http_port),
        "nonce": attempt.nonce,
        "verifier": attempt.verifier,
        "challenge": attempt.challenge,
        "challengeMethod": "S256",
        "success": True,
    }


async def auth_logout(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    rt.workdir.remove_user()
    log.info("EMULATOR logged out: cache/user removed")
    return {"success": True}


async def device_login(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """Inject a login without a browser; keys in camelCase, PascalCase or snake_case."""
    username = param_str(params, "username", "Username", "userName", "name")
    user_id = param_str(params, "userId", "UserID", "userID", "uid")
    if not username and not user_id:
        raise MethodError(INVALID_PARAMS, "username is empty")
    expires_in = params.get("expiresIn", params.get("ExpiresIn", 0))
    expire_time = 0
    if isinstance(expires_in, int) and expires_in > 0:
        expire_time = int(time.time() * 1000) + expires_in * 1000
    user = new_user(
        username or user_id,
        uid=user_id,
        token=param_str(params, "token", "Token", "securityOauthToken"),
        refresh_token=param_str(params, "refreshToken", "RefreshToken"),
        expire_time=expire_time,
    )
    rt.login.complete(user)
    log.info("EMULATOR device login completed")
    return {"success": True}


async def refresh_token(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """Rotate the tokens in `cache/user` and tell this client via `auth/syncTokenUpdate`."""
    user = rt.user()
    if user is None:
        return {
            "success": False,
            "errorCode": "NOT_LOGIN",
            "errorMessage": "no cached user info, please login (lingma-emulator)",
            "uid": "",
            "name": "",
            "tokenExpireTime": 0,
        }
    token, refresh, expiry = fresh_tokens()
    user = msgspec.structs.replace(
        user, security_oauth_token=token, refresh_token=refresh, expire_time=expiry
    )
    rt.workdir.write_user(user)
    sync = {
        "status": 0,
        "token": token,
        "refreshToken": refresh,
        "expireTime": expiry,
        "id": user.uid,
    }
    conn.spawn(conn.push("auth/syncTokenUpdate", sync))
    return {
        "success": True,
        "errorCode": "",
        "errorMessage": "",
        "uid": user.uid,
        "name": user.name,
        "tokenExpireTime": expiry,
    }


METHODS: dict[str, Method] = {
    "auth/status": Method(auth_status),
    "auth/login": Method(auth_login, "definition.LoginParams"),
    "login/generateUrl": Method(generate_url),
    "auth/logout": Method(auth_logout),
    "auth/device_login": Method(device_login, "definition.DeviceLoginParams"),
    "auth/refreshToken": Method(refresh_token, "definition.RefreshTokenParams"),
}
